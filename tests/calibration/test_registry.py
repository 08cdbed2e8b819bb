"""Registries, construction by name and the JSON + .npz files (round trip, corrupt files)."""
from __future__ import annotations

import json
from contextlib import nullcontext

import numpy as np
import pytest

from uncertainty_det.calibration._common import CalibrationWarning
from uncertainty_det.calibration.box import BoxIsoPerClsCoo
from uncertainty_det.calibration.classification import MCClassCalibrator, TSAll
from uncertainty_det.calibration.registry import (
    BOX_CALIBRATORS,
    CLASS_CALIBRATORS,
    CalibratorFileError,
    arrays_path,
    load_calibrator,
    make_box_calibrator,
    make_class_calibrator,
    save_calibrator,
)
from uncertainty_det.errors import UserError

from .synthetic import calibrated_logits, gaussian_boxes

Z, Y = calibrated_logits(n=3000, seed=20)
STD = np.abs(np.random.default_rng(21).normal(0.0, 0.5, size=Z.shape))
PRED, GT, SIGMA, _, CLASSES = gaussian_boxes(3000, seed=22)


def test_registries_list_the_design_methods():
    assert list(CLASS_CALIBRATORS) == ["ts_all", "ts_percls", "iso_all", "iso_percls"]
    assert list(BOX_CALIBRATORS) == ["ts_all", "ts_percoo", "iso_all", "iso_percoo", "iso_perclscoo",
                                     "rel_iso_perclscoo"]
    for name, cls in {**CLASS_CALIBRATORS, **BOX_CALIBRATORS}.items():
        assert cls.name == name


@pytest.mark.parametrize("name", list(CLASS_CALIBRATORS))
@pytest.mark.parametrize("mc", [False, True])
def test_class_round_trip_gives_identical_transforms(tmp_path, name, mc):
    cal = make_class_calibrator(name, mc=mc, mc_samples=4, mc_seed=7)
    if mc:
        cal.fit(Z, Y, STD)
    else:
        cal.fit(Z, Y)
    path = save_calibrator(cal, tmp_path / f"class_{name}.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "class" and doc["method"] == ("mc" if mc else name) and doc["version"] == 1
    loaded = load_calibrator(path)
    assert type(loaded) is type(cal)
    if mc:
        assert loaded.get_params() == {"samples": 4, "seed": 7}
        a, b = cal.transform_mc(Z[:200], STD[:200]), loaded.transform_mc(Z[:200], STD[:200])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    else:
        np.testing.assert_array_equal(loaded.transform(Z[:200]), cal.transform(Z[:200]))


@pytest.mark.parametrize("name", list(BOX_CALIBRATORS))
def test_box_round_trip_gives_identical_transforms(tmp_path, name):
    cal = make_box_calibrator(name, target="abs_residual").fit(PRED, GT, SIGMA, CLASSES)
    path = save_calibrator(cal, tmp_path / "box" / f"al_{name}.json")
    loaded = load_calibrator(path)
    assert type(loaded) is type(cal) and loaded.get_params() == cal.get_params()
    test_classes = np.concatenate([CLASSES[:300], [9]])          # incl. a class the fit never saw
    with pytest.warns(CalibrationWarning) if cal.per_class else nullcontext():
        expected = cal.transform(PRED[:301], SIGMA[:301], test_classes)
    with pytest.warns(CalibrationWarning) if cal.per_class else nullcontext():
        got = loaded.transform(PRED[:301], SIGMA[:301], test_classes)
    np.testing.assert_array_equal(got, expected)


def test_scalar_params_live_in_the_json_and_arrays_in_the_npz(tmp_path):
    path = save_calibrator(make_class_calibrator("ts_all").fit(Z, Y), tmp_path / "ts.json")
    doc = json.loads(path.read_text())
    assert isinstance(doc["params"]["temperature"], float) and doc["arrays"] is None
    assert not arrays_path(path).exists()
    path = save_calibrator(make_class_calibrator("iso_percls").fit(Z, Y), tmp_path / "iso.json")
    doc = json.loads(path.read_text())
    assert doc["arrays"] == "iso.npz" and doc["params"]["maps"][0]["x"] == {"__array__": "params.maps.0.x"}
    with np.load(arrays_path(path), allow_pickle=False) as z:
        assert "params.maps.3.y" in z.files


def test_unknown_method_or_option_is_a_user_error():
    with pytest.raises(UserError, match="ts_all, ts_percls, iso_all, iso_percls"):
        make_class_calibrator("platt")
    with pytest.raises(UserError, match="rel_iso_perclscoo"):
        make_box_calibrator("iso_percls")
    with pytest.raises(UserError, match="no option 'min_samples'; valid options: target, min_sigma$"):
        make_box_calibrator("iso_all", min_samples=3)
    with pytest.raises(UserError, match=r"no option 'lr'; valid options: \(none\)"):
        make_class_calibrator("ts_all", lr=0.1)
    cal = make_box_calibrator("iso_perclscoo", min_samples=3, target="sigma")
    assert isinstance(cal, BoxIsoPerClsCoo) and cal.min_samples == 3
    assert isinstance(make_class_calibrator("ts_all", mc=True), MCClassCalibrator)


def _saved(tmp_path):
    return save_calibrator(make_class_calibrator("iso_all").fit(Z, Y), tmp_path / "cal.json")


def test_missing_and_corrupt_files_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(CalibratorFileError, match="does not exist"):
        load_calibrator(tmp_path / "nope.json")
    path = _saved(tmp_path)
    path.write_text("{not json")
    with pytest.raises(CalibratorFileError, match=r"cal\.json.*not valid JSON.*re-run the calibrate stage"):
        load_calibrator(path)
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CalibratorFileError, match="not an uncertainty_det calibrator"):
        load_calibrator(path)


def test_version_method_and_array_problems_are_user_errors(tmp_path):
    path = _saved(tmp_path)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(CalibratorFileError, match="format version 99"):
        load_calibrator(path)
    path.write_text(json.dumps({**doc, "method": "platt"}))
    with pytest.raises(CalibratorFileError, match="unknown class calibration method 'platt'"):
        load_calibrator(path)
    path.write_text(json.dumps({**doc, "params": {"n_classes": 4}}))
    with pytest.raises(CalibratorFileError, match="incomplete or corrupt"):
        load_calibrator(path)
    path.write_text(json.dumps(doc))
    npz = arrays_path(path)
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(CalibratorFileError, match="does not match"):
        load_calibrator(path)
    npz.unlink()
    with pytest.raises(CalibratorFileError, match="cannot be read"):
        load_calibrator(path)


def test_saving_replaces_atomically(tmp_path):
    path = save_calibrator(TSAll().fit(Z, Y), tmp_path / "cal.json")
    save_calibrator(make_class_calibrator("ts_percls").fit(Z, Y), path)
    assert load_calibrator(path).name == "ts_percls"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "cal.npz"]
