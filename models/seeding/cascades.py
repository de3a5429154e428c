"""Cascades in a log: who started each one, and how often each user starts one.

A cascade log (``cascades.csv``) lists its cascades: each product is one, started by its first adopter. In a
share log a cascade is a tree of shares: a sharer who bought the product through a share continues that
share's cascade, anyone else starts one (its root).
"""

from __future__ import annotations

import numpy as np

from sharerank.dataset.reader import Dataset


def share_roots(dataset: Dataset) -> np.ndarray:
    """The root sharer of every share's cascade: a sharer who bought the product through a share inherits
    that share's root, hop after hop; anyone else is the root of what they share."""
    shares, purchases = dataset.shares, dataset.purchases
    n_products = dataset.num_products
    via = {}
    attributed = purchases.share >= 0
    for user, product, share in zip(purchases.user[attributed].tolist(), purchases.product[attributed].tolist(),
                                    purchases.share[attributed].tolist(), strict=True):
        via[user * n_products + product] = share
    order = np.argsort(shares.ts, kind="stable")
    root = shares.sharer.astype(np.int64).copy()
    for s in order.tolist():  # time order: a parent share's root is known before its children's
        parent = via.get(int(shares.sharer[s]) * n_products + int(shares.product[s]))
        if parent is not None and parent != s:
            root[s] = root[parent]
    return root


def first_adopters(dataset: Dataset) -> np.ndarray:
    """Per product, the user of its earliest purchase (an organic one first among ties); -1 when none."""
    purchases = dataset.purchases
    ts = np.nan_to_num(purchases.ts, nan=np.inf)
    order = np.lexsort((purchases.share >= 0, ts, purchases.product))
    product = purchases.product[order]
    first = np.r_[True, product[1:] != product[:-1]] if len(product) else np.zeros(0, dtype=bool)
    root = np.full(dataset.num_products, -1, dtype=np.int64)
    root[product[first]] = purchases.user[order][first]
    return root


def cascade_sizes(dataset: Dataset) -> np.ndarray:
    """Per product of a cascade log, its distinct adopters."""
    key = np.unique(dataset.purchases.user * dataset.num_products + dataset.purchases.product)
    return np.bincount(key % dataset.num_products, minlength=dataset.num_products)


def initiations(dataset: Dataset, share_mask: np.ndarray, product_mask: np.ndarray) -> tuple[np.ndarray, int]:
    """How many of the selected cascades each user started, and how many cascades there were: a cascade log's
    products (in ``product_mask``), else the share trees of the shares in ``share_mask``."""
    if dataset.cascade_split is not None:
        roots = first_adopters(dataset)[product_mask]
        roots = roots[roots >= 0]
        return np.bincount(roots, minlength=dataset.num_users), int(len(roots))
    root = share_roots(dataset)[share_mask]
    started = np.unique(root * dataset.num_products + dataset.shares.product[share_mask])
    return np.bincount(started // dataset.num_products, minlength=dataset.num_users), int(len(started))
