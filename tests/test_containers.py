from omegaconf import OmegaConf

from uncertainty_det.containers import to_plain


def test_to_plain_converts_nested_containers():
    cfg = OmegaConf.create({"a": {"b": [1, (2, 3)]}, "s": "text", 1: None})
    out = to_plain(cfg)
    assert out == {"a": {"b": [1, [2, 3]]}, "s": "text", "1": None}
    assert type(out["a"]) is dict and type(out["a"]["b"]) is list
