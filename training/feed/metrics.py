"""Offline top-k ranking evaluation: full-catalogue ranking, the popularity baseline and metrics.

Accuracy follows the LightGCN paper's evaluation (https://arxiv.org/abs/2002.02126), so figures
compare with published ones on the same split: every product a user did not buy in training is
ranked, Recall@k divides by the user's number of test products, NDCG@k uses binary relevance with the
ideal DCG over ``min(k, |test|)`` positions, and both average over users with at least one test
product. Those definitions are PyG's :mod:`torch_geometric.metrics`, which are used as they are.
Catalogue coverage and long-tail share sit beside accuracy, because a model that only repeats
bestsellers can score well on recall and still be useless for discovery.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.metrics import (
    LinkPredAveragePopularity,
    LinkPredCoverage,
    LinkPredHitRatio,
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredRecall,
)

__all__ = [
    "LinkPredLongTail",
    "evaluate_ranking",
    "popularity_top_k",
    "product_popularity",
    "rank_top_k",
    "ranking_metrics",
]


class LinkPredLongTail(LinkPredAveragePopularity):
    r"""Long-tail share @ :math:`k`: the fraction of recommended slots that hold a product outside
    the head, the :obj:`head_fraction` most popular products by training interactions.

    .. math::
        \text{LongTail@}k = \frac{1}{|\mathcal{U}|\,k} \sum_{u \in \mathcal{U}}
        \sum_{i \in \text{top-}k(u)} \mathbb{1}[i \notin \mathcal{H}],
        \qquad |\mathcal{H}| = \operatorname{round}(\text{head\_fraction} \cdot P)

    This is the average recommendation popularity with a 0/1 "is in the tail" score per product,
    so it reuses PyG's accumulation. Ties at the head boundary go to the lower product id, so the
    head is deterministic. Every evaluated user counts, whether or not they have test products.

    Args:
        k (int): The number of top-:math:`k` predictions to evaluate against.
        popularity (torch.Tensor or numpy.ndarray): Training interaction count of every product,
            *e.g.* from :func:`product_popularity`.
        head_fraction (float, optional): The share of the catalogue that counts as the head.
            (default: :obj:`0.2`)
    """

    # Unlike average popularity, more tail exposure is the goal of this metric.
    higher_is_better: bool = True

    def __init__(self, k: int, popularity: Tensor | np.ndarray, head_fraction: float = 0.2) -> None:
        if not 0.0 <= head_fraction <= 1.0:
            raise ValueError(f"'head_fraction' must lie in [0, 1] (got {head_fraction})")
        popularity = torch.as_tensor(popularity)
        num_head = round(head_fraction * popularity.numel())
        head = torch.argsort(popularity, descending=True, stable=True)[:num_head]
        in_tail = torch.ones(popularity.numel())
        in_tail[head] = 0.0
        super().__init__(k, in_tail)
        self.head_fraction = head_fraction

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, head_fraction={self.head_fraction})"


def product_popularity(train_csr: sp.csr_matrix) -> np.ndarray:
    """Returns the number of training interactions of every product: stored entries per column of
    the users × products matrix (for a canonical matrix, the number of distinct buyers)."""
    return np.bincount(train_csr.indices, minlength=train_csr.shape[1]).astype(np.int64)


def ranking_metrics(
    ks: Sequence[int],
    num_products: int,
    popularity: Tensor | np.ndarray,
) -> LinkPredMetricCollection:
    """Builds the metric collection keyed ``Recall@k``, ``NDCG@k``, ``HitRate@k``, ``Coverage@k``
    and ``LongTail@k`` for every ``k`` in :obj:`ks`. The collection shares one relevance matrix
    across metrics per :meth:`update`; each metric declares ``higher_is_better``.

    Args:
        ks (Sequence[int]): The cut-offs, each positive.
        num_products (int): The catalogue size, the denominator of coverage.
        popularity (torch.Tensor or numpy.ndarray): Training interaction count per product, which
            defines the long tail.
    """
    metrics: dict[str, torch.nn.Module] = {}
    for k in ks:
        metrics[f"Recall@{k}"] = LinkPredRecall(k)
        metrics[f"NDCG@{k}"] = LinkPredNDCG(k)
        metrics[f"HitRate@{k}"] = LinkPredHitRatio(k)
        metrics[f"Coverage@{k}"] = LinkPredCoverage(k, num_products)
        metrics[f"LongTail@{k}"] = LinkPredLongTail(k, popularity)
    return LinkPredMetricCollection(metrics)  # type: ignore[arg-type]


def _rows_as_coo(matrix: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (position in ``users``, column) of every stored entry in the rows ``users``."""
    rows = matrix[users]
    rows.sum_duplicates()
    positions = np.repeat(np.arange(len(users)), np.diff(rows.indptr))
    return positions, rows.indices


@torch.no_grad()
def rank_top_k(
    user_emb: Tensor,
    product_emb: Tensor,
    users: Tensor | np.ndarray,
    train_csr: sp.csr_matrix,
    k: int,
    batch_size: int = 2048,
) -> Tensor:
    r"""Ranks the whole catalogue by dot product for each user and returns the :obj:`k` best
    products the user did not buy in training.

    Scores are computed :obj:`batch_size` users at a time, so memory stays at
    ``batch_size × num_products`` floats (2048 × 40k: 330 MB) however many users are ranked.
    Training products are excluded by setting their score to :math:`-\infty`, as in the paper's
    protocol; a user with fewer than :obj:`k` unbought products is an error rather than a list
    padded with bought ones.

    Args:
        user_emb (torch.Tensor): Embeddings of all users :math:`(U, F)`.
        product_emb (torch.Tensor): Embeddings of all products :math:`(P, F)`.
        users (torch.Tensor or numpy.ndarray): The users to rank for :math:`(N)`.
        train_csr (scipy.sparse.csr_matrix): Training interactions, users × products.
        k (int): The list length.
        batch_size (int, optional): Users scored per matmul. (default: :obj:`2048`)

    Returns:
        Product ids :math:`(N, k)`, best first.
    """
    num_products = product_emb.size(0)
    if train_csr.shape != (user_emb.size(0), num_products):
        raise ValueError(
            f"'train_csr' must have shape ({user_emb.size(0)}, {num_products}) (got {train_csr.shape})"
        )
    if not 0 < k <= num_products:
        raise ValueError(f"'k' must lie in [1, {num_products}] (got {k})")
    if batch_size <= 0:
        raise ValueError(f"'batch_size' must be positive (got {batch_size})")

    users = torch.as_tensor(users, dtype=torch.long).cpu()
    users_np = users.numpy()
    unbought = num_products - np.diff(train_csr.indptr)[users_np]
    if (unbought < k).any():
        user = int(users_np[np.argmax(unbought < k)])
        raise ValueError(f"user {user} has fewer than k={k} products left to recommend")

    out = torch.empty(users.numel(), k, dtype=torch.long)
    for start in range(0, users.numel(), batch_size):
        batch = users_np[start : start + batch_size]
        scores = user_emb[torch.from_numpy(batch).to(user_emb.device)] @ product_emb.T
        positions, products = _rows_as_coo(train_csr, batch)
        scores[torch.from_numpy(positions), torch.from_numpy(products).long()] = float("-inf")
        out[start : start + len(batch)] = scores.topk(k, dim=1).indices.cpu()
    return out


def popularity_top_k(
    train_csr: sp.csr_matrix,
    users: Tensor | np.ndarray,
    k: int,
    batch_size: int = 2048,
) -> Tensor:
    """The popularity baseline: for each user, the :obj:`k` products with most training
    interactions that the user has not bought.

    The popularity order is written as a one-dimensional product "embedding" (its rank, which is
    exact in float32 for fewer than 2^24 products) with every user embedding equal to 1, so
    exclusion and batching are exactly those of :func:`rank_top_k`. Ties go to the lower product id.

    Args:
        train_csr (scipy.sparse.csr_matrix): Training interactions, users × products.
        users (torch.Tensor or numpy.ndarray): The users to rank for :math:`(N)`.
        k (int): The list length.
        batch_size (int, optional): Users scored per matmul. (default: :obj:`2048`)

    Returns:
        Product ids :math:`(N, k)`, best first.
    """
    num_users, num_products = train_csr.shape
    order = np.argsort(-product_popularity(train_csr), kind="stable")
    rank_score = np.empty(num_products, dtype=np.float32)
    rank_score[order] = np.arange(num_products, 0, -1, dtype=np.float32)
    return rank_top_k(
        torch.ones(num_users, 1),
        torch.from_numpy(rank_score).view(-1, 1),
        users,
        train_csr,
        k,
        batch_size=batch_size,
    )


def evaluate_ranking(
    top_k: Tensor | np.ndarray,
    test_csr: sp.csr_matrix,
    users: Tensor | np.ndarray,
    num_products: int,
    popularity: Tensor | np.ndarray,
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    r"""Scores ranked lists against held-out purchases.

    Args:
        top_k (torch.Tensor or numpy.ndarray): Ranked product ids per user :math:`(N, K)`, best
            first, with :math:`K \geq \max(ks)`, *e.g.* from :func:`rank_top_k`.
        test_csr (scipy.sparse.csr_matrix): Held-out interactions, users × products; every stored
            entry is a relevant (user, product) pair.
        users (torch.Tensor or numpy.ndarray): The user of each row of :obj:`top_k` :math:`(N)`.
        num_products (int): The catalogue size.
        popularity (torch.Tensor or numpy.ndarray): Training interaction count per product.
        ks (Sequence[int], optional): The cut-offs. (default: :obj:`(10, 20)`)

    Returns:
        ``{"Recall@10": ..., "NDCG@10": ..., "HitRate@10": ..., "Coverage@10": ...,
        "LongTail@10": ..., "Recall@20": ...}``. Accuracy metrics average over the users with at
        least one test product; coverage and long-tail share over all :obj:`users`.
    """
    top_k = torch.as_tensor(top_k, dtype=torch.long)
    users_np = np.asarray(torch.as_tensor(users).cpu())
    if top_k.dim() != 2 or top_k.size(0) != len(users_np):
        raise ValueError(f"'top_k' must have shape ({len(users_np)}, K) (got {tuple(top_k.shape)})")
    if len(ks) == 0 or max(ks) > top_k.size(1):
        raise ValueError(f"'ks' must be non-empty and at most K={top_k.size(1)} (got {tuple(ks)})")
    if top_k.numel() > 0 and not 0 <= int(top_k.min()) <= int(top_k.max()) < num_products:
        raise ValueError(f"'top_k' must hold product ids in [0, {num_products})")

    metrics = ranking_metrics(ks, num_products, popularity)
    positions, products = _rows_as_coo(test_csr, users_np)
    edge_label_index = torch.stack([torch.from_numpy(positions), torch.from_numpy(products).long()])
    metrics.update(top_k, edge_label_index)
    return {name: float(value) for name, value in metrics.compute().items()}
