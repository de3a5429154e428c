"""The offline jobs behind `sharerank train`, `eval` and `recommend`: dataset folder → split → model →
evaluation → MLflow run (and, for `train`, a registry version of the served bundle).

One function runs the whole job so the CLI, the demo and tests share it; callers pass a callback to
see each epoch (a progress bar) while MLflow records the curves.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharerank import registry
from sharerank.config import Settings
from sharerank.dataset.reader import Dataset, Interactions, load_dataset
from sharerank.dataset.schema import RECOMMENDATIONS
from sharerank.dataset.writer import write_rows
from sharerank.models.artifact import pyfunc
from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.artifact.index import ProductIndex
from sharerank.models.recommenders.graph import friends_matrix, interaction_matrix
from sharerank.models.seeding.plan import SeedingContext
from sharerank.training.feed.metrics import evaluate_ranking, popularity_top_k, rank_top_k
from sharerank.training.feed.split import Split, split_dataset
from sharerank.training.feed.train import TrainConfig, TrainResult, train_model
from sharerank.training.seeding.seed import has_influence_data

log = logging.getLogger(__name__)


def evaluate_split(dataset: Dataset, split: Split, result: TrainResult, k: int = 20) -> dict[str, float]:
    """Test metrics of the model and of popularity, same users, training items excluded for both."""
    known = Interactions(*(np.concatenate([getattr(split.train, f), getattr(split.valid, f)])
                           for f in ("user", "product", "ts", "share")))
    seen = interaction_matrix(known, dataset.num_users, dataset.num_products)
    test = interaction_matrix(split.test, dataset.num_users, dataset.num_products)
    users = np.flatnonzero(np.diff(test.indptr))
    popularity = np.asarray(seen.sum(axis=0)).ravel()
    model_top = rank_top_k(torch.from_numpy(result.user_embedding), torch.from_numpy(result.product_embedding),
                           torch.from_numpy(users), seen, k)
    pop_top = popularity_top_k(seen, users, k)
    n = dataset.num_products
    return {
        **_metric_names("test_", evaluate_ranking(model_top, test, users, n, popularity, ks=(10, k))),
        **_metric_names("test_popularity_", evaluate_ranking(pop_top, test, users, n, popularity, ks=(k,))),
    }


def _metric_names(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    """MLflow metric names allow no '@': ``Recall@20`` is logged as ``<prefix>recall_20``."""
    return {prefix + name.replace("@", "_").lower(): float(value) for name, value in scores.items()}


TUNING_USERS = 2000
"""Users (with purchases) whose embeddings tune an IVF index's nprobe: the queries the feed will send."""
TUNING_RECALL = 0.95
"""Recall@100 against exact search that the tuned nprobe must reach (nprobe 4–8 gives 0.95–0.99 on 1M
clustered vectors)."""


def tune_index(index: ProductIndex, user_embedding: np.ndarray, history, *, users: int = TUNING_USERS,
               target: float = TUNING_RECALL, seed: int = 0) -> dict[str, Any]:
    """Tunes an IVF index's nprobe on a sample of users with purchases; returns what goes in ``info["index"]``."""
    report: dict[str, Any] = {"kind": index.kind}
    if index.is_exact:
        return report
    active = np.flatnonzero(np.diff(history.indptr) > 0)
    if len(active) == 0:
        active = np.arange(len(user_embedding))
    sample = np.random.default_rng(seed).permutation(active)[:users]
    tuned = index.tune_nprobe(user_embedding[np.sort(sample)], k=100, target=target)
    report.update(tuned.to_dict())
    log.info("index %s: nprobe %d gives recall@%d %.3f (target %.2f) on %d users", index.kind, tuned.nprobe,
             tuned.k, tuned.recall, target, tuned.queries)
    return report


def build_bundle(dataset: Dataset, result: TrainResult, info: dict[str, Any]) -> ModelBundle:
    """The served model. Its history is every purchase in the folder, so the feed never offers those.

    An IVF index (large catalogues) gets the smallest nprobe that reaches :data:`TUNING_RECALL` on the model's
    own user embeddings; ``info["index"]`` records the index kind and that tuning.
    """
    history = interaction_matrix(dataset.purchases, dataset.num_users, dataset.num_products)
    index = ProductIndex.build(result.product_embedding)
    info = {**info, "index": tune_index(index, result.user_embedding, history)}
    return ModelBundle(
        users=dataset.users,
        products=dataset.products,
        category=dataset.category,
        in_stock=dataset.in_stock,
        user_embedding=result.user_embedding,
        product_embedding=result.product_embedding,
        history=history,
        friends=friends_matrix(dataset),
        popularity=np.bincount(dataset.purchases.product, minlength=dataset.num_products),
        index=index,
        info=info,
        seller=None if dataset.seller is None else np.asarray(dataset.seller, dtype=object),  # None: all ""
        # Influence for GetSeedTargets, learned with the GNN's user embeddings for pairs without history.
        seeding=SeedingContext.from_dataset(dataset, user_embedding=result.user_embedding)
        if has_influence_data(dataset) else None,
    )


def run_training(data_dir: str | Path, settings: Settings, config: TrainConfig,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Trains on the folder, logs everything to MLflow and registers a model version; returns a report."""
    import mlflow

    started = time.perf_counter()
    dataset = load_dataset(data_dir)
    if len(dataset.purchases) == 0:
        raise ValueError(f"{data_dir}: no purchases to train on")
    split = split_dataset(dataset, seed=config.seed)
    experiment_id = registry.connect(settings)
    summary = dataset.summary()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.model}-{Path(data_dir).name}"):
        mlflow.log_params({**asdict(config), "data_dir": str(Path(data_dir).resolve()),
                           "train_pairs": len(split.train), "valid_pairs": len(split.valid),
                           "test_pairs": len(split.test), **{f"data_{k}": v for k, v in summary.items()}})
        mlflow.set_tags({"data_fingerprint": dataset.fingerprint, "model_type": config.model})

        def record(epoch: int, figures: dict[str, float]) -> None:
            mlflow.log_metrics(figures, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, figures)

        result = train_model(dataset, split, config, on_epoch=record)
        metrics = evaluate_split(dataset, split, result)
        metrics.update(best_epoch=result.best_epoch, seconds_per_epoch=result.seconds_per_epoch)
        mlflow.log_metrics(metrics)
        info = {"model_type": config.model, "config": asdict(config), "data_fingerprint": dataset.fingerprint,
                "data": summary, "metrics": metrics}
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(result.model.state_dict(), Path(tmp) / "weights.pt")
            mlflow.log_artifact(str(Path(tmp) / "weights.pt"))
            bundle = build_bundle(dataset, result, info)
            _log_index(bundle.info["index"])
            if bundle.seeding is not None:
                _log_influence(bundle.seeding.influence.info)
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            registered = registry.log_model(settings, pyfunc.__file__, {pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
                                            pyfunc.SIGNATURE, pyfunc.PIP_REQUIREMENTS)
    return {"run_id": registered.run_id, "model_name": settings.model_name, "version": registered.version,
            "model_uri": registered.model_uri, "data_fingerprint": dataset.fingerprint,
            "metrics": metrics, "seconds": time.perf_counter() - started}


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
                   configs: dict[str, TrainConfig] | None = None, refit: bool = True,
                   on_model: Callable[[str, dict[str, Any]], None] | None = None,
                   on_epoch: Callable[[str, int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """`sharerank eval`: every named model on one split, one MLflow run per model under a parent run."""
    import mlflow

    from sharerank.models.recommenders.registry import spec
    from sharerank.training.feed.evaluate import evaluate
    from sharerank.training.feed.train import default_config

    configs = {n: (configs or {}).get(n) or default_config(n) for n in names if spec(n).trainable}
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
                if model in configs:
                    mlflow.log_params(asdict(configs[model]))

                def record_epoch(model: str, epoch: int, figures: dict[str, float]) -> None:
                    mlflow.log_metrics(figures, step=epoch)  # training curves, readable back from MLflow
                    if on_epoch is not None:
                        on_epoch(model, epoch, figures)

                result = evaluate(dataset, split, [model], k=k, configs=configs, refit=refit,
                                  on_epoch=record_epoch)[model]
                if "skipped" in result:
                    mlflow.set_tag("skipped", result["skipped"][:500])
                else:
                    mlflow.log_metrics({**_metric_names("test_", result["metrics"]),
                                        **{key: float(v) for key, v in result.items()
                                           if key != "metrics" and isinstance(v, int | float)}})
                results[model] = result
            if on_model is not None:
                on_model(model, result)
    return {"data": str(data_dir), "data_fingerprint": dataset.fingerprint, "k": k, "seed": seed,
            "test_users": int(len(np.unique(split.test.user))), "run_id": parent.info.run_id, "models": results}


def run_recommend(data_dir: str | Path, model: str, k: int, out: str | Path, *, seed: int = 0,
                  config: TrainConfig | None = None) -> dict[str, Any]:
    """`sharerank recommend`: the top-k list of every test user, as eval scores it, as CSV."""
    from sharerank.training.feed.evaluate import fit_model, held_out_users, rank, ranked_depth

    dataset = load_dataset(data_dir)
    split = split_dataset(dataset, seed=seed)
    fitted = fit_model(model, dataset, split, config)
    users, seen, _ = held_out_users(dataset, split)
    top, scores = rank(fitted.scorer, users, seen, ranked_depth(k))
    top, scores = top[:, :k], scores[:, :k]
    rows = ((dataset.users[user], dataset.products[product], position, f"{value:.6g}")
            for user, products, values in zip(users, top, scores, strict=True)
            for position, (product, value) in enumerate(zip(products, values, strict=True), start=1))
    write_rows(Path(out).parent, RECOMMENDATIONS, RECOMMENDATIONS.columns(), rows, path=out)
    return {"out": str(out), "model": model, "k": k, "users": int(len(users)), "rows": int(top.size)}
