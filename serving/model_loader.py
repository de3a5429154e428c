"""Serving follows the registry: resolve the alias to a version, load that version, swap it in atomically.

Loading happens off the request path (at start, on ReloadModel, or in the alias poller); requests read
``ModelHolder.current`` once, so a swap never mixes two models within one request. A version that fails
to load leaves the old one serving. With ``Settings.catalogue_path`` set, every load also adds the
catalogue's products the model never saw, each with its category's prior (:func:`apply_catalogue`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

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
    if settings.catalogue_path is not None:
        bundle = _with_catalogue(bundle, settings.catalogue_path)
    bundle.warm()  # id maps and look-up arrays now, not on the first request
    return LoadedModel(settings.model_name, str(version), meta.run_id or "", bundle, datetime.now(UTC))


def read_catalogue(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads a catalogue as ``(product_id, category, seller, in_stock)`` arrays, one entry per product.

    ``path`` is a ``products.csv`` / ``products.parquet`` in the dataset-folder format, or a dataset folder
    holding one; it is read and validated by the training reader, so the same file serves both.

    Raises:
        DatasetError: the file is missing or malformed (the message names the file, line and column).
    """
    from sharerank.training.dataset import DatasetError, _catalogue, _read

    path = Path(path)
    root = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name not in ("products.csv", "products.parquet"):
        raise DatasetError(str(path), "a catalogue is a products.csv or products.parquet, or a folder holding one")
    table = _read(root, "products")
    if table is None:
        raise DatasetError(str(path), "no products.csv or products.parquet here")
    products, category, _, seller, in_stock = _catalogue(table, [])
    products = products.to_numpy(zero_copy_only=False).astype(object)
    seller = np.full(len(products), "", dtype=object) if seller is None else np.asarray(seller, dtype=object)
    return products, np.asarray(category, dtype=object), seller, in_stock


def apply_catalogue(bundle: ModelBundle, products: np.ndarray, category: np.ndarray, seller: np.ndarray,
                    in_stock: np.ndarray) -> ModelBundle:
    """A new bundle that also serves the catalogue's products ``bundle`` does not know; ``bundle`` is untouched.

    A new product's embedding is its category's prior: the mean embedding of the bundle's products of that
    category (the catalogue-wide mean for a category the model has never seen), so it ranks where its
    category does until the next training learns it. It joins the index, has no purchases (long tail), and
    serves with a ``CATEGORY_PRIOR`` reason. Products the bundle knows keep their trained data.
    """
    known = bundle.product_rows
    new = np.fromiter((p not in known for p in products.tolist()), dtype=bool, count=len(products))
    if not new.any():
        return bundle
    names, codes = np.unique(bundle.category.astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    one_hot = sp.csr_matrix((np.ones(len(codes), dtype=np.float32), (codes, np.arange(len(codes)))),
                            shape=(len(names), len(codes)))
    means = np.asarray(one_hot @ bundle.product_embedding) / np.bincount(codes, minlength=len(names))[:, None]
    overall = bundle.product_embedding.mean(axis=0)
    prior = {name: means[i] for i, name in enumerate(names.tolist())}
    embedding = np.stack([prior.get(c, overall) for c in category[new].astype(str).tolist()]).astype(np.float32)
    return bundle.with_products(products[new], category[new], seller[new], in_stock[new], embedding)


def _with_catalogue(bundle: ModelBundle, path: Path) -> ModelBundle:
    from sharerank.training.dataset import DatasetError

    try:
        catalogue = read_catalogue(path)
    except (DatasetError, OSError) as exc:
        # A bad catalogue costs the new products, not the model: serve what was trained and say why.
        log.error("catalogue %s not applied, serving the model's own products only: %s", path, exc)
        return bundle
    extended = apply_catalogue(bundle, *catalogue)
    log.info("catalogue %s: %d products served with their category's prior", path,
             len(extended.products) - len(bundle.products))
    return extended


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
            self._swap(loaded, before)
            return loaded, before

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
                self.load()
            except ModelLoadError as exc:
                log.error("alias poll: %s; still serving %s", exc, self._current and self._current.version)
