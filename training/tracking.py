"""MLflow: the tracking store, run logging, model registration and the champion alias.

The default store is a sqlite file under the project-local ``home`` folder; a PostgreSQL URI in
``SHARERANK_TRACKING_URI`` makes it a team store without code changes. Serving follows the registry
alias (``champion``) and pins the version it resolved.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from sharerank.config import Settings

log = logging.getLogger(__name__)

# Explicit requirements: MLflow's inference would import the model in a subprocess (slow) to guess them.
PIP_REQUIREMENTS = ["sharerank", "faiss-cpu", "numpy", "scipy", "pandas"]


@dataclass(frozen=True)
class RegisteredModel:
    """A logged run and the registry version it created."""

    run_id: str
    version: str
    model_uri: str


def connect(settings: Settings) -> str:
    """Points MLflow at the configured store and returns the experiment id (created on first use)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(settings.experiment, artifact_location=settings.resolved_artifact_root)


def log_bundle_model(bundle_dir: Path, settings: Settings) -> RegisteredModel:
    """Logs the bundle as a pyfunc model in the active run and registers a new version of it."""
    import mlflow

    from sharerank.models import pyfunc

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle_model needs an active MLflow run")
    with warnings.catch_warnings():
        # The signature documents the input; an input example would make MLflow load and run the model
        # while logging, which costs seconds to minutes on a large catalogue.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc.__file__,  # models from code: no pickled object in the registry
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=pyfunc.SIGNATURE,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=settings.model_name,
        )
    version = str(info.registered_model_version)
    log.info("registered %s version %s from run %s", settings.model_name, version, run.info.run_id)
    return RegisteredModel(run_id=run.info.run_id, version=version, model_uri=info.model_uri)


def promote(settings: Settings, version: str | None = None) -> dict[str, str | None]:
    """Points the serving alias at ``version`` (default: the newest version) and says what moved."""
    from mlflow import MlflowClient

    connect(settings)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    if not versions:
        raise LookupError(f"no registered versions of model {settings.model_name!r}; run `sharerank train` first")
    known = {str(v.version) for v in versions}
    target = version or max(known, key=int)
    if target not in known:
        raise LookupError(f"model {settings.model_name!r} has no version {target!r}; known: {sorted(known, key=int)}")
    previous = resolve_alias(settings)
    client.set_registered_model_alias(settings.model_name, settings.alias, target)
    return {"model_name": settings.model_name, "alias": settings.alias, "version": target, "previous": previous}


def resolve_alias(settings: Settings) -> str | None:
    """The version the serving alias points to, or None when it is not set."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(settings.model_name, settings.alias).version)
    except MlflowException:
        return None
