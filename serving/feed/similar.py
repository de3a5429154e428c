"""Similar products: the nearest products to one product's embedding ("more like this")."""

from __future__ import annotations

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.feed.query import Candidate, Reason
from sharerank.serving.feed.sources.embedding import search_available


def similar_products(model: ModelBundle, product_row: int, page_size: int,
                     categories: frozenset[str] = frozenset(), explain: bool = True) -> list[Candidate]:
    """In-stock products closest to ``product_row`` by inner product, the product itself excluded."""
    rows, scores = search_available(model, model.product_embedding[product_row], page_size,
                                    np.array([product_row], dtype=np.int64), categories)
    reasons = (Reason("SIMILAR", f"similar to {model.products[product_row]}"),) if explain else ()
    return [Candidate(int(r), float(s), "Similar", reasons) for r, s in zip(rows, scores, strict=True)]
