"""Hold-out splits: the fixed ``test.csv`` when given, else each user's latest purchases by time.

Holding out by time (not at random) is what a deployed feed faces: it predicts tomorrow from today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sharerank.dataset.reader import Dataset, Interactions


@dataclass(frozen=True)
class Split:
    """Train / validation / test interactions over the same id vocabularies."""

    train: Interactions
    valid: Interactions
    test: Interactions


def holdout_last(interactions: Interactions, fraction: float, seed: int = 0) -> tuple[Interactions, Interactions]:
    """Splits off each user's last ``fraction`` of interactions (by time; at random where times are missing).

    A user with n ≥ 2 interactions gives ``max(1, round(fraction * n))`` of them, so every such user is
    scored; a user with one interaction keeps it for training.
    """
    n = len(interactions)
    if n == 0 or fraction <= 0:
        return interactions, interactions.take(np.zeros(n, dtype=bool))
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n)  # random order where times are missing or equal
    ts = np.nan_to_num(interactions.ts, nan=0.0)
    order = np.lexsort((tiebreak, ts, interactions.user))
    users = interactions.user[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, n])
    held = np.where(counts >= 2, np.maximum(1, np.rint(fraction * counts)), 0).astype(np.int64)
    rank_from_end = np.repeat(starts + counts, counts) - np.arange(n) - 1
    is_held = np.empty(n, dtype=bool)
    is_held[order] = rank_from_end < np.repeat(held, counts)
    return interactions.take(~is_held), interactions.take(is_held)


def split_dataset(dataset: Dataset, test_fraction: float = 0.2, valid_fraction: float = 0.1,
                  seed: int = 0) -> Split:
    """Test: ``test.csv`` when the folder has one, else each user's last ``test_fraction`` of purchases.
    Validation (early stopping, model choice): the last ``valid_fraction`` of what remains."""
    if dataset.test is not None:
        rest, test = dataset.purchases, dataset.test
    else:
        rest, test = holdout_last(dataset.purchases, test_fraction, seed)
    train, valid = holdout_last(rest, valid_fraction, seed + 1)
    return Split(train=train, valid=valid, test=test)
