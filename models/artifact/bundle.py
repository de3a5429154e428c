"""The served model: embeddings, FAISS index, id maps and training history as one folder.

Training writes a bundle and logs it to MLflow as the artifact of a pyfunc model; serving loads it back
by registry version. Everything the feed needs at request time is here, so a server never touches the
training data.

Folder layout::

    ids.npz      users, products, category, seller (unicode arrays: no pickle on load; bundles saved
                 before ``seller`` existed load with every seller "")
    arrays.npz   user_embedding, product_embedding (float32), history_indptr, history_indices
                 (what each user bought in the training data, CSR), friends_indptr, friends_indices (each
                 user's social neighbourhood, CSR), popularity, in_stock, category_prior (optional),
                 item_item_indptr, item_item_indices, item_item_data (optional: the model's item-item part),
                 shared_to_indptr, shared_to_indices, shared_to_sharer (optional: who last shared each product
                 to each user, users × products CSR whose data is the sharer's row + 1)
    index.faiss  the product index (row i = product i)
    info.json    model type, hyper-parameters, data fingerprint, metrics
    seeding/     the influence model, communities and activity per user (optional: only when the training
                 data had shares or influence.csv; see :class:`~sharerank.models.seeding.plan.SeedingContext`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from sharerank.models.artifact.index import ProductIndex
from sharerank.models.rings import DEFAULT_THRESHOLD as RING_THRESHOLD
from sharerank.models.seeding.plan import SeedingContext

HEAD_FRACTION = 0.2
"""Share of the catalogue that is the popularity head: the most-bought 20% of products (the "short head" of
long-tail recommendation); every other product, and every product nobody bought, is long tail."""


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
        seller: Seller id of each product ("" when unknown; all "" when omitted, as in older bundles).
        category_prior: True for products the model never trained on, whose embedding is their category's
            prior (see :meth:`with_products`); all False when omitted.
        seeding: Influence model and population for seed planning, over the same users; None without one.
        item_item: The model's item-item part, products × products CSR: a user's score of product ``j`` adds
            ``item_item[i, j]`` for every product ``i`` they bought (see
            :mod:`~sharerank.models.recommenders.factors`); None for a model of vectors only.
        shared_to: users × products CSR of the training data's shares: entry ``[u, p]`` is the row + 1 of the
            latest user who shared ``p`` to ``u`` (GetAudience's "shared to them by" evidence); None without shares.
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
    seller: np.ndarray | None = None
    category_prior: np.ndarray | None = None
    seeding: SeedingContext | None = None
    item_item: sp.csr_matrix | None = None
    shared_to: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        if self.seller is None:
            self.seller = np.full(len(self.products), "", dtype=object)
        if self.category_prior is None:
            self.category_prior = np.zeros(len(self.products), dtype=bool)
        if self.seeding is not None and len(self.seeding.users) != len(self.users):
            raise ValueError("the seeding context must cover the bundle's users, row for row")
        if self.item_item is not None and self.item_item.shape != (len(self.products), len(self.products)):
            raise ValueError(f"item_item must be products × products ({len(self.products)}), got "
                             f"{self.item_item.shape}")

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

    @cached_property
    def category_codes(self) -> np.ndarray:
        """Dense int32 code of each product's category, -1 where unknown (""): cheap equality in re-ranking."""
        return _codes(self.category)

    @cached_property
    def seller_codes(self) -> np.ndarray:
        """Dense int32 code of each product's seller, -1 where unknown ("")."""
        return _codes(self.seller)

    @cached_property
    def long_tail(self) -> np.ndarray:
        """True for products outside the popularity head (see :data:`HEAD_FRACTION`)."""
        tail = np.ones(len(self.products), dtype=bool)
        head = self.popular_order[: int(len(self.products) * HEAD_FRACTION)]
        tail[head[self.popularity[head] > 0]] = False
        return tail

    @cached_property
    def max_popularity(self) -> float:
        """Purchases of the most bought product, at least 1 (so scores divided by it stay finite)."""
        return float(max(self.popularity.max(initial=0), 1))

    @cached_property
    def has_vectors(self) -> bool:
        """Whether the vector part scores anything (an item-item model's vectors are one zero column)."""
        return bool(np.any(self.product_embedding))

    @cached_property
    def has_history(self) -> np.ndarray:
        """True for users with at least one training purchase (whose embeddings carry taste)."""
        return np.diff(self.history.indptr) > 0

    def warm(self) -> ModelBundle:
        """Computes every lazy look-up now, so no request pays for it (call off the request path)."""
        names = ("user_rows", "product_rows", "popular_order", "category_codes", "seller_codes", "long_tail",
                 "max_popularity", "has_vectors", "has_history", "ring_members")
        lazy = (("buyers_matrix",) if self.seeding is not None else ()) + (
            ("shared_to_by_product",) if self.shared_to is not None else ())
        for name in names + lazy:
            getattr(self, name)
        if self.seeding is not None:
            self.seeding.warm()
        return self

    @property
    def model_type(self) -> str:
        return str(self.info.get("model_type", "unknown"))

    def bought(self, user_row: int) -> np.ndarray:
        """Product rows the user bought in the training data."""
        return self.history.indices[self.history.indptr[user_row]:self.history.indptr[user_row + 1]]

    def buyers(self, product_row: int) -> np.ndarray:
        """User rows who bought the product in the training data."""
        return self.buyers_matrix.indices[self.buyers_matrix.indptr[product_row]:
                                          self.buyers_matrix.indptr[product_row + 1]]

    @cached_property
    def buyers_matrix(self) -> sp.csr_matrix:
        """products × users: the transpose of :attr:`history`, for seeding's "already bought" exclusion."""
        return self.history.T.tocsr()

    def shared_by(self, product_row: int) -> np.ndarray:
        """Per user row, the row of the latest user who shared the product to them, -1 for none."""
        out = np.full(len(self.users), -1, dtype=np.int64)
        if self.shared_to is not None:
            column = self.shared_to_by_product
            lo, hi = column.indptr[product_row], column.indptr[product_row + 1]
            out[column.indices[lo:hi]] = column.data[lo:hi].astype(np.int64) - 1
        return out

    @cached_property
    def shared_to_by_product(self) -> sp.csr_matrix:
        """products × users: the transpose of :attr:`shared_to`, one product's recipients in one slice."""
        return sp.csr_matrix(self.shared_to.T.tocsr(), copy=False)

    def item_item_scores(self, bought: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The item-item part of a user's scores: ``(product rows, summed weights)``, rows ascending, over the
        rows of the products ``bought`` (empty without an item-item part)."""
        if self.item_item is None or len(bought) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        rows = self.item_item[np.asarray(bought, dtype=np.int64)]
        # Summed over the rows' own entries: O(nnz) per feed, not a dense catalogue-wide vector.
        columns, at = np.unique(rows.indices, return_inverse=True)
        summed = np.bincount(at, weights=rows.data, minlength=len(columns))
        return columns.astype(np.int64), summed.astype(np.float32)

    def top_products(self, vector: np.ndarray | None, bought: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The model's ``k`` best products (rows, scores; best first) for a user with ``vector`` (None: none)
        who bought ``bought``, those excluded: FAISS over the vectors and the item-item rows of what they
        bought, each candidate scored by both parts. Nothing known (no vector, no item-item part): the most
        bought products, scored by their buyer counts."""
        bought = np.asarray(bought, dtype=np.int64)
        columns, weights = self.item_item_scores(bought)
        if (vector is None or not self.has_vectors) and len(columns) == 0:
            order = self.popular_order[~np.isin(self.popular_order, bought)][:k]
            return order, self.popularity[order].astype(np.float64)
        candidates = [columns]
        if vector is not None and self.has_vectors:
            _, found = self.index.search(vector, k, exclude=bought)
            candidates.append(found[0][found[0] >= 0])
        rows = np.setdiff1d(np.concatenate(candidates), bought)
        scores = np.zeros(len(rows))
        if vector is not None and self.has_vectors:
            scores += self.product_embedding[rows] @ vector
        hit = np.searchsorted(columns, rows)
        found = hit < len(columns)
        found[found] = columns[hit[found]] == rows[found]
        scores[found] += weights[hit[found]]
        best = np.argsort(-scores, kind="stable")[:k]
        return rows[best], scores[best]

    @cached_property
    def ring_members(self) -> frozenset[int]:
        """User rows flagged as collusive-ring members (the seeding context's ring score at least the detector's
        threshold): their purchases are not social proof."""
        if self.seeding is None:
            return frozenset()
        return frozenset(np.flatnonzero(self.seeding.ring_score >= RING_THRESHOLD).tolist())

    def friends_of(self, user_row: int) -> np.ndarray:
        """User rows of the user's social neighbours."""
        return self.friends.indices[self.friends.indptr[user_row]:self.friends.indptr[user_row + 1]]

    def with_products(self, products: np.ndarray, category: np.ndarray, seller: np.ndarray, in_stock: np.ndarray,
                      embedding: np.ndarray) -> ModelBundle:
        """A new bundle with ``products`` appended as category-prior products; this one is left untouched.

        The new rows have no purchases and ``category_prior`` set; their embeddings are added to a copy of
        the index, so FAISS id ``i`` stays product row ``i`` (no retraining of an IVF index).

        Args:
            products, category, seller, in_stock: One entry per new product (ids not in this bundle).
            embedding: ``(len(products), d)`` float32 embeddings of the new products.
        """
        n = len(products)
        if n == 0:
            return self
        vectors = np.ascontiguousarray(embedding, dtype=np.float32)
        index = faiss.clone_index(self.index.index)
        index.add(vectors)
        size = len(self.products) + n
        history = sp.csr_matrix((self.history.data, self.history.indices, self.history.indptr),
                                shape=(len(self.users), size))
        return ModelBundle(
            users=self.users,
            products=np.concatenate([self.products, np.asarray(products, dtype=object)]),
            category=np.concatenate([self.category, np.asarray(category, dtype=object)]),
            in_stock=np.concatenate([self.in_stock, np.asarray(in_stock, dtype=bool)]),
            user_embedding=self.user_embedding,
            product_embedding=np.concatenate([self.product_embedding, vectors]),
            history=history,
            friends=self.friends,
            popularity=np.concatenate([self.popularity, np.zeros(n, dtype=self.popularity.dtype)]),
            index=ProductIndex(index, self.index.nprobe),
            info=dict(self.info),
            seller=np.concatenate([self.seller, np.asarray(seller, dtype=object)]),
            category_prior=np.concatenate([self.category_prior, np.ones(n, dtype=bool)]),
            seeding=self.seeding,
            item_item=None if self.item_item is None else sp.csr_matrix(
                (self.item_item.data, self.item_item.indices,
                 np.r_[self.item_item.indptr, np.full(n, self.item_item.indptr[-1])]), shape=(size, size)),
            shared_to=None if self.shared_to is None else sp.csr_matrix(
                (self.shared_to.data, self.shared_to.indices, self.shared_to.indptr), shape=(len(self.users), size)),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "ids.npz", users=self.users.astype(str), products=self.products.astype(str),
                 category=self.category.astype(str), seller=self.seller.astype(str))
        np.savez(path / "arrays.npz", user_embedding=self.user_embedding.astype(np.float32),
                 product_embedding=self.product_embedding.astype(np.float32),
                 history_indptr=self.history.indptr, history_indices=self.history.indices,
                 friends_indptr=self.friends.indptr, friends_indices=self.friends.indices,
                 popularity=self.popularity, in_stock=self.in_stock, category_prior=self.category_prior,
                 **({} if self.item_item is None else {"item_item_indptr": self.item_item.indptr,
                                                       "item_item_indices": self.item_item.indices,
                                                       "item_item_data": self.item_item.data.astype(np.float32)}),
                 **({} if self.shared_to is None else {"shared_to_indptr": self.shared_to.indptr,
                                                       "shared_to_indices": self.shared_to.indices,
                                                       "shared_to_sharer": self.shared_to.data.astype(np.int64)}))
        self.index.save(path / "index.faiss")
        (path / "info.json").write_text(json.dumps(self.info, indent=2, sort_keys=True, default=str))
        if self.seeding is not None:
            self.seeding.save(path / "seeding")
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
                seller=ids["seller"].astype(object) if "seller" in ids else None,
                category_prior=arrays["category_prior"] if "category_prior" in arrays else None,
                seeding=SeedingContext.load(path / "seeding") if (path / "seeding").is_dir() else None,
                item_item=sp.csr_matrix((arrays["item_item_data"], arrays["item_item_indices"],
                                         arrays["item_item_indptr"]), shape=(len(products), len(products)))
                if "item_item_data" in arrays else None,
                shared_to=sp.csr_matrix((arrays["shared_to_sharer"], arrays["shared_to_indices"],
                                         arrays["shared_to_indptr"]), shape=(len(users), len(products)))
                if "shared_to_sharer" in arrays else None,
            )


def _codes(values: np.ndarray) -> np.ndarray:
    names, codes = np.unique(values.astype(str), return_inverse=True)
    codes = codes.astype(np.int32).reshape(-1)
    if len(names) and names[0] == "":  # "" sorts first: unknown gets -1, the rest stay dense
        codes -= 1
    return codes
