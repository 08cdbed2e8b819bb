"""Detections table: construction from padded outputs, Parquet round trip, schema validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uncertainty_det.tables import (
    BASE_COLUMNS,
    METADATA_KEY,
    DetectionsTableError,
    box_array,
    detections_to_frame,
    entropy_bits,
    list_column,
    mean_relative_sigma,
    read_detections,
    relative_sigma,
    sigma_array,
    softmax,
    write_detections,
)

C = 3
CLASS_NAMES = ["circle", "square", "triangle"]


def _outputs(seed: int = 0, with_cov: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    b, d = 2, 4
    y = rng.uniform(0, 50, size=(b, d, 2))
    boxes = np.concatenate([y, y + rng.uniform(5, 20, size=(b, d, 2))], axis=-1).astype(np.float32)
    out = {
        "boxes": boxes,
        "scores": np.sort(rng.uniform(0, 1, size=(b, d)), axis=1)[:, ::-1].astype(np.float32),
        "classes": rng.integers(1, C + 1, size=(b, d)).astype(np.int32),
        "logits": rng.normal(size=(b, d, C)).astype(np.float32),
        "al_std": rng.uniform(0.1, 2, size=(b, d, 4)).astype(np.float32),
        "ep_std": rng.uniform(0.1, 2, size=(b, d, 4)).astype(np.float32),
        "ep_logit_std": rng.uniform(0, 1, size=(b, d, C)).astype(np.float32),
        "num_detections": np.array([3, 1], np.int32),
    }
    if with_cov:
        out["al_cov"] = rng.uniform(0, 1, size=(b, d, 4, 4)).astype(np.float32)
    return out


def test_frame_columns_follow_the_design():
    out = _outputs()
    df = detections_to_frame(out, [11, 12], ["a.png", "b.png"], CLASS_NAMES, has_aleatoric=True, has_epistemic=True)
    assert list(df.columns) == [
        "image_id", "file_name", "det", "class_id", "score", "ymin", "xmin", "ymax", "xmax", "logits", "probs",
        "entropy", "al_ymin", "al_xmin", "al_ymax", "al_xmax", "al_cov", "ep_ymin", "ep_xmin", "ep_ymax", "ep_xmax",
        "ep_logit_std", "ep_cls"]
    assert len(df) == 4
    assert df["image_id"].tolist() == [11, 11, 11, 12] and df["det"].tolist() == [0, 1, 2, 0]
    assert df["file_name"].tolist() == ["a.png"] * 3 + ["b.png"]
    bi, di = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0])
    np.testing.assert_allclose(box_array(df), out["boxes"][bi, di], rtol=1e-6)
    np.testing.assert_allclose(sigma_array(df, "al"), out["al_std"][bi, di], rtol=1e-6)
    np.testing.assert_allclose(sigma_array(df, "ep"), out["ep_std"][bi, di], rtol=1e-6)
    assert df["class_id"].tolist() == out["classes"][bi, di].tolist()
    assert isinstance(df["logits"].iloc[0], list) and len(df["probs"].iloc[0]) == C
    probs = list_column(df, "probs")
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(probs, softmax(out["logits"][bi, di]), rtol=1e-12)
    ls = out["ep_logit_std"][bi, di]
    np.testing.assert_allclose(df["ep_cls"], ls[np.arange(4), out["classes"][bi, di] - 1], rtol=1e-6)
    np.testing.assert_allclose(list_column(df, "al_cov"), out["al_cov"][bi, di].reshape(4, 16), rtol=1e-6)

    plain = detections_to_frame(out, [11, 12], ["a.png", "b.png"], CLASS_NAMES, has_aleatoric=False, has_epistemic=False)
    assert list(plain.columns) == list(BASE_COLUMNS)
    with pytest.raises(DetectionsTableError, match="2 class logits|3 class logits"):
        detections_to_frame(out, [11, 12], ["a", "b"], ["x", "y"], False, False)


def test_entropy_is_log2_c_for_uniform_logits_and_zero_when_certain():
    out = _outputs(with_cov=False)
    out["logits"][0, 0] = 5.0
    out["logits"][0, 1] = [1000.0, -1000.0, -1000.0]
    df = detections_to_frame(out, [1, 2], None, None, has_aleatoric=False, has_epistemic=False)
    assert df["entropy"].iloc[0] == pytest.approx(np.log2(C), rel=1e-12)
    assert df["entropy"].iloc[1] == pytest.approx(0.0, abs=1e-5)
    assert np.all(np.isfinite(list_column(df, "probs")))
    p = np.array([0.5, 0.5, 0.0])
    assert entropy_bits(p) == pytest.approx(1.0)


def test_round_trip_keeps_values_and_metadata(tmp_path):
    df = detections_to_frame(_outputs(), [11, 12], ["a.png", "b.png"], CLASS_NAMES, True, True)
    df["probs_cal"] = df["probs"]                      # calibrated variants are kept like any column
    df["entropy_cal"] = df["entropy"] * 0.5
    meta = {"run_name": "syn-tiny-lossatt", "dataset": "synthetic", "decoding": "lognormal", "mc_samples": 10,
            "calibration": ["ts_all", "iso_percoo"], "extra": np.int64(3)}
    path = write_detections(df, tmp_path / "sub" / "detections.parquet", meta)
    assert path.is_file() and not list(path.parent.glob(".*"))       # atomic: no temp files left
    back, meta_back = read_detections(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["image_id"].dtype == np.int64 and back["score"].dtype == np.float64
    assert isinstance(back["logits"].iloc[0], list)
    assert meta_back["schema_version"] == 1
    for key in ("run_name", "dataset", "decoding", "mc_samples", "calibration"):
        assert meta_back[key] == meta[key]
    assert meta_back["extra"] == 3
    # metadata defaults and an empty table round trip with the schema
    empty = detections_to_frame({**_outputs(), "num_detections": np.zeros(2, np.int32)}, [1, 2], None, None, True, True)
    assert len(empty) == 0 and "al_cov" in empty.columns and "ep_cls" in empty.columns
    write_detections(empty, tmp_path / "empty.parquet", {})
    back, meta_back = read_detections(tmp_path / "empty.parquet")
    assert len(back) == 0 and list(back.columns) == list(empty.columns)
    assert meta_back["run_name"] is None and meta_back["calibration"] == []


def test_missing_column_error_names_file_and_column(tmp_path):
    df = detections_to_frame(_outputs(), [11, 12], ["a.png", "b.png"], CLASS_NAMES, True, True)
    with pytest.raises(DetectionsTableError, match="missing column 'entropy'"):
        write_detections(df.drop(columns=["entropy"]), tmp_path / "x.parquet", {})
    # a file written by someone else without a required column
    path = tmp_path / "broken.parquet"
    table = pa.Table.from_pandas(df.drop(columns=["ep_cls"]), preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: b'{"schema_version": 1}'})
    pq.write_table(table, path)
    with pytest.raises(DetectionsTableError, match=r"broken\.parquet.*missing column 'ep_cls'"):
        read_detections(path)
    pq.write_table(pa.Table.from_pandas(df.drop(columns=["ep_cls"])), tmp_path / "foreign.parquet")
    with pytest.raises(DetectionsTableError, match="foreign.parquet has no uncertainty_det metadata"):
        read_detections(tmp_path / "foreign.parquet")
    with pytest.raises(DetectionsTableError, match="does not exist"):
        read_detections(tmp_path / "nope.parquet")


def test_relative_sigma_uses_each_detections_own_box():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 45, 15]], np.float64)
    sigma = np.array([[1, 2, 3, 4], [4, 4, 4, 4]], np.float64)
    rel = relative_sigma(boxes, sigma)
    np.testing.assert_allclose(rel, [[0.1, 0.1, 0.3, 0.2], [0.1, 0.4, 0.1, 0.4]])
    np.testing.assert_allclose(mean_relative_sigma(boxes, sigma), [0.175, 0.25])
    assert np.isfinite(relative_sigma(np.zeros((1, 4)), np.ones((1, 4)))).all()


def test_list_column_lists_arrays_and_ragged_rows():
    import numpy as np
    import pandas as pd
    import pytest

    from uncertainty_det.tables import DetectionsTableError, list_column

    lists = pd.DataFrame({"p": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]})
    arrays = pd.DataFrame({"p": [np.array([0.1, 0.2]), np.array([0.3, 0.4]), np.array([0.5, 0.6])]})
    expected = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    np.testing.assert_array_equal(list_column(lists, "p"), expected)
    np.testing.assert_array_equal(list_column(arrays, "p"), expected)
    for ragged in ([[0.1, 0.2], [0.3], [0.5, 0.6, 0.7]], [[0.1, 0.2], [0.3, 0.4, 0.5]]):
        with pytest.raises(DetectionsTableError, match="different lengths"):
            list_column(pd.DataFrame({"p": ragged}), "p")
