"""Active-learning strategies as typed config (DESIGN §10) and the reference's stacked names (reference §3.3).

A :class:`Strategy` says how the unlabeled pool is scored and selected:

=================  ============================================================================================
``score``          ``random`` | ``entropy`` | ``mcbox`` | ``albox`` | ``mcclass`` (single uncertainties) |
                   ``combo`` | ``ental`` | ``alluncert`` | ``epuncert`` | ``highep_lowal`` | ``sota``
                   (combinations) | any numeric or list column of the Detections table
``aggregate``      per-image aggregation over its detections: ``max`` | ``mean``
``select``         ``topk`` | ``bottomk`` | ``nee`` (binned exploration/exploitation)
``class_balance``  ``off`` | ``perc`` (inverse predicted-class frequency weight)
``calibrated``     use the ``_cal`` columns (needs the round's calibrators)
``relative``       box σ as ``mean_4(σ / [h, w, h, w])`` of the predicted box instead of the mean pixel σ
``prune``          ``off`` | ``hash`` (perceptual-hash de-duplication, budget rescaled) | ``random`` | ``full``
                   (prune, then train once on the whole kept pool)
``hash``           ``phash`` | ``whash``; ``prune_threshold``: share of the largest Hamming distance
``training``       ``baseline`` | ``lossatt`` | ``mcdropout_lossatt`` (the detector of every round)
``empty``          score of images without a detection above the score floor: ``lowest`` | ``highest``
=================  ============================================================================================

Legacy names (``perc_calib_norm_box_albox``, ``nee_combo``, ``mean_entropy``, ``prune_entropy``, ...) are
parsed token by token by :func:`parse_strategy_name`. The reference's silent fall-backs are fixed: an
unknown token is an error; a bare ``albox``/``mcbox`` (which the reference looked up without its prefix,
missed, and scored by confidence, D10) means the box σ it names; ``highep_lowal`` without
``alluncert``/``sota`` (which the reference needed to build its three lists) means the combination itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from ..errors import UserError

SINGLE_SCORES = ("random", "entropy", "mcbox", "albox", "mcclass")
COMBINATIONS = ("combo", "ental", "alluncert", "epuncert", "highep_lowal", "sota")
BOX_SCORES = ("albox", "mcbox")
AGGREGATES = ("max", "mean")
SELECTIONS = ("topk", "bottomk", "nee")
CLASS_BALANCE = ("off", "perc")
PRUNE_MODES = ("off", "hash", "random", "full")
HASHES = ("phash", "whash")
TRAININGS = ("baseline", "lossatt", "mcdropout_lossatt")
EMPTY = ("lowest", "highest")
#: The reference's default strategy tokens that only modify (everything but the final score key).
MODIFIER_TOKENS = ("random", "baseline", "lossatt", "calib", "box", "norm", "mean", "bottomk", "nee", "perc",
                   "prune", "full", "rand", "class")


class StrategyError(UserError, ValueError):
    """A strategy config or legacy name that cannot be used; the message names the value and the choices."""


@dataclass(frozen=True)
class Strategy:
    """One active-learning strategy (module docstring). Build with :func:`strategy_from_config`."""

    name: str = "entropy"
    score: str = "entropy"
    aggregate: str = "max"
    select: str = "topk"
    class_balance: str = "off"
    calibrated: bool = False
    relative: bool = False
    prune: str = "off"
    hash: str = "phash"
    prune_threshold: float = 0.1
    training: str = "mcdropout_lossatt"
    empty: str = "lowest"

    def __post_init__(self) -> None:
        for field_name, choices in (("aggregate", AGGREGATES), ("select", SELECTIONS),
                                    ("class_balance", CLASS_BALANCE), ("prune", PRUNE_MODES), ("hash", HASHES),
                                    ("training", TRAININGS), ("empty", EMPTY)):
            value = getattr(self, field_name)
            if value not in choices:
                raise StrategyError(f"strategy {self.name!r}: {field_name}={value!r} is not one of {list(choices)}")
        if not str(self.score) or not str(self.score).replace("_", "").isalnum():
            raise StrategyError(f"strategy {self.name!r}: score={self.score!r} is not a score name or column")
        if not 0.0 <= float(self.prune_threshold) < 1.0:
            raise StrategyError(f"strategy {self.name!r}: prune_threshold={self.prune_threshold!r} must be in [0, 1)")
        if self.score == "random" and self.class_balance == "perc":
            raise StrategyError(f"strategy {self.name!r}: class_balance=perc needs predictions; score=random has none")

    @property
    def needs_predictions(self) -> bool:
        """Whether a round must predict the unlabeled pool (everything but random selection)."""
        return self.score != "random"

    @property
    def needs_calibration(self) -> bool:
        return bool(self.calibrated) and self.needs_predictions

    @property
    def needs_thresholds(self) -> bool:
        """``combo`` weights its uncertainties with the previous round's fitted threshold model."""
        return self.score == "combo"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strategy_from_config(cfg: Mapping[str, Any]) -> Strategy:
    """A :class:`Strategy` from a config mapping (``conf/strategy/<name>.yaml``).

    Without an explicit ``score``, ``name`` is a stacked name parsed by :func:`parse_strategy_name`
    (``strategy.name=perc_calib_norm_box_albox``) and the other non-null fields override the parsed ones;
    with ``score`` given, the non-null fields are the strategy and ``name`` is only its label. Unknown
    keys raise :class:`StrategyError` naming them.
    """
    cfg = dict(cfg)
    known = {f.name for f in fields(Strategy)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise StrategyError(f"strategy config has unknown key(s) {unknown}; the fields are {sorted(known)}")
    name = str(cfg.get("name") or cfg.get("score") or "")
    explicit = {k: v for k, v in cfg.items() if v is not None and k != "name"}
    if "score" not in explicit:
        return replace(parse_strategy_name(name), **explicit)
    return Strategy(name=name, **explicit)


def parse_strategy_name(name: str) -> Strategy:
    """Parse the reference's stacked strategy name (reference §3.3) into a :class:`Strategy`.

    Tokens are ``_``-separated; the last token is the score key (a single uncertainty, a combination or a
    table column) unless the name is a combination token alone. ``full_prune`` / ``prune`` / ``rand`` select
    the pruning mode, ``calib``, ``norm``, ``mean``, ``bottomk``, ``nee``, ``perc``, ``baseline``,
    ``lossatt`` the other fields; ``box`` and ``class`` only mark the key's kind (accepted, checked; the
    box scores need no ``box`` token here).
    """
    name = str(name).strip()
    tokens = [t for t in name.split("_") if t]
    if not tokens:
        raise StrategyError("empty strategy name; e.g. entropy, mean_entropy, perc_calib_norm_box_albox, nee_combo")
    # multi-token combination names first: highep_lowal
    joined: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "highep" and i + 1 < len(tokens) and tokens[i + 1] == "lowal":
            joined.append("highep_lowal")
            i += 2
        else:
            joined.append(tokens[i])
            i += 1
    tokens = joined
    fields_: dict[str, Any] = {"name": name}
    combos = [t for t in tokens if t in COMBINATIONS]
    if "random" in tokens:
        score = "random"
        rest = [t for t in tokens if t != "random"]
    elif combos:
        # the reference's highep_lowal only worked next to alluncert/sota (which built its 3 lists); the
        # combination itself is what it meant
        score = "highep_lowal" if "highep_lowal" in combos else combos[-1]
        rest = [t for t in tokens if t not in COMBINATIONS]
    else:
        score = tokens[-1]
        rest = tokens[:-1]
        if score in MODIFIER_TOKENS:
            raise StrategyError(f"strategy {name!r}: the last token {score!r} is a modifier; the score key must come "
                                f"last (e.g. mean_entropy, perc_calib_norm_box_albox)")
    fields_["score"] = score
    is_box = score in BOX_SCORES
    for token in rest:
        if token == "calib":
            fields_["calibrated"] = True
        elif token == "norm":
            fields_["relative"] = True
        elif token == "mean":
            fields_["aggregate"] = "mean"
        elif token == "bottomk":
            fields_["select"] = "bottomk"
        elif token == "nee":
            fields_["select"] = "nee"
        elif token == "perc":
            fields_["class_balance"] = "perc"
        elif token in ("baseline", "lossatt"):
            fields_["training"] = token
        elif token == "prune":
            fields_.setdefault("prune", "hash")
        elif token == "full":
            fields_["prune"] = "full"
        elif token == "rand":
            fields_["prune"] = "random"
        elif token == "box":
            if not is_box and score not in COMBINATIONS:
                raise StrategyError(f"strategy {name!r}: 'box' marks a box uncertainty but the score is {score!r}")
        elif token == "class":
            pass
        else:
            raise StrategyError(f"strategy {name!r}: unknown token {token!r}; modifiers are {list(MODIFIER_TOKENS)}, "
                                f"scores {list(SINGLE_SCORES + COMBINATIONS)} or a Detections-table column (last)")
    if "full" in rest and "prune" not in rest:
        raise StrategyError(f"strategy {name!r}: 'full' needs 'prune' (full_prune_<score>)")
    if "rand" in rest and "prune" not in rest:
        raise StrategyError(f"strategy {name!r}: 'rand' needs 'prune' (rand_prune_<score>)")
    if "norm" in rest and not (is_box or score in COMBINATIONS):
        raise StrategyError(f"strategy {name!r}: 'norm' relativises box σ but the score is {score!r}")
    if score in ("ental", "alluncert", "epuncert", "highep_lowal", "sota"):
        fields_["relative"] = True                      # their box components are always relative (reference §3.4.2)
    return Strategy(**fields_)
