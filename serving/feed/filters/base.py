"""Filter results say what they removed, so ``explain`` and metrics can tell why an item is missing."""

from __future__ import annotations

from dataclasses import dataclass

from sharerank.serving.feed.query import Candidate


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: list[Candidate]
    removed: list[Candidate]


def partition(candidates: list[Candidate], keep) -> FilterResult:
    kept, removed = [], []
    for candidate in candidates:
        (kept if keep(candidate) else removed).append(candidate)
    return FilterResult(kept, removed)
