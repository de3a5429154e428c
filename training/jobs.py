"""The offline jobs behind `sharerank train`, `retrain`, `eval` and `recommend`.

- **train**: dataset folders (merged by event id) → a validation split carved from them (the test set, if any,
  is never read) → the automatic choice or one named model → refit on everything → MLflow run with the
  validation figures and every trial → a registry version of the served bundle.
- **retrain**: train, then the new version and the champion are scored on the same validation split and the
  champion alias moves only when the new one is better (MLflow records the comparison).
- **eval**: every model, the automatic choice among them, on one split with a test part; **recommend**: the
  lists eval scores.

Callers pass callbacks to see each epoch or trial (a progress bar) while MLflow records them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sharerank import registry
from sharerank.config import Settings
from sharerank.dataset.merge import merge_folders
from sharerank.dataset.reader import Dataset, load_dataset
from sharerank.dataset.schema import RECOMMENDATIONS
from sharerank.dataset.writer import write_rows
from sharerank.models.artifact import pyfunc
from sharerank.models.recommenders.registry import spec
from sharerank.training.bundle import build_bundle
from sharerank.training.feed import distributed
from sharerank.training.feed.auto import (
    DEFAULT_BUDGET_SECONDS,
    Trial,
    TrialCallback,
    Validation,
    choose,
    fit_choice,
    score_trial,
)
from sharerank.training.feed.split import Split, holdout_last, split_dataset

log = logging.getLogger(__name__)

VALID_FRACTION = 0.1
"""Each user's latest share of purchases that training holds out to choose and stop on."""
EpochCallback = Callable[[int, dict[str, float]], None]


def training_data(data_dirs: Sequence[str | Path], scratch: Path) -> Dataset:
    """The folders to train on as one dataset (merged into ``scratch`` when there are several), without
    ever reading a test set."""
    folders = [Path(d) for d in data_dirs]
    if not folders:
        raise ValueError("give at least one dataset folder")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a dataset folder (no such directory)")
    if len(folders) == 1:
        return load_dataset(folders[0], with_test=False)
    merge_folders(folders, scratch)
    return load_dataset(scratch, with_test=False)


def training_split(dataset: Dataset, seed: int = 0) -> Split:
    """Training and validation parts of everything in ``dataset`` (each user's latest purchases validate)."""
    if len(dataset.purchases) == 0:
        raise ValueError(f"{dataset.root}: no purchases to train on")
    train, valid = holdout_last(dataset.purchases, VALID_FRACTION, seed + 1)
    return Split(train=train, valid=valid, test=valid.take(np.zeros(len(valid), dtype=bool)))


def run_training(data_dirs: Sequence[str | Path], settings: Settings, *, model: str = "auto",
                 params: dict[str, Any] | None = None, budget_seconds: float = DEFAULT_BUDGET_SECONDS,
                 seed: int = 0, on_epoch: EpochCallback | None = None,
                 on_trial: TrialCallback | None = None) -> dict[str, Any] | None:
    """Trains on the folders, logs everything to MLflow and registers a version; returns a report.

    ``model`` is ``auto`` (every family tuned within ``budget_seconds``, the validation winner served) or one
    model of the registry (run once, with ``params`` or its defaults).

    Inside a torch.distributed process group (torchrun) a graph model trains data-parallel: every rank runs the
    same steps on its shard of each batch, rank 0 alone logs, registers and returns the report, the other ranks
    return ``None``.

    Raises:
        ValueError: ``auto`` inside a process group (its search reads the clock on every rank), or bad input.
    """
    if distributed.active() and model == "auto":
        raise ValueError("--model auto is not trained data-parallel; name one graph model (lightgcn, sharegnn) "
                         "under torchrun")
    with tempfile.TemporaryDirectory() as scratch:
        dataset = training_data(data_dirs, Path(scratch) / "merged")
        return _train(dataset, training_split(dataset, seed), data_dirs, settings, model=model, params=params,
                      budget_seconds=budget_seconds, seed=seed, on_epoch=on_epoch, on_trial=on_trial,
                      scratch=Path(scratch))


def _train(dataset: Dataset, split: Split, data_dirs: Sequence[str | Path], settings: Settings, *, model: str,
           params: dict[str, Any] | None, budget_seconds: float, seed: int, on_epoch: EpochCallback | None,
           on_trial: TrialCallback | None, scratch: Path) -> dict[str, Any] | None:
    import mlflow

    if not distributed.is_main():  # a follower rank: the same training in lockstep, nothing logged or registered
        choice = choose(dataset, split, budget_seconds=budget_seconds, seed=seed, families=[model],
                        fixed=dict(params or {}))
        fit_choice(dataset, split, choice)
        return None
    started = time.perf_counter()
    experiment_id = registry.connect(settings)
    summary = dataset.summary()
    names = ",".join(Path(d).name for d in data_dirs)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model}-{names}") as run:
        mlflow.log_params({"model": model, "budget_seconds": budget_seconds, "seed": seed,
                           "data_dirs": ",".join(str(Path(d).resolve()) for d in data_dirs),
                           "train_pairs": len(split.train), "valid_pairs": len(split.valid),
                           **{f"data_{k}": v for k, v in summary.items()}})
        if distributed.active():
            mlflow.log_param("world_size", distributed.world_size())
        mlflow.set_tags({"data_fingerprint": dataset.fingerprint})
        choice = choose(dataset, split, budget_seconds=budget_seconds, seed=seed,
                        families=None if model == "auto" else [model],
                        fixed=None if model == "auto" else dict(params or {}),
                        on_trial=_trial_logger(experiment_id, on_trial))
        fitted = fit_choice(dataset, split, choice, on_epoch=_epoch_logger(on_epoch))
        metrics = {**choice.validation, "fit_seconds": fitted.fit_seconds,
                   **{key: float(fitted.info[key]) for key in ("seconds_per_epoch", "seconds_to_best")
                      if key in fitted.info}}
        for family, result in choice.families.items():
            for key in ("val_recall_20", "val_ndcg_20"):
                if key in result:
                    metrics[f"family_{family}_{key}"] = result[key]
        mlflow.log_metrics(metrics)
        mlflow.log_params({f"chosen_{key}": str(value) for key, value in choice.params.items()})
        if "batch_size" in fitted.info:  # a graph model's batches as run (the default follows the data)
            mlflow.log_param("batch_size", fitted.info["batch_size"])
        mlflow.set_tags({"model_type": choice.name, "chosen": choice.name})
        mlflow.log_dict(choice.to_json(), "choice.json")
        if fitted.result is not None:  # a graph model's weights, to fine-tune or inspect
            import torch

            torch.save(fitted.result.model.state_dict(), scratch / "weights.pt")
            mlflow.log_artifact(str(scratch / "weights.pt"))
        info = {"model_type": choice.name, "params": choice.params, "choice": choice.to_json(),
                "data_fingerprint": dataset.fingerprint, "data": summary, "metrics": metrics}
        bundle = build_bundle(dataset, fitted.factors, info)
        _log_index(bundle.info["index"])
        if bundle.seeding is not None:
            _log_influence(bundle.seeding.influence.info)
        bundle_dir = bundle.save(scratch / "bundle")
        registered = registry.log_model(settings, pyfunc.__file__, {pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
                                        pyfunc.SIGNATURE, pyfunc.PIP_REQUIREMENTS)
    return {"run_id": run.info.run_id, "model_name": settings.model_name, "version": registered.version,
            "model_uri": registered.model_uri, "data_fingerprint": dataset.fingerprint, "model": choice.name,
            "params": choice.params, "choice": choice.to_json(), "metrics": metrics,
            "seconds": time.perf_counter() - started, **({"world_size": distributed.world_size()}
                                                         if distributed.active() else {})}


def run_retrain(data_dirs: Sequence[str | Path], settings: Settings, *, budget_seconds: float = DEFAULT_BUDGET_SECONDS,
                seed: int = 0, force: bool = False, on_epoch: EpochCallback | None = None,
                on_trial: TrialCallback | None = None) -> dict[str, Any]:
    """`sharerank retrain`: train (auto) on the merged folders, then compare the new version with the champion
    on the same validation split and move the champion alias only when the new one is no worse (or ``force``).

    Both are scored as fitted on the training part alone: the new version by its validation figures, the
    champion by its own family and settings fitted the same way. (The champion's served vectors were fit on
    data that includes some of these validation purchases, so scoring them directly would flatter it.)"""
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        dataset = training_data(data_dirs, Path(scratch) / "merged")
        split = training_split(dataset, seed)
        report = _train(dataset, split, data_dirs, settings, model="auto", params=None,
                        budget_seconds=budget_seconds, seed=seed, on_epoch=on_epoch, on_trial=on_trial,
                        scratch=Path(scratch))
        champion = registry.resolve_alias(settings)
        comparison: dict[str, Any] = {"candidate": {"version": report["version"], "model": report["model"],
                                                    **_gate_figures(report["metrics"])}}
        if champion is not None:
            info = registry.load_version(settings, champion).python_model.bundle.info
            figures, _, _ = score_trial(info["model_type"], dict(info.get("params") or {}),
                                     Validation.of(dataset, split, seed))
            comparison["champion"] = {"version": champion, "model": info["model_type"], **_gate_figures(figures)}
    with mlflow.start_run(run_id=report["run_id"]):
        if "champion" in comparison:
            mlflow.log_metrics({f"champion_{k}": v for k, v in comparison["champion"].items()
                                if isinstance(v, float)})
            mlflow.set_tags({"champion_version": champion, "champion_model": comparison["champion"]["model"]})
        mlflow.log_dict(comparison, "retrain_comparison.json")
    try:
        promoted = registry.promote(settings, report["version"], force=force,
                                    champion_metrics=comparison.get("champion"))
    except registry.PromotionRefused as refused:  # the expected outcome when the champion is better
        promoted = {**refused.result, "reason": str(refused)}
    return {**report, "comparison": comparison, "promotion": promoted}


def _gate_figures(metrics: dict[str, float]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in registry.GATE_METRICS if name in metrics}


def _trial_logger(experiment_id: str, on_trial: TrialCallback | None) -> TrialCallback:
    """Each trial of the automatic choice as a child run of the active MLflow run: its settings, its figures
    (``val_recall_20`` is its best epoch's) and a graph model's per-epoch curve (``curve_loss``,
    ``curve_val_recall_20``... by step)."""
    import mlflow

    def log_trial(trial: Trial) -> None:
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{trial.name}-{trial.index}", nested=True):
            mlflow.set_tags({"kind": "trial", "model": trial.name})
            mlflow.log_params({key: str(value) for key, value in trial.params.items()})
            for epoch, figures in enumerate(trial.history, start=1):
                mlflow.log_metrics({f"curve_{key}": value for key, value in figures.items()}, step=epoch)
            mlflow.log_metrics(trial.figures)
        if on_trial is not None:
            on_trial(trial)

    return log_trial


def _epoch_logger(on_epoch: EpochCallback | None) -> EpochCallback:
    import mlflow

    def record(epoch: int, figures: dict[str, float]) -> None:
        mlflow.log_metrics(figures, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, figures)

    return record


def _metric_names(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    """MLflow metric names allow no '@': ``Recall@20`` is logged as ``<prefix>recall_20``."""
    return {prefix + name.replace("@", "_").lower(): float(value) for name, value in scores.items()}


def _log_index(report: dict[str, Any]) -> None:
    """The index kind (and an IVF index's tuned nprobe and its recall) on the active MLflow run."""
    import mlflow

    mlflow.set_tag("index_kind", report["kind"])
    if "nprobe" in report:
        mlflow.log_params({"index_nprobe": report["nprobe"], "index_nprobe_target": report["target"]})
        mlflow.log_metric(f"index_recall_{report['k']}", report["recall"])


def _log_influence(info: dict[str, Any]) -> None:
    """How the served influence model was learned: the regime (recorded, exposure or given) as a tag, its
    counts and window as params, on the active MLflow run."""
    import mlflow

    mlflow.set_tag("influence_regime", info.get("regime", ""))
    mlflow.log_params({f"influence_{key}": value for key, value in info.items() if key != "regime"})


def run_evaluation(data_dir: str | Path, settings: Settings, names: list[str], *, k: int = 20, seed: int = 0,
                   params: dict[str, dict[str, Any]] | None = None, refit: bool = True,
                   budget_seconds: float = DEFAULT_BUDGET_SECONDS,
                   on_model: Callable[[str, dict[str, Any]], None] | None = None,
                   on_epoch: Callable[[str, int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """`sharerank eval`: every named model on one split, one MLflow run per model under a parent run. The name
    ``auto`` is the automatic choice, made on the split's validation part only and refit like the others."""
    import mlflow

    from sharerank.training.feed.evaluate import evaluate, held_out_users, score_fitted

    dataset = load_dataset(data_dir)
    split = split_dataset(dataset, seed=seed)
    experiment_id = registry.connect(settings)
    summary = dataset.summary()
    name = Path(data_dir).resolve().name
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"eval-{name}") as parent:
        mlflow.log_params({"data_dir": str(Path(data_dir).resolve()), "k": k, "seed": seed, "refit": refit,
                           "models": ",".join(names), **{f"data_{key}": v for key, v in summary.items()}})
        mlflow.set_tags({"data_fingerprint": dataset.fingerprint, "kind": "evaluation"})

        results: dict[str, Any] = {}
        for model in names:
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"eval-{name}-{model}", nested=True):
                mlflow.set_tags({"data_fingerprint": dataset.fingerprint, "kind": "evaluation", "model": model})
                mlflow.log_params({key: str(v) for key, v in ((params or {}).get(model) or {}).items()})

                def record_epoch(epoch: int, figures: dict[str, float], model: str = model) -> None:
                    mlflow.log_metrics(figures, step=epoch)  # training curves, readable back from MLflow
                    if on_epoch is not None:
                        on_epoch(model, epoch, figures)

                if model == "auto":
                    started = time.perf_counter()
                    choice = choose(dataset, split, budget_seconds=budget_seconds, seed=seed,
                                    on_trial=_trial_logger(experiment_id, None))
                    choice_seconds = time.perf_counter() - started
                    fitted = fit_choice(dataset, split, choice, on_epoch=record_epoch)
                    users, seen, test = held_out_users(dataset, split)
                    result = score_fitted(fitted, dataset, users, seen, test, np.asarray(seen.sum(axis=0)).ravel(), k)
                    # the budget bounds both: the search with training on and the blend's check, then the refit
                    result.update(choice_seconds=round(choice_seconds, 2),
                                  whole_fit_seconds=round(choice_seconds + fitted.fit_seconds, 2))
                    result["chosen"] = choice.name
                    result["choice"] = choice.to_json()
                    mlflow.log_dict(choice.to_json(), "choice.json")
                else:
                    result = evaluate(dataset, split, [model], k=k, params=params, refit=refit,
                                      on_epoch=lambda m, e, f: record_epoch(e, f))[model]
                if "skipped" in result:
                    mlflow.set_tag("skipped", result["skipped"][:500])
                else:
                    mlflow.log_metrics({**_metric_names("test_", result["metrics"]),
                                        **{key: float(v) for key, v in result.items()
                                           if key not in ("metrics", "params") and isinstance(v, int | float)}})
                results[model] = result
            if on_model is not None:
                on_model(model, result)
    return {"data": str(data_dir), "data_fingerprint": dataset.fingerprint, "k": k, "seed": seed,
            "test_users": int(len(np.unique(split.test.user))), "run_id": parent.info.run_id, "models": results}


def run_recommend(data_dir: str | Path, model: str, k: int, out: str | Path, *, seed: int = 0,
                  params: dict[str, Any] | None = None,
                  budget_seconds: float = DEFAULT_BUDGET_SECONDS) -> dict[str, Any]:
    """`sharerank recommend`: the top-k list of every test user, as eval scores it, as CSV (``model`` may be
    ``auto``: chosen on validation, refit on train + validation)."""
    from sharerank.training.feed.evaluate import held_out_users, rank, ranked_depth
    from sharerank.training.feed.fit import fit_model

    dataset = load_dataset(data_dir)
    split = split_dataset(dataset, seed=seed)
    if model == "auto":
        choice = choose(dataset, split, budget_seconds=budget_seconds, seed=seed)
        fitted = fit_choice(dataset, split, choice)
    else:
        spec(model)
        fitted = fit_model(model, dataset, split, params)
    users, seen, _ = held_out_users(dataset, split)
    top, scores = rank(fitted.scorer, users, seen, ranked_depth(k))
    top, scores = top[:, :k], scores[:, :k]
    rows = ((dataset.users[user], dataset.products[product], position, f"{value:.6g}")
            for user, products, values in zip(users, top, scores, strict=True)
            for position, (product, value) in enumerate(zip(products, values, strict=True), start=1))
    write_rows(Path(out).parent, RECOMMENDATIONS, RECOMMENDATIONS.columns(), rows, path=out)
    return {"out": str(out), "model": fitted.name, "k": k, "users": int(len(users)), "rows": int(top.size)}
