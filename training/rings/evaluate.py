"""`sharerank rings`: the collusive groups of a dataset folder with their evidence, and on a simulated world
with rings, precision and recall against its truth.

Truth metrics (``truth=True``, needs ``truth/rings.csv``):

- **users**: precision = flagged users who are ring members / flagged users; recall = ring members flagged /
  ring members (the target of issue 15: precision >= 0.9 at recall >= 0.8 on a 100k world);
- **groups**: a flagged group is correct when most of its members belong to one true ring; a true ring is
  found when a flagged group holds at least half of its members;
- **sweep**: user precision and recall at other thresholds, and ``best_f1_threshold``, the one of highest user
  F1: how :data:`~sharerank.models.rings.DEFAULT_THRESHOLD` was chosen, on a validation world.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sharerank.dataset.reader import DatasetError, has_truth, load_dataset, read_truth
from sharerank.dataset.schema import TRUTH
from sharerank.models.rings import DEFAULT_THRESHOLD, RingScores, dataset_ring_scores

SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Thresholds of the truth sweep: 0.05, 0.10, ..., 0.95."""


def run_rings(data_dir: str | Path, *, threshold: float = DEFAULT_THRESHOLD, truth: bool = False,
              limit: int | None = None) -> dict[str, Any]:
    """Detect rings in the folder; list the flagged groups (at most ``limit``, best first) with evidence.

    Raises:
        DatasetError: the folder is malformed, has no shares.csv, or (with ``truth``) no truth/rings.csv.
        ValueError: a threshold outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    started = time.perf_counter()
    dataset = load_dataset(data_dir, with_test=False)
    if dataset.shares is None:
        raise DatasetError(str(data_dir), "no shares.csv: rings are found in who shared to whom")
    if truth and not (has_truth(data_dir) and TRUTH["rings"].path(data_dir).exists()):
        raise DatasetError(str(TRUTH["rings"].path(data_dir)), "no such file (a world simulated with --rings has it)")
    loaded = time.perf_counter()
    scores = dataset_ring_scores(dataset)
    detected = time.perf_counter()

    flagged = scores.flagged_groups(threshold)
    users = dataset.users
    report: dict[str, Any] = {
        "data": str(data_dir), "threshold": threshold, "users": int(dataset.num_users),
        "shares": int(len(dataset.shares.id)), "candidate_groups": len(scores.groups),
        "flagged_groups": len(flagged), "flagged_users": int(scores.flagged_users(threshold).size),
        "groups": [_group_json(g, users, scores, threshold) for g in flagged[:limit]],
        "seconds": {"load": round(loaded - started, 3), "detect": round(detected - loaded, 3)},
    }
    if truth:
        report["truth"] = truth_metrics(scores, _true_rings(data_dir, users), threshold)
    return report


def truth_metrics(scores: RingScores, ring_of: np.ndarray, threshold: float) -> dict[str, Any]:
    """User and group precision/recall of ``scores`` at ``threshold`` against ``ring_of`` (true ring per user,
    -1: none), plus the user sweep."""
    members = ring_of >= 0
    correct_groups = 0
    found = set()
    for group in scores.flagged_groups(threshold):
        rings, counts = np.unique(ring_of[group.members], return_counts=True)
        majority = counts.argmax()
        if rings[majority] >= 0 and counts[majority] * 2 > group.members.size:
            correct_groups += 1
        for ring, count in zip(rings, counts, strict=True):
            if ring >= 0 and count * 2 >= int((ring_of == ring).sum()):
                found.add(int(ring))
    n_flagged = len(scores.flagged_groups(threshold))
    sweep = [{"threshold": t, **_precision_recall(scores.user >= t, members)} for t in SWEEP]
    n_rings = int(ring_of.max(initial=-1)) + 1
    return {
        "ring_members": int(members.sum()), "rings": n_rings,
        "users": _precision_recall(scores.user >= threshold, members),
        "groups": {"precision": round(correct_groups / n_flagged, 4) if n_flagged else None,
                   "recall": round(len(found) / n_rings, 4) if n_rings else None,
                   "flagged": n_flagged, "correct": correct_groups, "rings_found": len(found)},
        "sweep": sweep,
        "best_f1_threshold": max(sweep, key=lambda row: (_f1(row), -row["threshold"]))["threshold"],
    }


def _f1(row: dict[str, Any]) -> float:
    precision, recall = row["precision"] or 0.0, row["recall"] or 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _precision_recall(flagged: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    hits = int((flagged & members).sum())
    return {"precision": round(hits / int(flagged.sum()), 4) if flagged.any() else None,
            "recall": round(hits / int(members.sum()), 4) if members.any() else None,
            "flagged": int(flagged.sum()), "true_positives": hits}


def _true_rings(data_dir: str | Path, users: np.ndarray) -> np.ndarray:
    table = read_truth(data_dir, "rings")
    index = {user: i for i, user in enumerate(users)}
    ring_of = np.full(users.size, -1, dtype=np.int64)
    for user, ring in zip(table.column("user_id").to_pylist(), table.column("ring").to_pylist(), strict=True):
        if user not in index:
            raise DatasetError(f"truth/{TRUTH['rings'].name}.csv", f"unknown user {user!r}")
        ring_of[index[user]] = int(ring)
    return ring_of


def _group_json(group, users: np.ndarray, scores: RingScores, threshold: float) -> dict[str, Any]:
    member_scores = scores.user[group.members]
    return {
        "score": round(group.score, 4),
        "members": sorted(str(users[u]) for u in group.members[member_scores >= threshold]),
        "attached": sorted(str(users[u]) for u in group.members[member_scores < threshold]),
        "internal_shares": group.internal_shares, "internal_purchases": group.internal_purchases,
        "repeat_products": group.repeat_products, "outside_shares": group.outside_shares,
        "outside_purchases": group.outside_purchases, "outside_reach": round(group.outside_reach, 4),
        "reciprocal_pairs": group.reciprocal_pairs, "density": round(group.density, 4),
    }
