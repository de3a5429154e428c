"""Collusive ring detection from the share and purchase logs: a score per user and per group (`ring_scores`)."""

from sharerank.models.rings.detect import (
    DEFAULT_THRESHOLD,
    RingGroup,
    RingScores,
    dataset_ring_scores,
    ring_scores,
)

__all__ = ["DEFAULT_THRESHOLD", "RingGroup", "RingScores", "dataset_ring_scores", "ring_scores"]
