"""`sharerank train`: dataset folder → split → model → evaluation → MLflow run and registry version.

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

from sharerank.config import Settings
from sharerank.models.bundle import ModelBundle
from sharerank.models.index import ProductIndex
from sharerank.training.dataset import Dataset, Interactions, load_dataset
from sharerank.training.graph import interaction_matrix
from sharerank.training.metrics import evaluate_ranking, popularity_top_k, rank_top_k
from sharerank.training.split import Split, split_dataset
from sharerank.training.tracking import connect, log_bundle_model
from sharerank.training.train import TrainConfig, TrainResult, train_model

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


def build_bundle(dataset: Dataset, result: TrainResult, info: dict[str, Any]) -> ModelBundle:
    """The served model. Its history is every purchase in the folder, so the feed never offers those."""
    history = interaction_matrix(dataset.purchases, dataset.num_users, dataset.num_products)
    return ModelBundle(
        users=dataset.users,
        products=dataset.products,
        category=dataset.category,
        in_stock=dataset.in_stock,
        user_embedding=result.user_embedding,
        product_embedding=result.product_embedding,
        history=history,
        popularity=np.bincount(dataset.purchases.product, minlength=dataset.num_products),
        index=ProductIndex.build(result.product_embedding),
        info=info,
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
    experiment_id = connect(settings)
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
            bundle_dir = build_bundle(dataset, result, info).save(Path(tmp) / "bundle")
            registered = log_bundle_model(bundle_dir, settings)
    return {"run_id": registered.run_id, "model_name": settings.model_name, "version": registered.version,
            "model_uri": registered.model_uri, "data_fingerprint": dataset.fingerprint,
            "metrics": metrics, "seconds": time.perf_counter() - started}
