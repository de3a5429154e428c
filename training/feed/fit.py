"""Fitting any recommender of the registry by name, with settings, into its served form.

Settings are one flat dict per model: for graph models training settings (``lr``, ``batch_size``...) and model
arguments alike, for the others their constructor's arguments. Baselines fit in one step on the interaction
matrix; graph models train on the training part, stop early on the validation part and (``refit``) train
again on both for the epoch count validation chose, so no model gets less data than another.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from sharerank import progress
from sharerank.dataset.reader import Dataset, Interactions
from sharerank.models.recommenders.factors import Factors, FactorScorer
from sharerank.models.recommenders.graph import friends_matrix, interaction_matrix
from sharerank.models.recommenders.registry import spec
from sharerank.training.feed.split import Split
from sharerank.training.feed.train import TrainConfig, TrainResult, default_config, train_model

_TRAIN_SETTINGS = {f.name for f in fields(TrainConfig)} - {"model", "model_params"}


class SkippedModel(Exception):
    """The model cannot run on this dataset here (e.g. EASE's dense matrix does not fit in memory)."""


@dataclass
class Fitted:
    """A fitted model: its served form and a scorer of it, the settings used, what fitting cost and revealed.

    ``exact`` scores the model itself where its served form approximates it (EASE and the graph filter cut their
    item-item part); ``result`` is a graph model's training result."""

    name: str
    factors: Factors | None
    scorer: Any
    fit_seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    exact: Any = None
    result: TrainResult | None = None

    @property
    def model(self) -> Any:
        """What scores the model itself: ``exact`` where the served form approximates it, else ``scorer``."""
        return self.scorer if self.exact is None else self.exact


def check_settings(name: str, params: dict[str, Any]) -> None:
    """Raises ValueError naming the settings ``name`` does not have (and those it has)."""
    allowed = settings_of(name)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{name} has no setting {unknown[0]!r}; its settings: {', '.join(sorted(allowed))}")


def settings_of(name: str) -> set[str]:
    """The settings of model ``name``: a graph model's training settings and model arguments, or a baseline's
    constructor arguments."""
    entry = spec(name)
    arguments = {a for a in inspect.signature(entry.load()).parameters if a not in ("num_users", "num_products")}
    return arguments | _TRAIN_SETTINGS if entry.trainable else arguments


def train_config(name: str, params: dict[str, Any]) -> TrainConfig:
    """The graph model's default configuration with ``params`` applied."""
    config = default_config(name)
    model_params = dict(config.model_params)
    for key, value in params.items():
        if key in _TRAIN_SETTINGS:
            config = replace(config, **{key: value})
        else:
            model_params[key] = value
    return replace(config, model_params=model_params)


def known_interactions(split: Split) -> Interactions:
    """What every model may learn from: the training and validation purchases."""
    return Interactions(*(np.concatenate([getattr(split.train, f), getattr(split.valid, f)])
                          for f in ("user", "product", "ts", "share")))


def fit_model(name: str, dataset: Dataset, split: Split, params: dict[str, Any] | None = None, *,
              refit: bool = True, served: bool = True,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Fitted:
    """Fits model ``name`` with ``params`` (defaults where absent) on ``split``: a baseline on train +
    validation (``refit``) or train alone, a graph model as the module says. ``served=False`` skips building the
    served form (tuning scores the model itself).

    Raises:
        SkippedModel: the model cannot run on this dataset here.
        ValueError: unknown model or setting.
    """
    params = dict(params or {})
    check_settings(name, params)
    started = time.perf_counter()
    entry = spec(name)
    if not entry.trainable:
        part = known_interactions(split) if refit else split.train
        matrix = interaction_matrix(part, dataset.num_users, dataset.num_products)
        try:
            with progress.stage(f"{name} fit"):  # one step (EASE's inversion): its elapsed time shows
                model = entry.load()(**params)
                model = model.fit(matrix, social=friends_matrix(dataset)) if entry.social else model.fit(matrix)
        except MemoryError as exc:
            raise SkippedModel(str(exc)) from exc
        factors = model.factors() if served else None
        scorer = FactorScorer(factors, matrix) if served else model
        exact = model if served and name in ("ease", "graphfilter") else None
        return Fitted(name, factors, scorer, time.perf_counter() - started, params, {}, exact)
    config = train_config(name, params)
    result = train_model(dataset, split, config, on_epoch=on_epoch)
    info = {"best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "batch_size": result.batch_size, "epochs_run": len(result.history),
            "seconds_to_best": result.seconds_to_best}
    if refit and len(split.valid):
        known = known_interactions(split)
        everything = Split(train=known, valid=known.take(np.zeros(len(known), dtype=bool)), test=split.test)
        refit_epoch = None if on_epoch is None else (
            lambda epoch, figures: on_epoch(epoch, {f"refit_{key}": v for key, v in figures.items()}))
        with progress.stage(f"{name} refit on train + validation"):
            result = train_model(dataset, everything, replace(config, epochs=max(result.best_epoch, 1)),
                                 on_epoch=refit_epoch)
        info["refit_epochs"] = len(result.history)
    factors = Factors(result.user_embedding, result.product_embedding)
    return Fitted(name, factors, FactorScorer(factors, interaction_matrix(split.train, dataset.num_users,
                                                                          dataset.num_products)),
                  time.perf_counter() - started, params, info, None, result)
