"""udet-rcc end to end on tiny synthetic data: collages read back, boxes inside and of the right classes, ids above
the pool's, summary counts consistent with the manifest, the default rare-class rule, determinism per seed,
explicit target classes with full images, MLflow metrics, and one-line errors. A hand-written split.json stands
in for udet-stac (no training)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.apps.stac_fixture import DATA
from tests.helpers import all_runs, mlflow_client, run_app

STAC_DIR = "outputs/runs/synthetic-tiny-stac/stac"
RCC_DIR = f"{STAC_DIR}/rcc"
POOL = "outputs/data/synthetic/annotations/train.json"


def _write_split(root, percent=50, seed=0):
    from uncertainty_det.data.manifest import Manifest
    from uncertainty_det.ssl.split import split_labeled

    pool = Manifest.read(root / POOL)
    labeled, unlabeled = split_labeled(pool.image_ids, percent, seed=seed)
    path = root / STAC_DIR / "split.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": {"percent": float(percent), "seed": seed, "method": "random"},
                                "labeled": labeled.tolist(), "unlabeled": unlabeled.tolist()}))
    return labeled.tolist()


@pytest.fixture(scope="module")
def rcc(tmp_path_factory):
    root = tmp_path_factory.mktemp("rcc")
    run_app("data", *DATA, cwd=root)
    labeled = _write_split(root)
    run_app("rcc", *DATA, cwd=root)
    return root, labeled


def _copy_data(src, dst):
    shutil.copytree(src / "outputs" / "data", dst / "outputs" / "data")
    (dst / STAC_DIR).mkdir(parents=True)
    shutil.copy(src / STAC_DIR / "split.json", dst / STAC_DIR / "split.json")


def _expected_targets(counts: dict[int, int], threshold: float = 0.5) -> list[int]:
    """The documented rule, computed independently: 1/ln(n) min-max scaled to [0, 1] over the classes with
    n > 1 (n <= 1 -> 1), kept when >= threshold and n >= 1."""
    x = {c: 1 / math.log(n) for c, n in counts.items() if n > 1}
    lo, hi = min(x.values()), max(x.values())
    w = {c: (x[c] - lo) / (hi - lo) if c in x else 1.0 for c in counts}
    return [c for c in sorted(counts) if counts[c] >= 1 and w[c] >= threshold]


def test_collages_read_back_and_are_consistent(rcc):
    from uncertainty_det.data.manifest import Manifest

    root, labeled = rcc
    folder = root / RCC_DIR
    pool = Manifest.read(root / POOL)
    collages = Manifest.read(folder / "collages.json")
    summary = json.loads((folder / "summary.json").read_text())
    assert (folder / "collages.png").is_file()

    counts = {c: 0 for c in pool.category_ids}
    for i in labeled:
        for c in pool.objects(i).class_ids.tolist():
            counts[c] += 1
    targets = _expected_targets(counts)
    assert targets and summary["target_class_ids"] == targets
    assert summary["target_classes"] == [pool.class_names[c - 1] for c in targets]

    # images: only collages, on disk under rcc/images, of the labeled images' size, ids above the pool's
    assert len(collages) == summary["collages"] > 0 and summary["full_images"] == 0
    assert min(collages.image_ids) > max(pool.image_ids) and summary["first_image_id"] == min(collages.image_ids)
    assert min(a["id"] for a in collages.annotations) > max(a["id"] for a in pool.annotations)
    for img in collages.images:
        path = collages.image_path(img["id"])
        assert path.resolve().parent == (folder / "images").resolve()
        assert path.suffix == ".png" and img["rcc"] == "collage"
        with Image.open(path) as im:
            assert im.size == (64, 64) and (img["height"], img["width"]) == (64, 64)

    # boxes inside the collage; classes: a target class or a class of the labeled images that held a target
    with_targets = [i for i in labeled if set(pool.objects(i).class_ids.tolist()) & set(targets)]
    along = {c for i in with_targets for c in pool.objects(i).class_ids.tolist()}
    n_target = 0
    for i in collages.image_ids:
        objs = collages.objects(i)
        assert np.all(objs.boxes >= 0) and np.all(objs.boxes[:, [0, 2]] <= 64) and np.all(objs.boxes[:, [1, 3]] <= 64)
        assert np.all(objs.boxes[:, 2] > objs.boxes[:, 0]) and np.all(objs.boxes[:, 3] > objs.boxes[:, 1])
        assert set(objs.class_ids.tolist()) <= along | set(targets)
        n_target += int(np.isin(objs.class_ids, targets).sum())
    assert n_target > 0
    assert summary["images_with_targets"] == len(with_targets) and summary["skipped_images"] == []
    assert summary["crops"] == sum(counts[c] for c in targets)          # every (64 px) rare box gives a crop

    # summary counts = the manifests' counts
    names = pool.class_names
    assert summary["objects_before"] == {names[c - 1]: n for c, n in counts.items()}
    assert summary["objects_added"] == collages.class_counts()
    assert summary["objects_after"] == {k: summary["objects_before"][k] + summary["objects_added"][k] for k in names}
    assert sum(summary["objects_added"].values()) == collages.num_annotations


def test_merged_with_the_labeled_pool(rcc):
    from uncertainty_det.data.manifest import Manifest
    from uncertainty_det.ssl.labeled_sets import merge_manifests

    root, labeled = rcc
    pool = Manifest.read(root / POOL)
    collages = Manifest.read(root / RCC_DIR / "collages.json")
    merged = merge_manifests(pool.subset(labeled), collages)
    assert merged.image_ids == labeled + collages.image_ids
    assert merged.num_annotations == pool.subset(labeled).num_annotations + collages.num_annotations
    for i in merged.image_ids:
        source = pool if i in set(labeled) else collages
        assert merged.image_path(i).resolve() == source.image_path(i).resolve() and merged.image_path(i).is_file()


def test_mlflow_metrics(rcc):
    root, _ = rcc
    (run,) = all_runs(mlflow_client(root), "rcc")
    summary = json.loads((root / RCC_DIR / "summary.json").read_text())
    m = run.data.metrics
    assert m["rcc/crops"] == summary["crops"] and m["rcc/collages"] == summary["collages"]
    assert m["rcc/objects_added"] == sum(summary["objects_added"].values())
    assert {f"rcc/objects_after/{k}" for k in summary["objects_after"]} <= set(m)
    assert run.data.params["rcc/target_classes"] == ",".join(summary["target_classes"])
    assert run.data.tags["stage"] == "rcc"


def test_deterministic_per_seed(rcc, tmp_path):
    root, _ = rcc
    _copy_data(root, tmp_path)
    run_app("rcc", *DATA, "tracking=none", cwd=tmp_path)
    first, again = root / RCC_DIR, tmp_path / RCC_DIR
    assert (first / "collages.json").read_text() == (again / "collages.json").read_text()
    for path in sorted((first / "images").iterdir()):
        assert path.read_bytes() == (again / "images" / path.name).read_bytes()
    run_app("rcc", *DATA, "tracking=none", "seed=1", cwd=tmp_path)       # replaces rcc/ as a whole
    pixels = lambda folder: {p.name: p.read_bytes() for p in (folder / "images").iterdir()}  # noqa: E731
    assert pixels(again) != pixels(first)


def test_explicit_target_classes_and_full_images(rcc, tmp_path):
    from uncertainty_det.data.manifest import Manifest

    root, labeled = rcc
    _copy_data(root, tmp_path)
    run_app("rcc", *DATA, "tracking=none", "rcc.target_classes=[triangle,star]", "rcc.full_images=true",
            "rcc.augment=true", cwd=tmp_path)
    pool = Manifest.read(tmp_path / POOL)
    summary = json.loads((tmp_path / RCC_DIR / "summary.json").read_text())
    assert summary["target_classes"] == ["triangle", "star"] and summary["target_class_ids"] == [3, 5]
    manifest = Manifest.read(tmp_path / RCC_DIR / "collages.json")
    with_targets = [i for i in labeled if {3, 5} & set(pool.objects(i).class_ids.tolist())]
    full = [img for img in manifest.images if img["rcc"] == "full_image"]
    assert summary["full_images"] == len(full) == len(with_targets)
    assert [img["source_image_id"] for img in full] == with_targets
    for img in full:
        src = pool.objects(img["source_image_id"])
        np.testing.assert_allclose(manifest.objects(img["id"]).boxes, src.boxes)
        assert manifest.image_path(img["id"]).read_bytes() == pool.image_path(img["source_image_id"]).read_bytes()
    collage_ids = [img["id"] for img in manifest.images if img["rcc"] == "collage"]
    assert len(collage_ids) == summary["collages"] > 0
    assert {3, 5} & {c for i in collage_ids for c in manifest.objects(i).class_ids.tolist()}
    assert summary["objects_added"] == manifest.class_counts()


def test_unknown_class_and_missing_split_are_one_line_errors(rcc, tmp_path):
    root, _ = rcc
    _copy_data(root, tmp_path)
    proc = run_app("rcc", *DATA, "tracking=none", "rcc.target_classes=[ring,unicorn]", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unicorn" in proc.stderr and proc.stderr.count("error:") == 1
    assert not (tmp_path / RCC_DIR).exists()
    (tmp_path / STAC_DIR / "split.json").unlink()
    proc = run_app("rcc", *DATA, "tracking=none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    assert "udet-stac run_name=synthetic-tiny-stac" in proc.stderr
