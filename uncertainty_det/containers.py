"""Turning config containers (OmegaConf or plain) into plain Python values, without importing OmegaConf."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def to_plain(value: Any) -> Any:
    """Mappings -> dicts (string keys) and non-string sequences -> lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [to_plain(v) for v in value]
    return value
