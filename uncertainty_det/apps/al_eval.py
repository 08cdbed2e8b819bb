"""``udet-al-eval``: active-learning evaluation by set similarity (reference §4) on the rounds of ``udet-al-loop``.

Two analyses of the strategies under ``<runs>/<run_name>/al/`` at one round ``k`` (``al_eval.round``):

* ``performance``: does the similarity of each strategy's training set (the images labeled in rounds ``0..k``)
  to a reference set rank the strategies like the mAP of their round-``k`` models (from ``state.json``)?
  Per-class crop features (:func:`~uncertainty_det.al_eval.manifest_features`) of every set, the combined
  dissimilarity ``m`` and similarity (:func:`~uncertainty_det.al_eval.set_similarity`), Kendall tau / Pearson r
  overall and per class. The reference is the loop's eval split, the whole pool, or a split of another
  dataset of the catalog (``al_eval.reference_dataset``, classes matched by name).
* ``reliability``: random subsets of the eval split (:func:`~uncertainty_det.al_eval.random_subsets`); every
  round-``k`` model is evaluated (COCO AP) on each subset, the full eval split and the reference split; the
  Kendall tau of each subset's model ranking against the reference's, against the subset's similarity to
  the reference (:func:`~uncertainty_det.al_eval.reliability`).

Crop features are computed once per image and gathered per set (sets overlap: every strategy shares the
round-0 warm-up, every subset is a part of the eval split). Results go to
``<runs>/<run_name>/al_eval/<mode>_round<k>[-<reference>]/`` (replaced atomically) and MLflow.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from ..errors import UserError
from ..al_eval.features import gather, image_features
from .common import CONFIG_DIR, plain_config, stage_run

log = logging.getLogger("uncertainty_det.al_eval")

MODES = ("performance", "reliability")
REFERENCES = ("eval", "pool")


# ============================================================================================ helpers
def loop_command(plain: dict, strategy: str | None, rounds: int) -> str:
    """The ``udet-al-loop`` command that runs ``strategy`` (or a few strategies) up to ``rounds`` rounds."""
    parts = ["udet-al-loop"]
    if strategy is None:
        parts.append("-m strategy=random,entropy")
    elif (Path(CONFIG_DIR) / "strategy" / f"{strategy}.yaml").is_file():
        parts.append(f"strategy={strategy}")
    else:
        parts.append(f"strategy.name={strategy}")
    parts.append(f"al.rounds={rounds}")
    if plain["run_name"] != f"{plain['dataset']['name']}-{plain['model']['name']}-al":
        parts.append(f"run_name={plain['run_name']}")
    return " ".join(parts)


def find_strategies(plain: dict, al_root: Path, wanted, k: int) -> list[str]:
    """The strategy folders to compare: ``wanted`` (each must have a ``state.json``), else every folder of
    ``al_root`` with one whose name does not start with ``_``; at least 2."""
    wanted = [str(s) for s in (wanted or [])]
    if wanted:
        names = list(dict.fromkeys(wanted))
        for name in names:
            if not (al_root / name / "state.json").is_file():
                raise UserError(f"no active-learning state of strategy {name} at {al_root / name / 'state.json'}; "
                                f"run the loop first: {loop_command(plain, name, k + 1)}")
    else:
        names = sorted(p.name for p in al_root.iterdir() if p.is_dir() and not p.name.startswith("_")
                       and (p / "state.json").is_file()) if al_root.is_dir() else []
    if not names:
        raise UserError(f"no active-learning strategy with a state.json under {al_root}; run the loop for at least 2 "
                        f"strategies first: {loop_command(plain, None, k + 1)}")
    if len(names) < 2:
        other = "random" if names[0] != "random" else "entropy"
        raise UserError(f"only 1 strategy to compare ({names[0]} under {al_root}); the rank agreement needs at least "
                        f"2: run another one, e.g. {loop_command(plain, other, k + 1)}")
    return names


def load_rounds(plain: dict, al_root: Path, names: list[str], k: int) -> dict:
    """``{strategy: LoopState}`` of loops that finished round ``k`` (else a :class:`UserError` naming the command)."""
    from ..active_learning.state import load_state

    states = {}
    for name in names:
        state = load_state(al_root / name / "state.json")
        if k >= len(state.sizes):
            raise UserError(f"al_eval.round={k} but the loop of strategy {name} has only {len(state.sizes)} rounds "
                            f"(0..{len(state.sizes) - 1}); choose al_eval.round < {len(state.sizes)}")
        if len(state.rounds) <= k:
            raise UserError(f"strategy {name} has not finished round {k} yet ({len(state.rounds)} round(s) done); "
                            f"run it first: {loop_command(plain, name, k + 1)}")
        states[name] = state
    seeds = {s.seed for s in states.values()}
    if len(seeds) > 1:
        log.warning("the strategies' loops have different seeds %s", sorted(seeds))
    return states


def in_class_space(manifest, class_names: list[str]):
    """``manifest`` with its categories renumbered to ``class_names`` (id = position + 1), matched by name;
    annotations of classes ``class_names`` lacks are dropped. The manifest itself when the classes match."""
    from ..data.manifest import Manifest, categories_from_names

    if manifest.class_names == list(class_names):
        return manifest
    new_id = {n: i + 1 for i, n in enumerate(class_names)}
    old_to_new = {int(c["id"]): new_id[c["name"]] for c in manifest.categories if c["name"] in new_id}
    anns = [dict(a, category_id=old_to_new[int(a["category_id"])]) for a in manifest.annotations
            if int(a["category_id"]) in old_to_new]
    return Manifest(list(manifest.images), anns, categories_from_names(class_names), image_root=manifest.image_root,
                    source=f"{manifest.source}[in the classes {list(class_names)}]", info=manifest.info)


def reference_dataset_config(plain: dict) -> dict:
    """The resolved ``dataset`` config of ``al_eval.reference_dataset``: ``conf/dataset/<name>.yaml`` composed
    with Hydra (so its ``defaults``, e.g. ``synthetic_fog`` on top of ``synthetic``, apply) plus
    ``al_eval.reference_dataset_overrides``, with ``paths`` taken from the current run (``dataset.root``
    interpolates ``${paths.data_dir}``). The current dataset itself (with the command's overrides) when the
    names are equal."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    cfg = plain["al_eval"]
    name = str(cfg["reference_dataset"])
    extra = [str(o) for o in (cfg.get("reference_dataset_overrides") or [])]
    if name == plain["dataset"]["name"] and not extra:
        return plain["dataset"]
    overrides = [f"+dataset={name}", *extra]
    try:
        if GlobalHydra.instance().is_initialized():
            composed = compose(overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
                composed = compose(overrides=overrides)
        with open_dict(composed):
            composed.paths = OmegaConf.create(plain["paths"])
        return OmegaConf.to_container(composed.dataset, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        from ..data.catalog import available_datasets

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"al_eval.reference_dataset={name} (overrides {extra}) does not compose: {first}; the "
                        f"datasets are {available_datasets(CONFIG_DIR)}") from exc


@dataclasses.dataclass
class Reference:
    """The reference set: its manifest (in the training dataset's classes), description and folder suffix."""

    manifest: object
    dataset: str
    split: str
    tag: str
    same_dataset: bool

    def describe(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "images": len(self.manifest)}


def load_reference(plain: dict, spec, mode: str, class_names: list[str]) -> Reference:
    """The reference set of ``mode`` (see ``conf/al_eval.yaml``)."""
    from ..data.catalog import dataset_spec_from_config, load_split

    cfg = plain["al_eval"]
    if cfg["reference_split"] is not None:
        split = str(cfg["reference_split"])
    elif mode == "reliability":
        split = "test"
    else:
        split = str(cfg["pool_split"] if cfg["reference"] == "pool" else cfg["eval_split"])
    default_split = "test" if mode == "reliability" else str(cfg["eval_split"])
    if cfg["reference_dataset"] is None:
        ref_spec, same = spec, True
    else:
        ref_cfg = reference_dataset_config(plain)
        ref_spec = dataset_spec_from_config(ref_cfg)
        same = ref_spec.name == spec.name and ref_spec.root == spec.root
        if ref_spec.root == spec.root and ref_cfg != plain["dataset"]:
            # a synthetic dataset is regenerated when its config changes: it would overwrite the loop's data
            raise UserError(f"the reference dataset {ref_spec.name} differs from dataset {spec.name} but lives in "
                            f"the same folder {spec.root}; give it another root in "
                            f"al_eval.reference_dataset_overrides (e.g. dataset.root=<folder>)")
    manifest = load_split(ref_spec, split)
    if not same:
        shared = [n for n in class_names if n in manifest.class_names]
        if not shared:
            raise UserError(f"reference dataset {ref_spec.name} (classes {manifest.class_names}) shares no class with "
                            f"{spec.name} (classes {class_names}); choose another al_eval.reference_dataset")
        manifest = in_class_space(manifest, class_names)
    tag = "" if (same and split == default_split) else (f"-{split}" if same else f"-{ref_spec.name}-{split}")
    return Reference(manifest, ref_spec.name, split, tag, same)


def select_classes(plain: dict, class_names: list[str], reference: Reference) -> list[int]:
    """The 1-based class ids to compare: ``al_eval.classes`` (default all), restricted to those with crops in the
    reference when it is another dataset."""
    wanted = plain["al_eval"]["classes"]
    if wanted is None:
        names = list(class_names)
    else:
        names = [str(wanted)] if isinstance(wanted, str) else [str(n) for n in wanted]
        unknown = [n for n in names if n not in class_names]
        if unknown or not names:
            raise UserError(f"al_eval.classes={names}: {'unknown classes ' + str(unknown) if unknown else 'no class'}; "
                            f"the dataset's classes are {class_names}")
    if not reference.same_dataset:
        present = {int(a["category_id"]) for a in reference.manifest.annotations}
        kept = [n for n in names if class_names.index(n) + 1 in present]
        if not kept:
            raise UserError(f"the reference {reference.dataset}/{reference.split} has no object of the classes "
                            f"{names}; choose other al_eval.classes")
        if len(kept) < len(names):
            log.info("comparing the classes both datasets have: %s", kept)
        names = kept
    return [class_names.index(n) + 1 for n in list(dict.fromkeys(names))]


def performance_of(metrics: dict, selected: list[str], use_ap: bool, prefix: str = "") -> float:
    """The ranked performance: ``AP`` (``use_ap``), else the mean per-class AP of the ``selected`` classes (NaN
    when none is defined)."""
    if use_ap:
        return float(metrics.get(f"{prefix}AP", float("nan")))
    values = np.array([metrics.get(f"{prefix}AP/{n}", float("nan")) for n in selected], dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def finite_or_none(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [finite_or_none(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def similarity_with_empty(candidates: list[dict], reference: dict, class_ids: list[int], num_samples: int,
                          seed: int):
    """:func:`~uncertainty_det.al_eval.set_similarity` of the candidates that have crops (``[S]`` similarity with
    NaN for the others) and its result."""
    from ..al_eval import set_similarity

    total = np.array([sum(len(c[k]) for k in class_ids) for c in candidates])
    if sum(len(reference[k]) for k in class_ids) == 0:
        raise UserError("the reference set has no object crop of the compared classes; choose another reference or "
                        "al_eval.classes")
    keep = np.flatnonzero(total > 0)
    if keep.size == 0:
        raise UserError("no compared set has an object crop of the compared classes")
    if keep.size < len(candidates):
        log.warning("%d of %d sets have no crop of the compared classes: their similarity is NaN",
                    len(candidates) - keep.size, len(candidates))
    result = set_similarity([candidates[i] for i in keep], reference, class_ids, num_samples=num_samples, seed=seed)
    sim = np.full(len(candidates), np.nan)
    sim[keep] = result.similarity
    return sim, result, keep


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, format="png")


# ============================================================================================ performance
def run_performance(plain: dict, tracker, ws, spec, states: dict, k: int) -> dict:
    """Similarity of each strategy's labeled set to the reference vs its round-``k`` mAP."""
    import pandas as pd

    from ..al_eval import (per_class_agreement, per_class_figure, rank_agreement,
                           similarity_vs_performance_figure)
    from ..data.catalog import load_split
    from ..io_utils import atomic_dir, atomic_write_json

    cfg = plain["al_eval"]
    names = list(states)
    pool = load_split(spec, str(cfg["pool_split"]))
    class_names = pool.class_names
    reference = load_reference(plain, spec, "performance", class_names)
    class_ids = select_classes(plain, class_names, reference)
    selected = [class_names[c - 1] for c in class_ids]
    labeled = {s: [int(i) for i in states[s].labeled(upto=k)] for s in names}
    known = set(pool.image_ids)
    for s, ids in labeled.items():
        missing = [i for i in ids if i not in known]
        if missing:
            raise UserError(f"{len(missing)} images labeled by strategy {s} (e.g. ids {missing[:5]}) are not in the "
                            f"{cfg['pool_split']} split of dataset {spec.name}; give udet-al-eval the dataset "
                            f"overrides the loop ran with")
    if reference.same_dataset and reference.split == str(cfg["pool_split"]):
        per_image = image_features(pool, class_ids, pool.image_ids, "crop features (pool)")
        ref_feats = gather(per_image, pool.image_ids, class_ids)
    else:
        per_image = image_features(pool, class_ids, [i for s in names for i in labeled[s]], "crop features (AL sets)")
        ref_feats = gather(image_features(reference.manifest, class_ids, reference.manifest.image_ids,
                                          "crop features (reference)"), reference.manifest.image_ids, class_ids)
    candidates = [gather(per_image, labeled[s], class_ids) for s in names]
    sim, result, keep = similarity_with_empty(candidates, ref_feats, class_ids, int(cfg["num_samples"]),
                                              int(plain["seed"]))
    if keep.size < len(names):
        raise UserError(f"strategies {[names[i] for i in range(len(names)) if i not in set(keep)]} labeled no object "
                        f"of the classes {selected}; compare other al_eval.classes")

    metrics_of = {s: states[s].rounds[k]["metrics"] for s in names}
    mean_ap = np.array([float(metrics_of[s].get("map/AP", float("nan"))) for s in names])
    ap = np.array([[float(metrics_of[s].get(f"map/AP/{n}", float("nan"))) for n in selected] for s in names])
    perf = np.array([performance_of(metrics_of[s], selected, selected == class_names, prefix="map/") for s in names])
    perf_key = "map/AP" if selected == class_names else f"mean of map/AP/<class> over {selected}"
    agreement = rank_agreement(sim, perf)
    per_class = per_class_agreement(result.m, ap, selected)

    rows = []
    for si, s in enumerate(names):
        row = {"strategy": s, "round": k, "labeled": len(labeled[s]), "crops": int(result.total[si]),
               "size_factor": int(result.size_factor[si]), "similarity": float(sim[si]), "mAP": float(mean_ap[si]),
               "performance": float(perf[si])}
        row.update({f"m/{n}": float(result.m[ci, si]) for ci, n in enumerate(selected)})
        row.update({f"AP/{n}": float(ap[si, ci]) for ci, n in enumerate(selected)})
        row.update({f"crops/{n}": int(result.counts[ci, si]) for ci, n in enumerate(selected)})
        rows.append(row)
    table = pd.DataFrame(rows)
    per_class = per_class.assign(
        weight=[*result.weights.tolist(), np.nan], proportion=[*result.proportions.tolist(), np.nan],
        reference_crops=[*result.reference_counts.tolist(), np.nan]).reset_index()
    summary = {
        "mode": "performance", "run_name": ws.run_name, "round": k, "strategies": names,
        "reference": {"kind": "pool" if (reference.same_dataset and reference.split == str(cfg["pool_split"]))
                      else ("eval" if reference.same_dataset else "dataset"), **reference.describe()},
        "classes": selected, "performance": perf_key,
        **{key: agreement[key] for key in ("kendall_tau", "kendall_p", "pearson_r", "pearson_p", "n")},
        "per_class_mean_tau": float(per_class.set_index("class").loc["mean", "kendall_tau"]),
        "class_balance": result.class_balance,
        "weights": dict(zip(selected, result.weights.tolist())),
        "size_factors": dict(zip(names, result.size_factor.tolist())),
        "similarity": dict(zip(names, sim.tolist())), "mAP": dict(zip(names, mean_ap.tolist())),
        "performance_values": dict(zip(names, perf.tolist())),
        "num_samples": int(cfg["num_samples"]), "seed": int(plain["seed"]),
    }
    title = f"{ws.run_name} round {k} vs {reference.dataset}/{reference.split}"
    fig_sim = similarity_vs_performance_figure(sim, perf, labels=names, title=title,
                                               performance_label="mAP" if selected == class_names else "mean class AP")
    fig_cls = per_class_figure(result.m, ap, selected, proportions=result.proportions)
    out_dir = ws.root / "al_eval" / f"performance_round{k}{reference.tag}"
    with atomic_dir(out_dir) as tmp:
        table.to_csv(tmp / "similarity.csv", index=False)
        per_class.to_csv(tmp / "per_class.csv", index=False)
        atomic_write_json(tmp / "summary.json", finite_or_none(summary))
        _save(fig_sim, tmp / "similarity_vs_map.png")
        _save(fig_cls, tmp / "per_class.png")
    metrics = {"kendall_tau": agreement["kendall_tau"], "pearson_r": agreement["pearson_r"],
               "per_class_mean_tau": summary["per_class_mean_tau"], "class_balance": float(result.class_balance),
               **{f"similarity/{s}": float(v) for s, v in zip(names, sim)}}
    tracker.log_params({"al_eval/strategies": ",".join(names)[:500],
                        "al_eval/reference_used": f"{reference.dataset}/{reference.split}"})
    tracker.log_metrics(metrics)
    tracker.log_artifacts(out_dir, f"al_eval/{out_dir.name}")
    log.info("%s: similarity %s; Kendall tau vs %s %.3f, Pearson r %.3f -> %s", title,
             {s: round(float(v), 4) for s, v in zip(names, sim)}, perf_key, agreement["kendall_tau"],
             agreement["pearson_r"], out_dir)
    return metrics


# ============================================================================================ reliability
def predict_and_score(plain: dict, train_dir: Path, eval_manifest, reference: Reference, subset_ids: list[list[int]],
                      subset_gts: list[dict], class_names: list[str], selected: list[str], use_ap: bool):
    """``(subset performances [K], val performance, reference performance)`` of one round model."""
    from ..data.pipeline import input_config_from_dict
    from ..evaluation.coco_eval import coco_metrics
    from ..inference.postprocess import postprocess_config_from_dict
    from ..inference.predictor import Predictor

    cfg = plain["al_eval"]
    try:
        post = postprocess_config_from_dict(plain["postprocess"])
        inputs = dataclasses.replace(input_config_from_dict(plain["input"]), batch_size=int(cfg["batch_size"]))
    except ValueError as exc:
        raise UserError(f"invalid config: {exc}") from exc
    kwargs = {} if cfg.get("mc_samples") is None else {"mc_samples": int(cfg["mc_samples"])}
    predictor = Predictor.from_train_dir(train_dir, post, **kwargs)
    frame = predictor.predict_manifest(eval_manifest, inputs, progress=True)
    ref_frame = predictor.predict_manifest(reference.manifest, inputs, progress=True)
    del predictor

    def perf(gt, dets) -> float:
        return performance_of(coco_metrics(gt, dets, class_names), selected, use_ap)

    val = perf(eval_manifest.to_coco(), frame)
    ref = perf(reference.manifest.to_coco(), ref_frame)
    image_of = frame["image_id"].to_numpy(dtype=np.int64)
    subsets = np.array([perf(gt, frame.loc[np.isin(image_of, ids)]) for ids, gt in zip(subset_ids, subset_gts)])
    return subsets, val, ref


def run_reliability(plain: dict, tracker, ws, spec, states: dict, k: int) -> dict:
    """Does a random eval subset similar to the reference rank the round-``k`` models like the reference?"""
    import pandas as pd

    from ..al_eval import random_subsets, rank_heatmap_figure, reliability, subset_boundaries, tau_similarity_figure
    from ..data.catalog import load_split
    from ..io_utils import atomic_dir, atomic_write_json
    from ..workspace import require_upstream

    cfg = plain["al_eval"]
    names = list(states)
    train_dirs = {}
    for s in names:
        weights = require_upstream(ws.al_round(s, k) / "train" / "final.weights.h5", "al_loop",
                                   loop_command(plain, s, k + 1), what=f"the round-{k} model of strategy {s}")
        train_dirs[s] = weights.parent
    eval_manifest = load_split(spec, str(cfg["eval_split"]))
    class_names = eval_manifest.class_names
    reference = load_reference(plain, spec, "reliability", class_names)
    if reference.same_dataset and reference.split == str(cfg["eval_split"]):
        log.warning("the reference is the eval split itself (%s): every ranking is compared with its own",
                    reference.split)
    class_ids = select_classes(plain, class_names, reference)
    selected = [class_names[c - 1] for c in class_ids]
    # COCO AP when every class of the dataset is compared; with a class subset or another dataset as the
    # reference, the mean per-class AP over the compared (shared) classes, for every set alike
    use_ap = reference.same_dataset and selected == class_names

    seeds = [int(s) for s in cfg["subset_seeds"]]
    n_images = len(eval_manifest)
    split_factor = int(cfg["split_factor"])
    subsets = random_subsets(n_images, split_factor, seeds)
    chunks = len(subset_boundaries(n_images, split_factor)) - 1
    eval_ids = np.asarray(eval_manifest.image_ids, dtype=np.int64)
    subset_ids = [eval_ids[pos].tolist() for pos in subsets]
    log.info("%d random subsets of the %d %s images (%d seeds x %d chunks)", len(subsets), n_images,
             cfg["eval_split"], len(seeds), chunks)

    per_image = image_features(eval_manifest, class_ids, eval_ids.tolist(), f"crop features ({cfg['eval_split']})")
    ref_feats = gather(image_features(reference.manifest, class_ids, reference.manifest.image_ids,
                                      "crop features (reference)"), reference.manifest.image_ids, class_ids)
    candidates = [gather(per_image, ids, class_ids) for ids in subset_ids] + [gather(per_image, eval_ids, class_ids)]
    sim, result, keep = similarity_with_empty(candidates, ref_feats, class_ids, int(cfg["num_samples"]),
                                              int(plain["seed"]))
    subset_sim, val_sim = sim[:-1], float(sim[-1])

    subset_gts = [eval_manifest.subset(ids).to_coco() for ids in subset_ids]
    subset_perf = np.full((len(subsets), len(names)), np.nan)
    val_perf = np.full(len(names), np.nan)
    ref_perf = np.full(len(names), np.nan)
    for si, s in enumerate(names):
        log.info("strategy %s: predicting %s and %s/%s with %s", s, cfg["eval_split"], reference.dataset,
                 reference.split, train_dirs[s])
        subset_perf[:, si], val_perf[si], ref_perf[si] = predict_and_score(
            plain, train_dirs[s], eval_manifest, reference, subset_ids, subset_gts, class_names, selected, use_ap)
    rel = reliability(subset_perf, val_perf, ref_perf, subset_sim, val_sim)

    rows = []
    for i, ids in enumerate(subset_ids):
        row = {"subset": i, "seed": seeds[i // chunks], "chunk": i % chunks, "size": len(ids),
               "crops": int(sum(len(candidates[i][c]) for c in class_ids)), "similarity": float(subset_sim[i]),
               "tau": float(rel["tau"][i]), "tau_p": float(rel["tau_p"][i])}
        row.update({f"AP/{s}": float(subset_perf[i, si]) for si, s in enumerate(names)})
        rows.append(row)
    table = pd.DataFrame(rows)
    perf_key = "AP" if use_ap else f"mean per-class AP over {selected}"
    by_name = lambda v: None if v is None else dict(zip(names, np.asarray(v, dtype=np.float64).tolist()))  # noqa: E731
    summary = {
        "mode": "reliability", "run_name": ws.run_name, "round": k, "strategies": names,
        "eval": {"dataset": spec.name, "split": str(cfg["eval_split"]), "images": n_images},
        "reference": reference.describe(), "classes": selected, "performance": perf_key,
        "subsets": len(subsets), "split_factor": split_factor, "subset_seeds": seeds,
        "val_similarity": val_sim, "val_tau": rel["val_tau"], "val_tau_p": rel["val_tau_p"],
        "top_s": rel["top_s"], "top_s_tau": rel["top_s_tau"], "top_s_similarity": rel["top_s_similarity"],
        "top_s_beats_val": rel["top_s_beats_val"], "best_tau_index": rel["best_tau_index"],
        "best_tau": rel["best_tau"], "pearson_r": rel["pearson_r"], "pearson_p": rel["pearson_p"],
        "class_balance": result.class_balance, "weights": dict(zip(selected, result.weights.tolist())),
        "perf": {key: by_name(v) for key, v in rel["perf"].items()},
        "num_samples": int(cfg["num_samples"]), "seed": int(plain["seed"]),
    }
    set_names = [f"s{i} (seed {r['seed']})" for i, r in enumerate(rows)] + ["val", "reference"]
    fig_tau = tau_similarity_figure(rel["tau"], subset_sim, rel["val_tau"], val_sim, top_s=rel["top_s"])
    fig_rank = rank_heatmap_figure(np.vstack([subset_perf, val_perf, ref_perf]), set_names, names)
    out_dir = ws.root / "al_eval" / f"reliability_round{k}{reference.tag}"
    with atomic_dir(out_dir) as tmp:
        table.to_csv(tmp / "subsets.csv", index=False)
        atomic_write_json(tmp / "summary.json", finite_or_none(summary))
        _save(fig_tau, tmp / "tau_vs_similarity.png")
        _save(fig_rank, tmp / "rank_heatmap.png")
    metrics = {"val_tau": rel["val_tau"], "top_s_tau": rel["top_s_tau"], "pearson_r": rel["pearson_r"],
               "best_tau": rel["best_tau"], "val_similarity": val_sim, "top_s_similarity": rel["top_s_similarity"],
               "top_s_beats_val": float(rel["top_s_beats_val"]),
               **{f"val_AP/{s}": float(v) for s, v in zip(names, val_perf)},
               **{f"ref_AP/{s}": float(v) for s, v in zip(names, ref_perf)}}
    tracker.log_params({"al_eval/strategies": ",".join(names)[:500],
                        "al_eval/reference_used": f"{reference.dataset}/{reference.split}"})
    tracker.log_metrics(metrics)
    tracker.log_artifacts(out_dir, f"al_eval/{out_dir.name}")
    log.info("%s round %d, %d subsets of %s vs %s/%s: val tau %.3f, top-s tau %.3f (similarity %.4f), Pearson r of "
             "tau vs similarity %.3f -> %s", ws.run_name, k, len(subsets), cfg["eval_split"], reference.dataset,
             reference.split, rel["val_tau"], rel["top_s_tau"], rel["top_s_similarity"], rel["pearson_r"], out_dir)
    return metrics


# ============================================================================================ app
def run(plain: dict, tracker) -> dict:
    """The AL evaluation on a resolved config; returns the logged metrics."""
    from ..data.catalog import dataset_spec_from_config
    from ..workspace import run_workspace

    cfg = plain["al_eval"]
    mode = str(cfg["mode"])
    if mode not in MODES:
        raise UserError(f"unknown al_eval.mode {mode!r}; use one of {list(MODES)}")
    if str(cfg["reference"]) not in REFERENCES:
        raise UserError(f"unknown al_eval.reference {cfg['reference']!r}; use one of {list(REFERENCES)} (another "
                        f"dataset: al_eval.reference_dataset=<name>)")
    try:
        k = int(cfg["round"])
    except (TypeError, ValueError):
        k = -1
    if k < 0:
        raise UserError(f"al_eval.round must be a round index >= 0, got {cfg['round']!r}")
    if int(cfg["num_samples"]) < 2:
        raise UserError(f"al_eval.num_samples must be >= 2, got {cfg['num_samples']}")
    spec = dataset_spec_from_config(plain["dataset"])
    ws = run_workspace(plain["paths"]["runs_dir"], plain["run_name"])
    al_root = ws.root / "al"
    names = find_strategies(plain, al_root, cfg.get("strategies"), k)
    states = load_rounds(plain, al_root, names, k)
    with warnings.catch_warnings():
        # constant inputs (e.g. tiny models with AP 0 everywhere) make correlations undefined: NaN, reported as such
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*(invalid value|Mean of empty|constant).*")
        if mode == "performance":
            return run_performance(plain, tracker, ws, spec, states, k)
        return run_reliability(plain, tracker, ws, spec, states, k)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="al_eval")
def main(cfg: DictConfig) -> None:
    with stage_run(cfg, "al_eval") as tracker:
        run(plain_config(cfg), tracker)


if __name__ == "__main__":
    main()
