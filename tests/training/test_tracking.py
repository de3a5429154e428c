"""Training logs to a real MLflow sqlite store, registers a version, and promote moves the alias."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from sharerank.training.tracking import connect, promote, resolve_alias


def test_run_has_params_curves_fingerprint_and_artifacts(registry) -> None:
    settings, report = registry
    connect(settings)
    client = MlflowClient()
    run = client.get_run(report["run_id"])
    assert run.data.params["model"] == "lightgcn" and run.data.params["epochs"] == "6"
    assert run.data.tags["data_fingerprint"] == report["data_fingerprint"]
    for curve in ("loss", "val_recall_20"):
        history = client.get_metric_history(report["run_id"], curve)
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 2
    assert {"test_recall_20", "test_ndcg_20", "test_popularity_recall_20"} <= set(run.data.metrics)
    assert "weights.pt" in {a.path for a in client.list_artifacts(report["run_id"])}
    version = client.get_model_version(settings.model_name, report["version"])
    assert version.run_id == report["run_id"]
    assert settings.resolved_tracking_uri.startswith("sqlite:///")


def test_registered_model_loads_and_predicts(registry) -> None:
    settings, report = registry
    connect(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{report['version']}")
    bundle = model.unwrap_python_model().bundle
    local = Path(mlflow.artifacts.download_artifacts(report["model_uri"]))
    files = {p.name for p in (local / "artifacts" / "bundle").iterdir()}
    assert files == {"ids.npz", "arrays.npz", "index.faiss", "info.json"}  # embeddings, id maps, FAISS index
    user = str(bundle.users[0])
    out = model.predict(pd.DataFrame({"user_id": [user, "nobody"]}), params={"k": 5})
    assert list(out.columns) == ["user_id", "product_id", "rank", "score"]
    assert (out.groupby("user_id").size() == 5).all()
    bought = {bundle.products[p] for p in bundle.bought(0)}
    assert not bought & set(out[out.user_id == user].product_id)


def test_promote_moves_the_alias_and_rejects_unknown_versions(registry) -> None:
    settings, report = registry
    assert resolve_alias(settings) == report["version"]
    moved = promote(settings, report["version"])
    assert moved["previous"] == report["version"] and moved["version"] == report["version"]
    with pytest.raises(LookupError, match="no version '999'"):
        promote(settings, "999")


def test_promote_without_any_version_says_what_to_do(tmp_path) -> None:
    from sharerank.config import Settings

    with pytest.raises(LookupError, match="sharerank train"):
        promote(Settings(home=tmp_path))
