"""Every recommender sharerank can fit, by name: the one list that training, evaluation and the CLI read.

Importing this module is cheap (a model's class is imported on first use), so ``sharerank --help`` can list
the names without loading torch. Whether a model is trained by the epoch loop, and whether it can be served,
are properties of its entry, not separate lists.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Args:
        name: What users type (``--model``, ``--models``, ``--set NAME.KEY=VALUE``).
        target: ``module:Class`` of the implementation, imported by :meth:`load`.
        trainable: Trained by the epoch loop on the purchase graph (embeddings, early stopping); otherwise
            fitted in one step on the interaction matrix (``Class().fit(matrix)``).
        servable: Produces user and product embeddings that the FAISS-backed feed can serve.
    """

    name: str
    target: str
    trainable: bool
    servable: bool

    def load(self) -> type:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("popularity", "sharerank.models.recommenders.popularity:Popularity", trainable=False, servable=False),
    ModelSpec("itemknn", "sharerank.models.recommenders.itemknn:ItemKNN", trainable=False, servable=False),
    ModelSpec("ease", "sharerank.models.recommenders.ease:EASE", trainable=False, servable=False),
    ModelSpec("graphfilter", "sharerank.models.recommenders.graph_filter:GraphFilter", trainable=False, servable=False),
    ModelSpec("lightgcn", "sharerank.models.recommenders.lightgcn:LightGCN", trainable=True, servable=True),
    ModelSpec("sharegnn", "sharerank.models.recommenders.share_gnn:ShareGNN", trainable=True, servable=True),
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
