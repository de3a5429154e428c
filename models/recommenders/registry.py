"""Every recommender sharerank can fit, by name: the one list that training, evaluation, the automatic
choice and the CLI read.

Importing this module is cheap (a model's class is imported on first use), so ``sharerank --help`` can list
the names without loading torch. Whether a model is trained by the epoch loop, whether it can be served (every
model has a served form, :mod:`~sharerank.models.recommenders.factors`) and what the automatic choice may tune
are properties of its entry, not separate lists.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Args:
        name: What users type (``--model``, ``--models``, ``--set NAME.KEY=VALUE``).
        target: ``module:Class`` of the implementation, imported by :meth:`load`.
        trainable: Trained by the epoch loop on the purchase graph (embeddings, early stopping); otherwise
            fitted in one step on the interaction matrix (``Class().fit(matrix)``).
        servable: Has a served form (user and product vectors for FAISS, plus an item-item part).
        space: What the automatic choice tunes: ``name -> ("float" | "log" | "int", low, high)`` or
            ``("choice", options)``; for trainable models both training settings (``lr``, ``batch_size``...)
            and model arguments.
        trials: Trials the automatic choice runs for this model (the first one: the defaults).
        starts: Settings the automatic choice tries right after the defaults, before its tuner proposes any
            (published settings of another regime, which a few trials of a tuner rarely reach).
        social: The model argument that weighs the users' social links, for a one-step model whose ``fit`` also
            takes them (``fit(matrix, social=links)``); the automatic choice tunes it only where the data has
            links.
    """

    name: str
    target: str
    trainable: bool
    servable: bool = True
    space: dict[str, tuple] = field(default_factory=dict)
    trials: int = 1
    starts: tuple[dict, ...] = ()
    social: str | None = None

    def load(self) -> type:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("popularity", "sharerank.models.recommenders.popularity:Popularity", trainable=False),
    ModelSpec("itemknn", "sharerank.models.recommenders.itemknn:ItemKNN", trainable=False,
              space={"neighbors": ("int", 20, 1000), "shrink": ("float", 0.0, 50.0)}, trials=8),
    ModelSpec("ease", "sharerank.models.recommenders.ease:EASE", trainable=False,
              space={"reg": ("log", 10.0, 5000.0)}, trials=6),
    ModelSpec("graphfilter", "sharerank.models.recommenders.graph_filter:GraphFilter", trainable=False,
              space={"ideal_weight": ("float", 0.0, 0.6), "num_factors": ("int", 64, 1024),
                     "sharpen_time": ("float", 0.0, 4.0), "user_power": ("float", 0.1, 0.6),
                     "item_power": ("float", 0.3, 0.6), "spectral_power": ("float", 0.0, 1.5),
                     "social_weight": ("float", 0.0, 2.0)}, trials=12,
              # GF-CF's (no sharpening, a flat ideal filter) with the exponents it was measured at: LastFM
              # validation Recall@20 0.2456 against 0.2248 for the defaults of that time; then the defaults
              # with friends (Ciao validation: see GraphFilter's social_weight)
              starts=({"num_factors": 256, "ideal_weight": 0.3, "sharpen_time": 0.0, "spectral_power": 0.0,
                       "user_power": 0.35, "item_power": 0.45}, {"social_weight": 1.0}),
              social="social_weight"),
    ModelSpec("lightgcn", "sharerank.models.recommenders.lightgcn:LightGCN", trainable=True,
              space={"lr": ("log", 1e-3, 3e-2), "reg_weight": ("log", 1e-6, 1e-2), "num_layers": ("int", 1, 3)},
              trials=4),
    ModelSpec("sharegnn", "sharerank.models.recommenders.share_gnn:ShareGNN", trainable=True,
              space={"lr": ("log", 1e-3, 2e-2), "temperature": ("float", 0.05, 0.5), "num_layers": ("int", 1, 3),
                     "popularity_weight": ("choice", (None, 1.0))}, trials=4),
)}
"""Baselines first, then the graph models: the order of ``sharerank eval``'s table."""


def model_names(*, trainable: bool | None = None, servable: bool | None = None) -> list[str]:
    """Names in registry order, optionally only those with the given properties."""
    return [s.name for s in REGISTRY.values()
            if (trainable is None or s.trainable == trainable) and (servable is None or s.servable == servable)]


def spec(name: str) -> ModelSpec:
    """The entry of ``name``.

    Raises:
        ValueError: no such model (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]
