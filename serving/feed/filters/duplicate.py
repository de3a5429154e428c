"""One candidate per product, however many sources found it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sharerank.serving.feed.filters.base import FilterResult, partition_mask
from sharerank.serving.feed.query import EMPTY, Candidate, Candidates, FeedQuery


class DuplicateFilter:
    """Keeps the first candidate of each product (sources run in pipeline order, the ranked ones first) and
    removes the rest. Social proof does not depend on which copy survives: its scorer reads the query."""

    name = "Duplicate"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        batch = Candidates.of(candidates)
        if len(set(batch.row_list)) == len(batch):  # the usual case: one ranked source, no social ones
            return FilterResult(batch, EMPTY)
        rows = batch.rows
        # A stable sort puts each product's copies together, first copy first: every later copy is a repeat.
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        repeat = ordered[1:] == ordered[:-1]
        if not repeat.any():
            return FilterResult(batch, EMPTY)
        keep = np.ones(len(rows), dtype=bool)
        keep[order[1:][repeat]] = False
        return partition_mask(batch, keep)
