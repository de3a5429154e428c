"""Graph building: the dataset folder as a PyG heterogeneous graph of users and products.

Node types ``user`` and ``product`` (with a ``category`` code per product); edge types
``(user, purchased, product)`` and its reverse, ``(user, shared, user)`` carrying the shared product,
and ``(user, follows, user)`` from ``social.csv``. Models take the parts they use; the LightGCN
baseline reads only the purchase edges.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from sharerank.dataset.reader import Dataset, Interactions

PURCHASED = ("user", "purchased", "product")
PURCHASED_BY = ("product", "purchased_by", "user")
SHARED = ("user", "shared", "user")
FOLLOWS = ("user", "follows", "user")


def unique_pairs(interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, product) pairs: repeat purchases add no new edge to the graph."""
    keys = np.unique(interactions.user.astype(np.int64) << 32 | interactions.product.astype(np.int64))
    return (keys >> 32).astype(np.int64), (keys & 0xFFFFFFFF).astype(np.int64)


def binary_csr(interactions: sp.spmatrix) -> sp.csr_matrix:
    """The interactions (a baseline's input) as a canonical float32 CSR matrix with 1 at every non-zero entry."""
    if not sp.issparse(interactions) or interactions.ndim != 2:
        raise TypeError(f"'interactions' must be a 2-D scipy sparse matrix (got {type(interactions).__name__})")
    x = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.data[:] = 1.0
    return x


def interaction_matrix(interactions: Interactions, num_users: int, num_products: int) -> sp.csr_matrix:
    """Binary users × products CSR matrix of the distinct pairs (the 'already bought' sets)."""
    users, products = unique_pairs(interactions)
    data = np.ones(len(users), dtype=np.float32)
    return sp.csr_matrix((data, (users, products)), shape=(num_users, num_products))


def friends_matrix(dataset: Dataset) -> sp.csr_matrix:
    """Binary, symmetric users × users matrix: social links and share partners, in either direction."""
    a, b = dataset.network_arcs()
    n = dataset.num_users
    matrix = sp.csr_matrix((np.ones(2 * len(a), dtype=np.float32), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    matrix.data[:] = 1.0  # duplicates summed: back to binary
    return matrix


def build_graph(dataset: Dataset, train: Interactions) -> HeteroData:
    """Builds the heterogeneous graph from the training purchases and all shares and social links.

    Only ``train`` purchases become edges, so held-out purchases never leak into message passing.
    """
    data = HeteroData()
    data["user"].num_nodes = dataset.num_users
    data["product"].num_nodes = dataset.num_products
    categories, codes = np.unique(dataset.category.astype(str), return_inverse=True)
    data["product"].category = torch.from_numpy(codes.astype(np.int64))
    data.category_names = list(categories)

    users, products = unique_pairs(train)
    purchased = torch.from_numpy(np.stack([users, products]))
    data[PURCHASED].edge_index = purchased
    data[PURCHASED_BY].edge_index = purchased.flip(0)
    if dataset.shares is not None:
        s = dataset.shares
        data[SHARED].edge_index = torch.from_numpy(np.stack([s.sharer, s.recipient]))
        data[SHARED].product = torch.from_numpy(s.product)
        data[SHARED].time = torch.tensor(s.ts)  # a copy: arrow-backed arrays are read-only
    if dataset.social is not None:
        data[FOLLOWS].edge_index = torch.from_numpy(np.stack([dataset.social.src, dataset.social.dst]))
        data[FOLLOWS].edge_weight = torch.from_numpy(dataset.social.value.astype(np.float32))
    return data
