"""The model registry (MLflow): the tracking store, logging and registering a model, the promotion gate, the
champion alias, and loading a registered version back.

The one module that talks to MLflow's registry, for training (log, register, promote) and serving (resolve
the alias, load a version) alike. It knows nothing about what a model holds: a model is logged as a
"models from code" pyfunc file plus artifact folders, and loading hands back the python model object that
file defines. The default store is a sqlite file under the project-local ``home`` folder; a PostgreSQL URI in
``SHARERANK_TRACKING_URI`` makes it a team store without code changes.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

from sharerank.config import Settings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RegisteredModel:
    """A logged run and the registry version it created."""

    run_id: str
    version: str
    model_uri: str


def connect(settings: Settings) -> str:
    """Points MLflow at the configured store and returns the experiment id (created on first use)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With a tracking server (http://) MLflow writes "View run ... at: URL" to stdout at every run's end, which
    # would break the commands' JSON on stdout; the links are in the server's UI anyway.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow

    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(settings.experiment, artifact_location=settings.resolved_artifact_root)


def log_model(settings: Settings, python_model: str, artifacts: dict[str, str], signature: Any,
              pip_requirements: list[str]) -> RegisteredModel:
    """Logs a pyfunc model in the active run and registers a new version of ``settings.model_name``.

    Args:
        python_model: Path of the "models from code" file that defines the python model (no pickles in the
            registry: MLflow runs the file at load time).
        artifacts: Name → local folder or file, copied into the model.
        signature: The model's ``mlflow.models.ModelSignature``.
        pip_requirements: Given explicitly: MLflow's inference would import the model in a subprocess to guess.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_model needs an active MLflow run")
    with warnings.catch_warnings():
        # The signature documents the input; an input example would make MLflow load and run the model
        # while logging, which costs seconds to minutes on a large catalogue.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, artifacts=artifacts,
                                       signature=signature, pip_requirements=pip_requirements,
                                       registered_model_name=settings.model_name)
    version = str(info.registered_model_version)
    log.info("registered %s version %s from run %s", settings.model_name, version, run.info.run_id)
    return RegisteredModel(run_id=run.info.run_id, version=version, model_uri=info.model_uri)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded back: its python model object and the run that logged it."""

    version: str
    run_id: str
    python_model: Any


class VersionLoadError(RuntimeError):
    """The registry has no such version, or its artifacts could not be loaded."""


def load_version(settings: Settings, version: str) -> LoadedVersion:
    """Loads ``models:/<name>/<version>`` and returns its python model (the object its file defines).

    Raises:
        VersionLoadError: any failure of the registry or the artifacts (the caller keeps what it had).
    """
    import mlflow
    from mlflow import MlflowClient

    connect(settings)
    try:
        meta = MlflowClient().get_model_version(settings.model_name, version)
        python_model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}").unwrap_python_model()
    except Exception as exc:  # noqa: BLE001 - whatever broke, the message says which version and why
        raise VersionLoadError(f"cannot load {settings.model_name} version {version}: {exc}") from exc
    return LoadedVersion(str(version), meta.run_id or "", python_model)


GATE_METRICS = ("val_recall_20", "val_ndcg_20")
"""Validation metrics (logged by training on each version's run) a candidate must not lose on to be promoted."""


class PromotionRefused(Exception):
    """``promote`` would not move the alias: the candidate evaluates worse than the champion, or the two were
    trained on different data (their metrics are not comparable). ``result`` says what was compared; the
    message is one line naming both versions and the metrics. ``force=True`` promotes anyway."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class _Evaluation:
    version: str
    run_id: str | None
    fingerprint: str | None
    metrics: dict[str, float]

    def describe(self) -> str:
        shown = ", ".join(f"{name}={self.metrics[name]:.4f}" if name in self.metrics else f"{name}=missing"
                          for name in GATE_METRICS)
        return f"version {self.version} ({shown})"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "data_fingerprint": self.fingerprint,
                "metrics": {name: self.metrics.get(name) for name in GATE_METRICS}}


def promote(settings: Settings, version: str | None = None, force: bool = False,
            champion_metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Points the serving alias at ``version`` (default: the newest version) and says what moved.

    The gate: when another version is champion, the candidate's run and the champion's run must have trained
    on the same data (tag ``data_fingerprint``) and the candidate must be no worse on any of
    :data:`GATE_METRICS`. ``champion_metrics`` are the champion's figures measured on the candidate's own
    validation split (``sharerank retrain`` does that), which makes the two comparable whatever data the
    champion trained on. ``force=True`` skips the gate (the result still reports the comparison).

    Returns:
        ``model_name, alias, version, previous`` (the champion before, or None), ``promoted`` (True),
        ``forced`` (the gate would have refused), ``reason``, and ``comparison`` (None without a champion).

    Raises:
        LookupError: no registered versions, or no such version.
        PromotionRefused: the gate refused (the alias did not move).
    """
    from mlflow import MlflowClient

    connect(settings)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    if not versions:
        raise LookupError(f"no registered versions of model {settings.model_name!r}; run `sharerank train` first")
    runs = {str(v.version): v.run_id for v in versions}
    target = version or max(runs, key=int)
    if target not in runs:
        raise LookupError(f"model {settings.model_name!r} has no version {target!r}; known: {sorted(runs, key=int)}")
    previous = resolve_alias(settings)
    result: dict[str, Any] = {"model_name": settings.model_name, "alias": settings.alias, "version": target,
                              "previous": previous, "promoted": False, "forced": False, "reason": "",
                              "comparison": None}
    if previous is None or previous == target:
        result["reason"] = "no champion yet" if previous is None else f"version {target} is already the champion"
    else:
        candidate = _evaluation(client, target, runs[target])
        champion = _evaluation(client, previous, runs.get(previous))
        if champion_metrics is not None:  # measured on the candidate's split: comparable by construction
            champion = _Evaluation(previous, champion.run_id, candidate.fingerprint,
                                   {name: float(champion_metrics[name]) for name in GATE_METRICS
                                    if name in champion_metrics})
        refusal = _gate(candidate, champion)
        result["comparison"] = {"candidate": candidate.to_dict(), "champion": champion.to_dict(),
                                "same_data": candidate.fingerprint is not None
                                and candidate.fingerprint == champion.fingerprint}
        if refusal is None:
            result["reason"] = (f"candidate {candidate.describe()} is no worse than champion "
                                f"{champion.describe()} on the same data")
        elif not force:
            result["reason"] = refusal
            raise PromotionRefused(f"not promoting {settings.model_name}: {refusal}; --force promotes anyway",
                                   result)
        else:
            result["forced"], result["reason"] = True, f"forced: {refusal}"
    client.set_registered_model_alias(settings.model_name, settings.alias, target)
    result["promoted"] = True
    log.info("%s@%s → version %s (was %s): %s", settings.model_name, settings.alias, target, previous,
             result["reason"])
    return result


def _evaluation(client, version: str, run_id: str | None) -> _Evaluation:
    """A version's training-run fingerprint and test metrics (empty when it has no run, or it was deleted)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return _Evaluation(version, None, None, {})
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return _Evaluation(version, run_id, None, {})
    return _Evaluation(version, run_id, run.data.tags.get("data_fingerprint"),
                       {name: float(run.data.metrics[name]) for name in GATE_METRICS if name in run.data.metrics})


def _gate(candidate: _Evaluation, champion: _Evaluation) -> str | None:
    """Why ``candidate`` must not replace ``champion``, or None when it may."""
    if candidate.fingerprint is None or champion.fingerprint is None:
        which = "candidate" if candidate.fingerprint is None else "champion"
        return (f"candidate {candidate.describe()} and champion {champion.describe()} are not comparable: the "
                f"{which}'s run has no data_fingerprint")
    if candidate.fingerprint != champion.fingerprint:
        return (f"candidate {candidate.describe()} and champion {champion.describe()} trained on different data "
                f"(fingerprints {candidate.fingerprint[:12]} vs {champion.fingerprint[:12]}); their metrics are not "
                "comparable")
    missing = [name for name in GATE_METRICS if name not in candidate.metrics or name not in champion.metrics]
    if missing:
        return (f"candidate {candidate.describe()} or champion {champion.describe()} lacks {', '.join(missing)}; "
                "the two cannot be compared")
    worse = [name for name in GATE_METRICS if candidate.metrics[name] < champion.metrics[name]]
    if worse:
        return (f"candidate {candidate.describe()} is worse than champion {champion.describe()} on "
                f"{', '.join(worse)} (same data)")
    return None


def resolve_alias(settings: Settings) -> str | None:
    """The version the serving alias points to, or None when it is not set."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(settings.model_name, settings.alias).version)
    except MlflowException:
        return None
