"""The served form's item-item part keeps what moves scores most, in either direction, and a weighted sum of
served forms is itself one."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from sharerank.models.recommenders.factors import Factors, FactorScorer, sparsify_rows, weighted_sum


def test_sparsified_rows_keep_the_largest_magnitudes_with_their_signs() -> None:
    dense = np.array([[0.1, -5.0, 2.0, 0.2], [3.0, 0.0, -0.5, 1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, -2.0, 0.5, 4.0]],
                     dtype=np.float32)
    kept = sparsify_rows(lambda ids: dense[ids], 4, 2, block_size=3)
    assert kept.toarray().tolist() == [[0.0, -5.0, 2.0, 0.0], [3.0, 0.0, 0.0, 1.0], [0.0] * 4,
                                       [0.0, -2.0, 0.0, 4.0]]
    assert kept.nnz == 6  # explicit zeros dropped


def test_a_weighted_sum_of_served_forms_scores_as_the_weighted_sum_of_their_scores() -> None:
    rng = np.random.default_rng(0)
    users, products = 30, 40
    history = sp.random(users, products, density=0.1, random_state=1, format="csr")
    history.data[:] = 1.0
    vectors = Factors(rng.normal(size=(users, 8)), rng.normal(size=(products, 8)),
                      sp.random(products, products, density=0.2, random_state=2))
    item_item_only = Factors.item_item_only(users, sp.random(products, products, density=0.2, random_state=3))
    blended = weighted_sum([(vectors, 0.7), (item_item_only, 0.2)])
    assert blended.user.shape[1] == 8  # the item-item-only member brings no zero column
    everyone = np.arange(users)
    expected = (0.7 * FactorScorer(vectors, history).score(everyone)
                + 0.2 * FactorScorer(item_item_only, history).score(everyone))
    assert expected.abs().max() > 1.0  # the premise: both parts move the scores
    torch.testing.assert_close(FactorScorer(blended, history).score(everyone), expected, rtol=1e-5, atol=1e-5)
