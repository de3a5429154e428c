"""GetAudience's scorer on hand-built inputs: the blend, the top-k with exclusions, the latest sharer, reasons."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sharerank.models.audience.scorer import (
    AudienceEvidence,
    AudienceWeights,
    category_counts,
    evidence,
    latest_sharers,
    reasons,
    top_audience,
)


def test_friends_who_bought_lift_a_user_above_a_better_taste_match() -> None:
    found = AudienceEvidence(affinity=np.array([1.0, 0.9, 0.0, -1.0]), friends_bought=np.array([0, 3, 0, 0]),
                             category_bought=np.zeros(4, int), shared_by=np.full(4, -1))
    assert np.argmax(found.scores()) == 1
    assert np.argmax(found.scores(AudienceWeights(0.0, 0.0, 0.0))) == 0


def test_scores_standardise_the_affinity_per_product_column() -> None:
    affinity = np.array([[1.0, 100.0], [2.0, 200.0], [3.0, 300.0]])
    zeros = np.zeros((3, 2), int)
    scores = AudienceEvidence(affinity, zeros, zeros, np.full((3, 2), -1)).scores()
    assert scores[:, 0] == pytest.approx(scores[:, 1])


def test_top_audience_leaves_out_the_excluded_and_breaks_ties_by_row() -> None:
    scores = np.array([0.5, 2.0, 2.0, 1.0, 3.0])
    assert top_audience(scores, 3, exclude=np.array([4])).tolist() == [1, 2, 3]
    assert top_audience(scores, 10, exclude=np.array([0, 1])).tolist() == [4, 2, 3]


def test_evidence_counts_friends_and_category_history_and_adds_the_item_item_part() -> None:
    history = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=np.float32))  # users × products
    friends = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=np.float32))
    item_item = sp.csc_matrix(np.array([[0, 0, 0.5], [0, 0, 0.25], [0, 0, 0]], dtype=np.float32))
    codes = np.array([0, 0, 1])
    bought = sp.csr_matrix(np.array([[0], [1], [0]]))  # user 1 bought product 2
    found = evidence(np.ones((3, 1), np.float32), np.array([[2.0]], np.float32), history, item_item[:, [2]], friends,
                     bought, category_counts(history, codes, codes[[2]]), np.full((3, 1), -1)).column(0)
    assert found.affinity == pytest.approx([2.75, 2.0, 2.25])
    assert found.friends_bought.tolist() == [1, 0, 0]
    assert found.category_bought.tolist() == [0, 0, 0]
    assert category_counts(history, codes, np.array([0, -1]))[:, 0].tolist() == [2, 0, 1]
    assert category_counts(history, codes, np.array([0, -1]))[:, 1].tolist() == [0, 0, 0]


def test_latest_sharers_keeps_the_newest_share_per_recipient_and_product() -> None:
    matrix = latest_sharers(recipient=np.array([0, 0, 0, 1]), product=np.array([2, 2, 1, 2]),
                            sharer=np.array([0, 3, 4, 3]), ts=np.array([5.0, 9.0, 1.0, 2.0]), num_users=5,
                            num_products=3)
    assert matrix[0, 2] - 1 == 3 and matrix[0, 1] - 1 == 4 and matrix[1, 2] - 1 == 3
    assert matrix.nnz == 3


def test_reasons_name_the_sharer_friends_and_category_and_end_with_the_taste_match() -> None:
    found = AudienceEvidence(np.array([0.1, 0.5, 0.9]), np.array([0, 2, 1]), np.array([0, 4, 1]),
                             np.array([-1, 0, -1]))
    texts = [r.text for r in reasons(found, 1, "Beauty", np.array(["u0", "u1", "u2"], dtype=object))]
    assert texts == ["shared to them by u0", "2 friends bought it", "bought 4 products in Beauty",
                     "taste matches it better than 33% of users"]
    assert [r.kind for r in reasons(found, 2, "Beauty", np.array(["u0", "u1", "u2"]))] == [
        "FRIENDS_BOUGHT", "SIMILAR", "PERSONALIZED"]
