"""Errors raised for bad dataset input. Each message names the input and the fix."""

from ..errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset, manifest or label file is missing or malformed."""


class LabelFormatError(DatasetError):
    """A label file line or field cannot be parsed (message names file and line)."""

    def __init__(self, path, line_no: int | None, problem: str, fix: str = "fix or remove that line"):
        where = f"{path}:{line_no}" if line_no is not None else f"{path}"
        super().__init__(f"{where}: {problem}; {fix}")
        self.path = str(path)
        self.line_no = line_no
