"""Item-based k-nearest-neighbour collaborative filtering with cosine similarity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from sharerank.models.recommenders.factors import Factors
from sharerank.models.recommenders.graph import binary_csr

__all__ = ["ItemKNN"]


class ItemKNN:
    r"""Item-based top-:math:`k` collaborative filtering from `"Item-Based Top-N Recommendation
    Algorithms" <https://doi.org/10.1145/963770.963776>`_ (Deshpande & Karypis, TOIS 2004) with
    (shrunk) cosine similarity.

    .. math::
        \text{sim}(i, j) = \frac{|\mathcal{U}_i \cap \mathcal{U}_j|}
            {\sqrt{|\mathcal{U}_i|}\sqrt{|\mathcal{U}_j|} + \lambda},
        \qquad
        s_{u,j} = \sum_{i \in \mathcal{I}_u,\ j \in \mathcal{N}_k(i)} \text{sim}(i, j),

    where :math:`\mathcal{U}_i` are the buyers of product :math:`i`, :math:`\mathcal{I}_u` the
    products of user :math:`u` and :math:`\mathcal{N}_k(i)` the :math:`k` products most similar to
    :math:`i` (itself excluded). As matrices, scores are :math:`\mathbf{X}\mathbf{W}` with
    :math:`\mathbf{W}` keeping the top-:math:`k` of every row of the similarity matrix: each bought
    product votes for its own neighbours. (Keeping the top-:math:`k` of every column instead, the
    target's neighbours as RecBole does, gave Recall@20 0.1281 vs 0.1178 on Gowalla but 0.2270 vs
    0.2367 on LastFM; the row form is the one the reference figures were measured with.)

    :meth:`fit` builds the co-occurrence (Gram) matrix :math:`\mathbf{X}^\top\mathbf{X}` one block
    of :obj:`block_size` products at a time by sparse products and prunes each block at once;
    only rows with more than :math:`k` similar products are ranked (densely), so memory is at
    most ``block_size × P`` floats plus the sparse :math:`\mathbf{W}` (:math:`P k` entries) for
    any catalogue size. Two cores: Gowalla (41k products) ~10 s, Ciao (105k) ~1 min.

    Args:
        neighbors (int, optional): :math:`k`, the neighbours kept per product.
            (default: :obj:`200`)
        shrink (float, optional): :math:`\lambda`, damps similarities of rarely bought products.
            (default: :obj:`0.0`)
        block_size (int, optional): Products per block of the Gram matrix. (default: :obj:`1024`)

    Shapes:
        - **fit input:** binary interactions :math:`(U, P)`, scipy sparse
        - **score input:** user ids :math:`(N)`
        - **score output:** scores :math:`(N, P)`, float32
    """

    name = "itemknn"

    def __init__(self, neighbors: int = 200, shrink: float = 0.0, block_size: int = 1024) -> None:
        if neighbors < 1:
            raise ValueError(f"'neighbors' must be positive (got {neighbors})")
        if shrink < 0:
            raise ValueError(f"'shrink' must be non-negative (got {shrink})")
        if block_size < 1:
            raise ValueError(f"'block_size' must be positive (got {block_size})")
        self.neighbors = neighbors
        self.shrink = shrink
        self.block_size = block_size
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Forgets the fitted similarities."""
        self._interactions: sp.csr_matrix | None = None
        self.weight: sp.csr_matrix | None = None  # W, products × products: row i = i's neighbours

    def fit(self, interactions: sp.spmatrix) -> ItemKNN:
        """Computes the pruned cosine similarity matrix; returns ``self``."""
        x = binary_csr(interactions)
        num_products = x.shape[1]
        x_t = x.T.tocsr()
        norms = np.sqrt(np.diff(x_t.indptr)).astype(np.float32)
        k = min(self.neighbors, max(num_products - 1, 1))
        rows, cols, vals = [], [], []
        for start in range(0, num_products, self.block_size):
            stop = min(start + self.block_size, num_products)
            gram = (x_t[start:stop] @ x).tocsr()  # co-buyer counts of this block's products
            row_of = np.repeat(np.arange(start, stop), np.diff(gram.indptr))
            gram.data /= norms[row_of] * norms[gram.indices] + self.shrink  # non-zero counts: norms > 0
            gram.data[gram.indices == row_of] = 0.0  # a product is not its own neighbour
            gram.eliminate_zeros()
            # Rows with at most k similar products keep them all; only the others are ranked,
            # densely and just those rows (on sparse catalogues such as Ciao that is a few).
            counts = np.diff(gram.indptr)
            small = np.repeat(counts <= k, counts)
            rows.append(np.repeat(np.arange(start, stop), counts)[small])
            cols.append(gram.indices[small])
            vals.append(gram.data[small])
            big = np.flatnonzero(counts > k)
            if len(big):
                top = torch.topk(torch.from_numpy(gram[big].toarray()), k, dim=1, sorted=False)
                rows.append(np.repeat(start + big, k))
                cols.append(top.indices.reshape(-1).numpy())
                vals.append(top.values.reshape(-1).numpy())
        self.weight = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(num_products, num_products),
            dtype=np.float32,
        )
        self._interactions = x
        return self

    def factors(self) -> Factors:
        r"""The served form: the neighbour weights :math:`\mathbf{W}` as the item-item part."""
        if self.weight is None or self._interactions is None:
            raise RuntimeError("ItemKNN.factors() called before fit()")
        return Factors.item_item_only(self._interactions.shape[0], self.weight)

    @torch.no_grad()
    def score(self, users: np.ndarray | Tensor) -> Tensor:
        """``X[users] @ W``, float32 ``(len(users), P)``."""
        if self.weight is None or self._interactions is None:
            raise RuntimeError("ItemKNN.score() called before fit()")
        users = np.asarray(torch.as_tensor(users).cpu(), dtype=np.int64).reshape(-1)
        scores = (self._interactions[users] @ self.weight).toarray()
        return torch.from_numpy(scores.astype(np.float32, copy=False))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(neighbors={self.neighbors}, shrink={self.shrink})"

