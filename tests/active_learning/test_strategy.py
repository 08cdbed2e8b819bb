"""Strategy typed config and the reference's stacked names."""
from __future__ import annotations

import pytest

from uncertainty_det.active_learning import Strategy, StrategyError, parse_strategy_name, strategy_from_config

# every strategy name the reference and its README use, with the fields it means
EXAMPLES = {
    "random": dict(score="random"),
    "entropy": dict(score="entropy"),
    "mcbox": dict(score="mcbox"),
    "albox": dict(score="albox"),                        # the reference scored this by confidence (D10)
    "mcclass": dict(score="mcclass"),
    "calib_entropy": dict(score="entropy", calibrated=True),
    "box_albox": dict(score="albox"),
    "mean_entropy": dict(score="entropy", aggregate="mean"),
    "prune_entropy": dict(score="entropy", prune="hash"),
    "full_prune_entropy": dict(score="entropy", prune="full"),
    "rand_prune_entropy": dict(score="entropy", prune="random"),
    "nee_combo": dict(score="combo", select="nee"),
    "perc_calib_norm_box_albox": dict(score="albox", class_balance="perc", calibrated=True, relative=True),
    "bottomk_entropy": dict(score="entropy", select="bottomk"),
    "lossatt_entropy": dict(score="entropy", training="lossatt"),
    "baseline_random": dict(score="random", training="baseline"),
    "ental": dict(score="ental", relative=True),
    "calib_ental": dict(score="ental", calibrated=True, relative=True),
    "alluncert": dict(score="alluncert", relative=True),
    "epuncert": dict(score="epuncert", relative=True),
    "sota": dict(score="sota", relative=True),
    "highep_lowal_alluncert": dict(score="highep_lowal", relative=True),
    "highep_lowal_sota": dict(score="highep_lowal", relative=True),
    "perc_mean_calib_box_mcbox": dict(score="mcbox", class_balance="perc", aggregate="mean", calibrated=True),
    "combo": dict(score="combo"),
    "pseudoscore": dict(score="pseudoscore"),            # any table column
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_legacy_names_parse_into_fields(name):
    expected = Strategy(name=name, **EXAMPLES[name])
    assert parse_strategy_name(name) == expected


@pytest.mark.parametrize("name, message", [
    ("entropy_mean", "last token 'mean' is a modifier"),
    ("fancy_entropy", "unknown token 'fancy'"),
    ("full_entropy", "'full' needs 'prune'"),
    ("norm_entropy", "'norm' relativises box"),
    ("box_entropy", "'box' marks a box uncertainty"),
    ("perc_random", "class_balance=perc needs predictions"),
    ("", "empty strategy name"),
])
def test_bad_legacy_names(name, message):
    with pytest.raises(StrategyError, match=message):
        parse_strategy_name(name)


def test_config_with_fields_and_legacy_names():
    s = strategy_from_config({"name": "my", "score": "albox", "relative": True, "select": "nee"})
    assert s == Strategy(name="my", score="albox", relative=True, select="nee")
    s = strategy_from_config({"name": "perc_calib_norm_box_albox", "score": None, "empty": "highest"})
    assert s == Strategy(name="perc_calib_norm_box_albox", score="albox", class_balance="perc", calibrated=True,
                         relative=True, empty="highest")
    with pytest.raises(StrategyError, match="unknown token 'my'"):
        strategy_from_config({"name": "my_strategy"})                     # no score: the name must parse
    with pytest.raises(StrategyError, match="unknown key"):
        strategy_from_config({"score": "entropy", "agregate": "max"})
    with pytest.raises(StrategyError, match="aggregate='median' is not one of"):
        strategy_from_config({"score": "entropy", "aggregate": "median"})
    with pytest.raises(StrategyError, match="prune_threshold"):
        Strategy(prune_threshold=1.5)


def test_every_strategy_config_file_builds(tmp_path):
    from pathlib import Path

    from omegaconf import OmegaConf

    files = sorted((Path(__file__).resolve().parents[2] / "conf" / "strategy").glob("*.yaml"))
    assert {f.stem for f in files} >= {"random", "entropy", "mcbox", "albox", "mcclass", "combo", "ental",
                                       "alluncert", "epuncert", "highep_lowal", "sota"}
    for f in files:
        s = strategy_from_config(OmegaConf.to_container(OmegaConf.load(f), resolve=True))
        assert s.name == f.stem, f


def test_needs():
    assert not parse_strategy_name("random").needs_predictions
    assert parse_strategy_name("calib_entropy").needs_calibration
    assert parse_strategy_name("nee_combo").needs_thresholds and not parse_strategy_name("entropy").needs_thresholds
