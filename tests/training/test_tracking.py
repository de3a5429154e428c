"""Training logs to a real MLflow sqlite store, registers a version, and promote moves the alias."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from sharerank.registry import PromotionRefused, connect, promote, resolve_alias


def test_run_has_params_curves_fingerprint_and_artifacts(registry) -> None:
    settings, report = registry
    connect(settings)
    client = MlflowClient()
    run = client.get_run(report["run_id"])
    assert run.data.params["model"] == "lightgcn" and run.data.tags["chosen"] == "lightgcn"
    assert 1 <= int(run.data.params["chosen_epochs"]) <= 6  # the refit runs for the best validation epoch
    assert run.data.tags["data_fingerprint"] == report["data_fingerprint"]
    assert run.data.tags["index_kind"] == "Flat"  # an IVF index would also log its tuned nprobe and recall
    # The simulator logs failed shares too, so influence was learned from them as recorded.
    assert run.data.tags["influence_regime"] == "recorded"
    assert float(run.data.params["influence_recorded_conversion_rate"]) < 0.5
    # The trial is a child run with its training curve; the parent has the refit's loss per epoch.
    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{report['run_id']}'")
    assert [t.data.tags["kind"] for t in trials] == ["trial"] and trials[0].data.tags["model"] == "lightgcn"
    for run_id, curve in ((trials[0].info.run_id, "curve_loss"), (trials[0].info.run_id, "curve_val_recall_20"),
                          (report["run_id"], "loss")):
        history = client.get_metric_history(run_id, curve)
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 1
    curve = [m.value for m in client.get_metric_history(trials[0].info.run_id, "curve_val_recall_20")]
    assert len(curve) == 6 and trials[0].data.metrics["val_recall_20"] == pytest.approx(max(curve))
    logged = set(run.data.metrics)
    assert {"val_recall_20", "val_ndcg_20", "seconds_per_epoch", "seconds_to_best", "fit_seconds"} <= logged
    assert run.data.metrics["val_recall_20"] == trials[0].data.metrics["val_recall_20"]
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
    # Embeddings, id maps, FAISS index, and the influence model for seeding (the world has shares).
    assert files == {"ids.npz", "arrays.npz", "index.faiss", "info.json", "seeding"}
    assert bundle.seeding is not None and len(bundle.seeding.users) == len(bundle.users)
    user = str(bundle.users[0])
    out = model.predict(pd.DataFrame({"user_id": [user, "nobody"]}), params={"k": 5})
    assert list(out.columns) == ["user_id", "product_id", "rank", "score"]
    assert (out.groupby("user_id").size() == 5).all()
    bought = {bundle.products[p] for p in bundle.bought(0)}
    assert not bought & set(out[out.user_id == user].product_id)




def test_promote_without_any_version_says_what_to_do(tmp_path) -> None:
    from sharerank.config import Settings

    with pytest.raises(LookupError, match="sharerank train"):
        promote(Settings(home=tmp_path))


# The promotion gate: a candidate that evaluates worse than the champion, or on other data, is refused.


@pytest.fixture
def gated(registry, request):
    """Settings for a registered model of this test's own (same store), and ``register(metrics, fingerprint)``,
    which logs a run by hand (tag and validation metrics, as ``run_training`` logs them) and registers a version of
    the trained bundle from it. Returns ``(settings, register)``."""
    settings, report = registry
    settings = settings.model_copy(update={"model_name": f"gate-{request.node.name}"[:60]})
    experiment_id = connect(settings)
    client = MlflowClient()
    source = client.get_model_version(registry[0].model_name, report["version"]).source
    client.create_registered_model(settings.model_name)

    def register(recall: float | None, ndcg: float | None, fingerprint: str | None = report["data_fingerprint"],
                 run_id: str | None = None) -> str:
        if run_id is None:
            with mlflow.start_run(experiment_id=experiment_id) as run:
                if fingerprint is not None:
                    mlflow.set_tag("data_fingerprint", fingerprint)
                mlflow.log_metrics({name: value for name, value in
                                    (("val_recall_20", recall), ("val_ndcg_20", ndcg)) if value is not None})
            run_id = run.info.run_id
        return str(client.create_model_version(settings.model_name, source, run_id=run_id).version)

    return settings, register


def test_promote_moves_the_alias_between_versions_and_rejects_unknown_ones(gated) -> None:
    settings, register = gated
    first, second = register(0.10, 0.08), register(0.10, 0.08)
    assert resolve_alias(settings) is None
    promote(settings, first)
    assert resolve_alias(settings) == first
    moved = promote(settings, second)
    assert (moved["previous"], moved["version"], moved["promoted"]) == (first, second, True)
    assert resolve_alias(settings) == second
    with pytest.raises(LookupError, match="no version '999'"):
        promote(settings, "999")
    assert resolve_alias(settings) == second  # a refused promotion leaves the alias where it was


def test_a_better_candidate_on_the_same_data_is_promoted(gated) -> None:
    settings, register = gated
    first, better, equal = register(0.10, 0.08), register(0.12, 0.09), register(0.12, 0.09)
    assert promote(settings, first)["reason"] == "no champion yet"
    moved = promote(settings)  # default: the newest version (equal to `better`: ties pass)
    assert moved["version"] == equal and moved["previous"] == first and moved["promoted"] and not moved["forced"]
    comparison = moved["comparison"]
    assert comparison["same_data"] and comparison["candidate"]["metrics"] == {"val_recall_20": 0.12,
                                                                              "val_ndcg_20": 0.09}
    assert comparison["champion"]["version"] == first and "no worse" in moved["reason"]
    assert promote(settings, better)["previous"] == equal and resolve_alias(settings) == better
    assert promote(settings, better)["reason"] == f"version {better} is already the champion"


@pytest.mark.parametrize(("recall", "ndcg", "worse"), [(0.08, 0.06, "val_recall_20, val_ndcg_20"),
                                                       (0.11, 0.07, "val_ndcg_20"), (0.09, 0.09, "val_recall_20")])
def test_a_worse_candidate_is_refused_unless_forced(gated, recall: float, ndcg: float, worse: str) -> None:
    settings, register = gated
    champion, candidate = register(0.10, 0.08), register(recall, ndcg)
    promote(settings, champion)
    with pytest.raises(PromotionRefused) as refused:
        promote(settings, candidate)
    message = str(refused.value)
    assert "\n" not in message and f"version {candidate} (val_recall_20={recall:.4f}" in message
    assert f"version {champion} (val_recall_20=0.1000, val_ndcg_20=0.0800)" in message
    assert f"worse than champion version {champion}" in message and f"on {worse}" in message
    assert refused.value.result["promoted"] is False and refused.value.result["version"] == candidate
    assert resolve_alias(settings) == champion  # the alias did not move
    forced = promote(settings, candidate, force=True)
    assert forced["promoted"] and forced["forced"] and forced["reason"].startswith("forced: candidate")
    assert resolve_alias(settings) == candidate


def test_champion_figures_measured_on_the_candidates_split_replace_its_logged_ones(gated) -> None:
    """`sharerank retrain` scores the champion on the new split itself: those figures decide, even when the
    champion's own run was on other data or logged better ones."""
    settings, register = gated
    champion = register(0.50, 0.40, fingerprint="f" * 64)
    candidate = register(0.10, 0.08)
    promote(settings, champion)
    with pytest.raises(PromotionRefused, match="val_recall_20=0.1200"):
        promote(settings, candidate, champion_metrics={"val_recall_20": 0.12, "val_ndcg_20": 0.05})
    moved = promote(settings, candidate, champion_metrics={"val_recall_20": 0.09, "val_ndcg_20": 0.07})
    assert moved["promoted"] and moved["comparison"]["champion"]["metrics"] == {"val_recall_20": 0.09,
                                                                                "val_ndcg_20": 0.07}


def test_metrics_of_different_data_are_not_comparable(gated) -> None:
    settings, register = gated
    champion = register(0.10, 0.08)
    other_data, no_fingerprint = register(0.50, 0.40, fingerprint="f" * 64), register(0.50, 0.40, fingerprint=None)
    promote(settings, champion)
    for candidate, says in ((other_data, "trained on different data"), (no_fingerprint, "no data_fingerprint")):
        with pytest.raises(PromotionRefused, match="not comparable") as refused:
            promote(settings, candidate)
        assert says in str(refused.value) and f"version {champion} (" in str(refused.value)
        assert not refused.value.result["comparison"]["same_data"]
    assert resolve_alias(settings) == champion
    assert promote(settings, other_data, force=True)["forced"]


def test_a_champion_without_validation_metrics_cannot_be_compared(gated) -> None:
    settings, register = gated
    champion, candidate = register(None, None), register(0.2, 0.2)
    promote(settings, champion)
    with pytest.raises(PromotionRefused, match="lacks val_recall_20, val_ndcg_20"):
        promote(settings, candidate)


def test_cli_refuses_a_version_trained_worse_with_exit_2(gated, registry, tiny_world, monkeypatch) -> None:
    """Real training: a 1-epoch model against the 6-epoch champion of the same data, through `sharerank promote`."""
    import json

    from conftest import SMALL_LIGHTGCN
    from typer.testing import CliRunner

    from sharerank.cli import app
    from sharerank.training.jobs import run_training

    settings, register = gated
    champion = register(None, None, run_id=registry[1]["run_id"])  # the session's trained version
    promote(settings, champion)
    weak = run_training([tiny_world], settings, model="lightgcn", params={**SMALL_LIGHTGCN, "epochs": 1})
    assert weak["metrics"]["val_recall_20"] < registry[1]["metrics"]["val_recall_20"]  # the premise
    monkeypatch.setenv("SHARERANK_HOME", str(settings.home))
    monkeypatch.setenv("SHARERANK_MODEL_NAME", settings.model_name)
    runner = CliRunner()
    refused = runner.invoke(app, ["promote", "--version", weak["version"], "--json"])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: not promoting")
    assert f"version {weak['version']} (val_recall_20=" in lines[0] and f"version {champion} (" in lines[0]
    result = json.loads(refused.stdout)
    assert result["promoted"] is False and result["previous"] == champion and result["comparison"]["same_data"]
    assert resolve_alias(settings) == champion
    forced = runner.invoke(app, ["promote", "--version", weak["version"], "--force", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["forced"] is True
    assert resolve_alias(settings) == weak["version"]


def test_build_bundle_tunes_an_ivf_index_on_its_users_and_saves_nprobe(tiny_world, monkeypatch, tmp_path) -> None:
    import numpy as np

    from sharerank.dataset.reader import load_dataset
    from sharerank.models.artifact.bundle import ModelBundle
    from sharerank.models.artifact.index import ProductIndex
    from sharerank.models.recommenders.factors import Factors
    from sharerank.training import bundle as jobs

    class SmallIVF(ProductIndex):  # the tiny world's catalogue is far below the IVF threshold
        @classmethod
        def build(cls, embeddings, **_):
            return ProductIndex.build(embeddings, exact_below=100, nlist=16)

    monkeypatch.setattr(jobs, "ProductIndex", SmallIVF)
    dataset = load_dataset(tiny_world)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 16)).astype(np.float32)
    clustered = lambda n: (centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, 16))).astype(np.float32)  # noqa: E731
    result = Factors(clustered(dataset.num_users), clustered(dataset.num_products))
    bundle = jobs.build_bundle(dataset, result, {"model_type": "test"})
    report = bundle.info["index"]
    assert report["kind"] == "IVF16,Flat" and report["reached"] and report["recall"] >= jobs.TUNING_RECALL
    assert report["queries"] == min(int(bundle.has_history.sum()), jobs.TUNING_USERS)
    assert bundle.index.nprobe == report["nprobe"] and report["tried"][-1] == [report["nprobe"], report["recall"]]
    again = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    assert again.index.nprobe == report["nprobe"] and again.info["index"] == report
    monkeypatch.undo()
    assert jobs.build_bundle(dataset, result, {}).info["index"] == {"kind": "Flat"}  # exact: nothing to tune
