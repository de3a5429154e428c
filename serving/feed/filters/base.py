"""Filter results say what they removed, so ``explain`` and metrics can tell why an item is missing."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress

import numpy as np

from sharerank.serving.feed.query import Candidate


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: list[Candidate]
    removed: list[Candidate]


def drop_products(candidates: list[Candidate], products: frozenset[int]) -> FilterResult:
    """Removes the candidates whose product is in ``products``; one pass when none is (the usual case: the
    ranked sources excluded them in-search already)."""
    if not products:
        return FilterResult(candidates, [])
    removed = [c for c in candidates if c.product in products]
    if not removed:
        return FilterResult(candidates, [])
    return FilterResult([c for c in candidates if c.product not in products], removed)


def partition_mask(candidates: list[Candidate], keep: np.ndarray) -> FilterResult:
    """Splits by a boolean array aligned with ``candidates`` (array look-ups done once for all)."""
    if keep.all():
        return FilterResult(candidates, [])
    return FilterResult(list(compress(candidates, keep.tolist())), list(compress(candidates, (~keep).tolist())))


def rows_of(candidates: list[Candidate]) -> np.ndarray:
    """Product rows of ``candidates``, in order."""
    return np.fromiter((c.product for c in candidates), dtype=np.int64, count=len(candidates))
