"""Similar products ("more like this"): the nearest products to one product's embedding, and the products the
model's item-item part ties to it (bought together)."""

from __future__ import annotations

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.feed.query import Candidate, Reason
from sharerank.serving.feed.sources.base import sparse_lookup
from sharerank.serving.feed.sources.embedding import search_available


def similar_products(model: ModelBundle, product_row: int, page_size: int,
                     categories: frozenset[str] = frozenset(), explain: bool = True) -> list[Candidate]:
    """In-stock products closest to ``product_row``, the product itself excluded: by inner product of the
    product vectors plus the item-item weight from it (either part alone when the model has only one)."""
    rows = np.empty(0, dtype=np.int64)
    if model.has_vectors:
        rows, _ = search_available(model, model.product_embedding[product_row], page_size,
                                   np.array([product_row], dtype=np.int64), categories)
    columns, weights = model.item_item_scores(np.array([product_row], dtype=np.int64))
    keep = (columns != product_row) & model.in_stock[columns]
    if categories:
        keep &= np.isin(model.category[columns], list(categories))
    rows = np.union1d(rows, columns[keep])
    scores = model.product_embedding[rows] @ model.product_embedding[product_row] if model.has_vectors else \
        np.zeros(len(rows))
    scores = scores + sparse_lookup(columns, weights, rows)
    best = np.argsort(-scores, kind="stable")[:page_size]
    reasons = (Reason("SIMILAR", f"similar to {model.products[product_row]}"),) if explain else ()
    return [Candidate(int(r), float(s), "Similar", reasons) for r, s in zip(rows[best], scores[best], strict=True)]
