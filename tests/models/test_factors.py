"""The served form's item-item part keeps what moves scores most, in either direction."""

from __future__ import annotations

import numpy as np

from sharerank.models.recommenders.factors import sparsify_rows


def test_sparsified_rows_keep_the_largest_magnitudes_with_their_signs() -> None:
    dense = np.array([[0.1, -5.0, 2.0, 0.2], [3.0, 0.0, -0.5, 1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, -2.0, 0.5, 4.0]],
                     dtype=np.float32)
    kept = sparsify_rows(lambda ids: dense[ids], 4, 2, block_size=3)
    assert kept.toarray().tolist() == [[0.0, -5.0, 2.0, 0.0], [3.0, 0.0, 0.0, 1.0], [0.0] * 4,
                                       [0.0, -2.0, 0.0, 4.0]]
    assert kept.nnz == 6  # explicit zeros dropped
