"""Filter results say what they removed, so ``explain`` and metrics can tell why an item is missing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sharerank.serving.feed.query import EMPTY, Candidate, Candidates


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: Candidates
    removed: Candidates


def drop_products(candidates: Iterable[Candidate], products: frozenset[int]) -> FilterResult:
    """Removes the candidates whose product is in ``products``; one set operation when none is (the usual
    case: the ranked sources excluded them in-search already)."""
    batch = Candidates.of(candidates)
    if not products:
        return FilterResult(batch, EMPTY)
    rows = batch.row_list
    if products.isdisjoint(rows):
        return FilterResult(batch, EMPTY)
    return partition_mask(batch, np.fromiter((r not in products for r in rows), dtype=bool, count=len(rows)))


def partition_mask(candidates: Iterable[Candidate], keep: np.ndarray) -> FilterResult:
    """Splits by a boolean array aligned with ``candidates`` (array look-ups done once for all)."""
    batch = Candidates.of(candidates)
    if keep.all():
        return FilterResult(batch, EMPTY)
    return FilterResult(*batch.split(keep))


def rows_of(candidates: Iterable[Candidate]) -> np.ndarray:
    """Product rows of ``candidates``, in order."""
    if isinstance(candidates, Candidates):
        return candidates.rows
    candidates = list(candidates)
    return np.fromiter((c.product for c in candidates), dtype=np.int64, count=len(candidates))
