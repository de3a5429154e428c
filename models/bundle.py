"""The served model: embeddings, FAISS index, id maps and training history as one folder.

Training writes a bundle and logs it to MLflow as the artifact of a pyfunc model; serving loads it back
by registry version. Everything the feed needs at request time is here, so a server never touches the
training data.

Folder layout::

    ids.npz      users, products, category (unicode arrays: no pickle on load)
    arrays.npz   user_embedding, product_embedding (float32), history_indptr, history_indices
                 (what each user bought in the training data, CSR), friends_indptr, friends_indices (each
                 user's social neighbourhood, CSR), popularity, in_stock
    index.faiss  the product index (row i = product i)
    info.json    model type, hyper-parameters, data fingerprint, metrics
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sharerank.models.index import ProductIndex


@dataclass
class ModelBundle:
    """A trained model ready to serve.

    Args:
        users, products: External ids; row ``i`` of an embedding belongs to id ``i``.
        category: Category of each product ("" when unknown).
        in_stock: Whether each product can be sold now.
        user_embedding, product_embedding: float32 matrices ``(U, d)`` and ``(P, d)``.
        history: users × products CSR matrix of training purchases (the "already bought" sets).
        friends: users × users CSR matrix of social neighbours (trust or friend links and share partners,
            either direction): whose purchases count as social proof, and whose embeddings stand in
            for a user the model has not seen.
        popularity: Training purchase count of each product (cold-start ranking).
        index: The product index over ``product_embedding``.
        info: Model type, parameters, data fingerprint and metrics (free-form, JSON-able).
    """

    users: np.ndarray
    products: np.ndarray
    category: np.ndarray
    in_stock: np.ndarray
    user_embedding: np.ndarray
    product_embedding: np.ndarray
    history: sp.csr_matrix
    friends: sp.csr_matrix
    popularity: np.ndarray
    index: ProductIndex
    info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def user_rows(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.users.tolist())}

    @cached_property
    def product_rows(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.products.tolist())}

    @cached_property
    def popular_order(self) -> np.ndarray:
        """Product rows by descending popularity (stable: ties keep catalogue order)."""
        return np.argsort(-self.popularity, kind="stable")

    @property
    def model_type(self) -> str:
        return str(self.info.get("model_type", "unknown"))

    def bought(self, user_row: int) -> np.ndarray:
        """Product rows the user bought in the training data."""
        return self.history.indices[self.history.indptr[user_row]:self.history.indptr[user_row + 1]]

    def friends_of(self, user_row: int) -> np.ndarray:
        """User rows of the user's social neighbours."""
        return self.friends.indices[self.friends.indptr[user_row]:self.friends.indptr[user_row + 1]]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "ids.npz", users=self.users.astype(str), products=self.products.astype(str),
                 category=self.category.astype(str))
        np.savez(path / "arrays.npz", user_embedding=self.user_embedding.astype(np.float32),
                 product_embedding=self.product_embedding.astype(np.float32),
                 history_indptr=self.history.indptr, history_indices=self.history.indices,
                 friends_indptr=self.friends.indptr, friends_indices=self.friends.indices,
                 popularity=self.popularity, in_stock=self.in_stock)
        self.index.save(path / "index.faiss")
        (path / "info.json").write_text(json.dumps(self.info, indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        path = Path(path)
        with np.load(path / "ids.npz") as ids, np.load(path / "arrays.npz") as arrays:
            users, products = ids["users"].astype(object), ids["products"].astype(object)
            history = sp.csr_matrix(
                (np.ones(len(arrays["history_indices"]), dtype=np.float32), arrays["history_indices"],
                 arrays["history_indptr"]), shape=(len(users), len(products)))
            friends = sp.csr_matrix(
                (np.ones(len(arrays["friends_indices"]), dtype=np.float32), arrays["friends_indices"],
                 arrays["friends_indptr"]), shape=(len(users), len(users)))
            return cls(
                users=users,
                products=products,
                category=ids["category"].astype(object),
                in_stock=arrays["in_stock"],
                user_embedding=arrays["user_embedding"],
                product_embedding=arrays["product_embedding"],
                history=history,
                friends=friends,
                popularity=arrays["popularity"],
                index=ProductIndex.load(path / "index.faiss"),
                info=json.loads((path / "info.json").read_text()),
            )
