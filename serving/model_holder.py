"""Serving follows the registry: resolve the alias to a version, load that version, swap it in atomically.

Loading happens off the request path (at start, on ReloadModel, or in the alias poller); requests read
``ModelHolder.current`` once, so a swap never mixes two models within one request. A version that fails
to load leaves the old one serving. A version loaded by name is *pinned* (a rollback that sticks): the
poller keeps it while the alias still names the version it named at pin time, and follows the alias again
once it moves (or on an explicit unpin). With ``Settings.pin_file`` set the pin survives a restart.

With ``Settings.catalogue_path`` set, every load also adds the catalogue's products the model never saw, each
with its category's prior (:func:`~sharerank.models.artifact.catalogue.apply_catalogue`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sharerank import registry
from sharerank.config import Settings
from sharerank.dataset.reader import DatasetError, read_products
from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.artifact.catalogue import apply_catalogue

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
    """Loads registry version ``version`` and unwraps its bundle, extended by the configured catalogue.

    Raises:
        ModelLoadError: the registry has no such version, or its artifacts could not be loaded.
    """
    try:
        loaded = registry.load_version(settings, version)
        bundle = loaded.python_model.bundle
    except (registry.VersionLoadError, AttributeError) as exc:
        raise ModelLoadError(str(exc)) from exc
    if settings.catalogue_path is not None:
        bundle = _with_catalogue(bundle, settings.catalogue_path)
    bundle.warm()  # id maps and look-up arrays now, not on the first request
    return LoadedModel(settings.model_name, loaded.version, loaded.run_id, bundle, datetime.now(UTC))


def _with_catalogue(bundle: ModelBundle, path: Path) -> ModelBundle:
    try:
        catalogue = read_products(path)
    except (DatasetError, OSError) as exc:
        # A bad catalogue costs the new products, not the model: serve what was trained and say why.
        log.error("catalogue %s not applied, serving the model's own products only: %s", path, exc)
        return bundle
    extended = apply_catalogue(bundle, *catalogue)
    log.info("catalogue %s: %d products served with their category's prior", path,
             len(extended.products) - len(bundle.products))
    return extended


@dataclass(frozen=True)
class Pin:
    """A version loaded by name, and the version the alias named then (None: unset); the pin lasts until the
    alias names another version."""

    version: str
    alias_version: str | None


class ModelHolder:
    """Holds the serving model; swaps are one reference assignment."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pin = _read_pin(settings.pin_file) if settings.pin_file is not None else None
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()  # one load at a time; readers never take it
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._listeners: list[Callable[[LoadedModel], None]] = []
        self.polls = 0  # alias polls done (tests wait on it)

    def add_listener(self, listener: Callable[[LoadedModel], None]) -> None:
        """Called with the new model after every swap (health status, metrics)."""
        self._listeners.append(listener)

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def pin(self) -> Pin | None:
        """The pin in force, if any."""
        return self._pin

    def load(self, version: str | None = None) -> tuple[LoadedModel, LoadedModel | None]:
        """Loads and pins ``version``; without one, unpins and loads the alias's. Returns (now, before); a
        version already serving is not loaded again.

        Raises:
            ModelLoadError: the alias is unset or the version cannot be loaded; the old model and pin stay.
        """
        with self._load_lock:
            if version is None:
                loaded = self._load_locked(self._alias_version(required=True))
                self._set_pin(None)
                return loaded
            alias_version = self._alias_version(required=False)
            loaded = self._load_locked(version)
            self._set_pin(Pin(version, alias_version))
            return loaded

    def follow(self) -> tuple[LoadedModel, LoadedModel | None]:
        """Serves the alias's version, or the pinned one while the alias still names what it named at pin time
        (start-up and the poller). Returns (now, before).

        Raises:
            ModelLoadError: as :meth:`load`.
        """
        with self._load_lock:
            pin = self._pin
            alias_version = self._alias_version(required=pin is None)
            if pin is not None and pin.alias_version == alias_version:
                return self._load_locked(pin.version)
            if pin is not None:
                log.info("alias %r moved to version %s: the pin of version %s ends", self.settings.alias,
                         alias_version, pin.version)
                if alias_version is None:
                    raise ModelLoadError(f"alias {self.settings.alias!r} was unset; still pinned to {pin.version}")
            loaded = self._load_locked(alias_version)
            self._set_pin(None)
            return loaded

    def _alias_version(self, required: bool) -> str | None:
        registry.connect(self.settings)
        version = registry.resolve_alias(self.settings)
        if version is None and required:
            raise ModelLoadError(f"alias {self.settings.alias!r} of model {self.settings.model_name!r} is not set; "
                                 "run `sharerank promote`")
        return version

    def _load_locked(self, version: str) -> tuple[LoadedModel, LoadedModel | None]:
        before = self._current
        if before is not None and before.version == version:
            return before, before
        loaded = load_version(self.settings, version)
        self._swap(loaded, before)
        return loaded, before

    def _set_pin(self, pin: Pin | None) -> None:
        if pin != self._pin and pin is not None:
            log.info("pinned version %s (the alias named %s)", pin.version, pin.alias_version)
        self._pin = pin
        if self.settings.pin_file is not None:
            _write_pin(self.settings.pin_file, pin)

    def serve_bundle(self, bundle: ModelBundle, version: str, *, run_id: str = "",
                     name: str | None = None) -> tuple[LoadedModel, LoadedModel | None]:
        """Serves a bundle built in memory as ``version``, without the registry; returns (now, before).

        For benchmarks, tests and tools that make a bundle themselves: the same atomic swap and listeners as
        :meth:`load`, and the bundle is warmed first (off the request path). The alias poller, when running,
        replaces it at its next poll if the alias names another version: serve with polling off.
        """
        loaded = LoadedModel(name or self.settings.model_name, str(version), run_id, bundle.warm(),
                             datetime.now(UTC))
        with self._load_lock:
            before = self._current
            self._swap(loaded, before)
        return loaded, before

    def _swap(self, loaded: LoadedModel, before: LoadedModel | None) -> None:
        self._current = loaded
        for listener in self._listeners:
            listener(loaded)
        log.info("serving %s version %s (was %s)", loaded.name, loaded.version, before.version if before else None)

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
                self.follow()
            except ModelLoadError as exc:
                log.error("alias poll: %s; still serving %s", exc, self._current and self._current.version)
            self.polls += 1


def _read_pin(path: Path) -> Pin | None:
    try:
        data = json.loads(path.read_text())
        return Pin(str(data["version"]), None if data["alias_version"] is None else str(data["alias_version"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("pin file %s unreadable (%s): following the alias", path, exc)
        return None


def _write_pin(path: Path, pin: Pin | None) -> None:
    if pin is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"version": pin.version, "alias_version": pin.alias_version}))
    os.replace(temporary, path)
