"""Serving follows the registry: resolve the alias to a version, load that version, swap it in atomically.

Loading happens off the request path (at start, on ReloadModel, or in the alias poller); requests read
``ModelHolder.current`` once, so a swap never mixes two models within one request. A version that fails
to load leaves the old one serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sharerank.config import Settings
from sharerank.models.bundle import ModelBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A registry version in memory."""

    name: str
    version: str
    run_id: str
    bundle: ModelBundle
    load_time: datetime


class ModelLoadError(RuntimeError):
    """The registry has no such version, or its artifacts could not be loaded."""


def load_version(settings: Settings, version: str) -> LoadedModel:
    """Loads ``models:/<name>/<version>`` through MLflow and unwraps its bundle."""
    import mlflow
    from mlflow import MlflowClient

    from sharerank.training.tracking import connect

    connect(settings)
    try:
        meta = MlflowClient().get_model_version(settings.model_name, version)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
        bundle = pyfunc.unwrap_python_model().bundle
    except Exception as exc:  # any failure of the registry or the artifacts: keep serving the old model
        raise ModelLoadError(f"cannot load {settings.model_name} version {version}: {exc}") from exc
    return LoadedModel(settings.model_name, str(version), meta.run_id or "", bundle, datetime.now(UTC))


class ModelHolder:
    """Holds the serving model; swaps are one reference assignment."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()  # one load at a time; readers never take it
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._listeners: list[Callable[[LoadedModel], None]] = []

    def add_listener(self, listener: Callable[[LoadedModel], None]) -> None:
        """Called with the new model after every swap (health status, metrics)."""
        self._listeners.append(listener)

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self, version: str | None = None) -> tuple[LoadedModel, LoadedModel | None]:
        """Loads ``version`` (default: the alias's) unless it is already serving; returns (now, before).

        Raises:
            ModelLoadError: the alias is unset or the version cannot be loaded; the old model stays.
        """
        from sharerank.training.tracking import connect, resolve_alias

        with self._load_lock:
            before = self._current
            if version is None:
                connect(self.settings)
                version = resolve_alias(self.settings)
                if version is None:
                    raise ModelLoadError(
                        f"alias {self.settings.alias!r} of model {self.settings.model_name!r} is not set; "
                        "run `sharerank promote`")
            if before is not None and before.version == version:
                return before, before
            loaded = load_version(self.settings, version)
            self._current = loaded
            for listener in self._listeners:
                listener(loaded)
            log.info("serving %s version %s (was %s)", loaded.name, loaded.version,
                     before.version if before else None)
            return loaded, before

    def start_polling(self, period: float) -> None:
        """Follows alias changes every ``period`` seconds in a daemon thread."""
        if period <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll, args=(period,), name="alias-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _poll(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.load()
            except ModelLoadError as exc:
                log.error("alias poll: %s; still serving %s", exc, self._current and self._current.version)
