"""The popularity recommender: every user gets the best-selling products."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from sharerank.models.recommenders.factors import Factors

__all__ = ["Popularity"]


class Popularity:
    r"""Scores every product by its number of distinct buyers, the same list for every user.

    .. math::
        s_{u,i} = |\{v : r_{v,i} \neq 0\}|

    The floor any personalised model must clear (LightGCN paper's "Pop"). The scores are exact
    integers in float32 up to :math:`2^{24}` buyers.

    Shapes:
        - **fit input:** binary interactions :math:`(U, P)`, scipy sparse
        - **score input:** user ids :math:`(N)`
        - **score output:** scores :math:`(N, P)`, float32
    """

    name = "popularity"

    def __init__(self) -> None:
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Forgets the fitted counts."""
        self.counts: Tensor | None = None

    def fit(self, interactions: sp.spmatrix) -> Popularity:
        """Counts the distinct buyers of every product; returns ``self``."""
        if not sp.issparse(interactions) or interactions.ndim != 2:
            raise TypeError(f"'interactions' must be a 2-D scipy sparse matrix (got {type(interactions).__name__})")
        x = sp.csr_matrix(interactions, copy=True)
        x.sum_duplicates()
        x.eliminate_zeros()
        counts = np.bincount(x.indices, minlength=x.shape[1])
        self.counts = torch.from_numpy(counts.astype(np.float32))
        self.num_users = x.shape[0]
        return self

    def factors(self) -> Factors:
        """The served form: a one for every user, each product's buyer count."""
        if self.counts is None:
            raise RuntimeError("Popularity.factors() called before fit()")
        return Factors(np.ones((self.num_users, 1), np.float32), self.counts.numpy()[:, None])

    @torch.no_grad()
    def score(self, users: np.ndarray | Tensor) -> Tensor:
        """The buyer counts repeated for every user, float32 ``(len(users), P)``; a fresh tensor
        the caller may write into (to mask bought products)."""
        if self.counts is None:
            raise RuntimeError("Popularity.score() called before fit()")
        num_users = len(np.asarray(torch.as_tensor(users).cpu()).reshape(-1))
        return self.counts.repeat(num_users, 1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"
