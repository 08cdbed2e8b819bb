"""Every primary config composes with every option of every group it uses, and every config file resolves.

A broken YAML, a wrong interpolation or a missing default fails here.
"""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "common")
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _groups_of(primary):
    defaults = OmegaConf.load(CONF / f"{primary}.yaml").get("defaults", [])
    groups = []
    for entry in defaults:
        if isinstance(entry, str):
            continue
        for key in entry:
            key = str(key).split("@")[0].replace("override ", "").strip()
            if key in GROUPS:
                groups.append(key)
    return groups


def _compose(primary, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=primary, overrides=overrides, return_hydra_config=True)
    # resolve everything except the Hydra runtime-only values
    task = OmegaConf.to_container(cfg, resolve=False)
    hydra_node = task.pop("hydra")
    resolved = OmegaConf.to_container(OmegaConf.create(task), resolve=True, throw_on_missing=False)
    assert hydra_node["run"]["dir"].startswith("${paths.root}/hydra/")
    return resolved


CASES = [(p, g, o) for p in PRIMARY for g in _groups_of(p) for o in _options(g)]


def test_there_are_primary_configs_and_groups():
    assert "data" in PRIMARY
    assert {"dataset", "model", "uncertainty", "tracking", "paths", "trainer"} <= set(GROUPS)


@pytest.mark.parametrize("primary,group,option", CASES, ids=[f"{p}-{g}={o}" for p, g, o in CASES])
def test_primary_composes_with_option(primary, group, option):
    cfg = _compose(primary, [f"{group}={option}"])
    assert cfg["stage"] == primary
    assert group in cfg


def test_every_group_option_is_composed_by_some_stage():
    # a config file no stage composes would never be checked by the cases above
    used = {g for p in PRIMARY for g in _groups_of(p)}
    assert set(GROUPS) <= used, f"groups used by no stage: {sorted(set(GROUPS) - used)}"


def test_unknown_option_lists_available():
    from hydra.errors import MissingConfigException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(MissingConfigException) as info:
            compose(config_name="data", overrides=["dataset=nope"])
    assert "synthetic" in str(info.value)
