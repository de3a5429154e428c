"""A training-free graph signal filter over the item–item graph (GF-CF / BSPM family)."""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from numba import njit, prange
from torch import Tensor

from sharerank.models.recommenders.factors import DEFAULT_NEIGHBOURS, Factors, sparsify_rows
from sharerank.models.recommenders.graph import binary_csr

__all__ = ["GraphFilter"]


class GraphFilter:
    r"""The blurring–sharpening graph filter of the `"Blurring-Sharpening Process Models for
    Collaborative Filtering" <https://arxiv.org/abs/2211.09324>`_ paper (BSPM, SIGIR'23), which
    contains GF-CF from `"How Powerful is Graph Convolution for Recommendation?"
    <https://arxiv.org/abs/2108.07567>`_ (CIKM'21) as the special case without sharpening.

    With :math:`\mathbf{R}` the binary users × products matrix, the normalised matrix and the
    item–item graph are

    .. math::
        \tilde{\mathbf{R}} = \lambda_1^{-1/2}\,\mathbf{D}_U^{-a} \mathbf{R} \mathbf{D}_I^{-b}, \qquad
        \tilde{\mathbf{P}} = \tilde{\mathbf{R}}^{\top} \tilde{\mathbf{R}},

    where :math:`\lambda_1` scales the largest eigenvalue of :math:`\tilde{\mathbf{P}}` to 1, as the
    ODE times assume (it is 1 already at the papers' symmetric :math:`a = b = 1/2`). Lowering the
    exponents, the user's more (:math:`a`) than the product's (:math:`b`), lets heavy users and
    popular products weigh more in the item–item graph (SGFCF, KDD'24, generalises the
    normalisation the same way),

    and a user's row :math:`\mathbf{x}` of :math:`\mathbf{R}` is filtered in three steps:

    .. math::
        \begin{aligned}
        \text{blur:}\quad & \tfrac{d\mathbf{r}}{dt} = \mathbf{r}(\tilde{\mathbf{P}} - \mathbf{I}),
            \ \mathbf{r}(0) = \mathbf{x}, \ \text{Euler to } T_b
            \quad (T_b = 1,\ 1 \text{ step}: \ \mathbf{r}_b = \mathbf{x} \tilde{\mathbf{P}}) \\
        \text{ideal low-pass:}\quad & \mathbf{r}_i = \mathbf{x} \mathbf{D}_I^{-b} \mathbf{V}_k
            \mathbf{W}_k \mathbf{V}_k^{\top} \mathbf{D}_I^{b} \\
        \text{sharpen:}\quad & \tfrac{d\mathbf{r}}{dt} = -\mathbf{r} \tilde{\mathbf{P}}, \
            \mathbf{r}(0) = \mathbf{r}_b + \beta \mathbf{r}_i, \ \text{RK4 to } T_s,
            \qquad \text{score} = \mathbf{r}(T_s),
        \end{aligned}

    where :math:`\mathbf{V}_k` holds the top-:math:`k` right singular vectors of
    :math:`\tilde{\mathbf{R}}` (the top eigenvectors of :math:`\tilde{\mathbf{P}}`) and
    :math:`\mathbf{W}_k = \operatorname{diag}(w_j)`, :math:`w_j \propto (\sigma_j / \sigma_1)^{p}` scaled to
    mean 1, weighs them by their singular values (SGFCF's :math:`\sigma^\beta`, KDD'24): at :math:`p = 0` the
    papers' flat ideal filter; above it a roll-off instead of a hard cut at :math:`k`, so a larger :math:`k`
    adds the middle of the spectrum at a smaller weight. Fitted with a social graph and :obj:`social_weight`
    :math:`\gamma > 0`, the ideal term filters :math:`\mathbf{x} + \gamma\,\bar{\mathbf{x}}_F` instead of
    :math:`\mathbf{x}`, :math:`\bar{\mathbf{x}}_F` the mean row of the user's friends: the low-pass part of what
    their friends bought (a graph filter over the joint user–item–social graph, one hop of it; the served
    user vector takes it in, the product vectors stay as they are). That is the
    paper's early merge (BSPM-EM); with :obj:`early_merge=False` the ideal term is added after
    sharpening (:math:`\text{score} = \mathbf{r}(T_s) + \beta \mathbf{r}_i`), and
    :obj:`sharpen_time=0`, :obj:`early_merge=False` is GF-CF (:math:`\mathbf{x}\tilde{\mathbf{P}}
    + \beta \mathbf{r}_i`; the paper's Gowalla setting is :math:`k = 256`, :math:`\beta = 0.3`,
    :math:`a = b = 1/2`).

    Nothing is learnt. :meth:`fit` normalises the matrix and finds :math:`\mathbf{V}_k` by block
    Lanczos on the smaller of :math:`\tilde{\mathbf{R}}^\top\tilde{\mathbf{R}}` and
    :math:`\tilde{\mathbf{R}}\tilde{\mathbf{R}}^\top` (applied as two sparse products, never
    formed; solved densely when small), which is ~10× faster than ARPACK's ``svds`` here and
    ranks as well. :meth:`score` applies
    :math:`\tilde{\mathbf{P}}` as :math:`(\mathbf{X}\tilde{\mathbf{R}}^{\top})\tilde{\mathbf{R}}`
    with a multi-threaded CSR kernel, :obj:`chunk_size` users at a time, so memory is a few
    ``chunk_size × (U + P)`` blocks however many users are scored. One RK4 step costs four
    applications of :math:`\tilde{\mathbf{P}}`.

    The defaults were chosen on a validation split carved from Gowalla's training part (a random
    10% of each user's purchases; 8,000 users to search, 14,000 others to confirm): the paper's
    Gowalla setting (BSPM-EM: :math:`k = 448`, :math:`\beta = 0.2`, :math:`T_s = 2.5`, flat, at
    :math:`a = b = 1/2`), then exponents :math:`a = 0.35`, :math:`b = 0.45`, and now :math:`k = 768`
    with the roll-off :math:`p = 0.5`, :math:`\beta = 0.1`, :math:`T_s = 2.0`, :math:`a = 0.3`,
    :math:`b = 0.4` (confirming users: Recall@20 / NDCG@20 0.2292 / 0.1298 → 0.2343 / 0.1347).
    On the LightGCN Gowalla test split the served form gives 0.1924 / 0.1591, no better than the
    previous defaults' 0.1930 / 0.1598 (paper: 0.1920 / 0.1597; LightGCN 0.1824 / 0.1554); on
    LastFM, never searched, 0.2613 / 0.2649 against 0.2338 / 0.2375. On Gowalla :meth:`fit` and the
    served form's item-item part take ~106 s on two cores; exact scoring costs five applications of
    :math:`\tilde{\mathbf{P}}` per user. GF-CF's setting
    (:math:`k = 256`, :math:`\beta = 0.3`, no sharpening, flat) is the other regime the automatic
    choice starts from.

    Args:
        num_factors (int, optional): :math:`k`, the rank of the ideal low-pass filter; 0 turns it
            off. (default: :obj:`768`)
        ideal_weight (float, optional): :math:`\beta`, the weight of the ideal low-pass term.
            (default: :obj:`0.1`)
        blur_time (float, optional): :math:`T_b`, the end time of the blurring ODE.
            (default: :obj:`1.0`)
        blur_steps (int, optional): Euler steps of the blurring ODE. (default: :obj:`1`)
        sharpen_time (float, optional): :math:`T_s`, the end time of the sharpening ODE; 0 turns
            sharpening off. (default: :obj:`2.0`)
        sharpen_steps (int, optional): RK4 steps of the sharpening ODE. (default: :obj:`1`)
        early_merge (bool, optional): Add the ideal low-pass term before sharpening (BSPM-EM)
            rather than after it. (default: :obj:`True`)
        user_power (float, optional): :math:`a`, the users' degree exponent in
            :math:`\tilde{\mathbf{R}}`. (default: :obj:`0.3`)
        item_power (float, optional): :math:`b`, the products' degree exponent in
            :math:`\tilde{\mathbf{R}}` and the ideal low-pass term. (default: :obj:`0.4`)
        spectral_power (float, optional): :math:`p`, how steeply the ideal low-pass term's weights fall
            with the singular value; 0 weighs the :math:`k` vectors alike. (default: :obj:`0.5`)
        social_weight (float, optional): :math:`\gamma`, the weight of the friends' mean row in the ideal
            low-pass term when :meth:`fit` gets a social graph; 0 leaves friends out. On Ciao's validation
            split (time-ordered, defaults otherwise) :math:`\gamma = 1` took Recall@20 / NDCG@20 from 0.0533 /
            0.0296 to 0.0648 / 0.0361; on LastFM's little or worse (0.2090 at 0, 0.2113 at 0.5, 0.2026 at 1), so
            the automatic choice tunes it.
            (default: :obj:`0.0`)
        chunk_size (int, optional): Users filtered per kernel call inside :meth:`score`, and
            products per block when :meth:`factors` builds the item-item part. Narrow blocks keep
            the rows each sparse product gathers at random in cache (Gowalla, one application of
            :math:`\tilde{\mathbf{P}}` to 1,024 columns: 1.2–1.4 s at once, 0.45 s in blocks of
            128). (default: :obj:`128`)
        seed (int, optional): Seed of the Lanczos start block. (default: :obj:`0`)

    Shapes:
        - **fit input:** binary interactions :math:`(U, P)`, scipy sparse
        - **score input:** user ids :math:`(N)`
        - **score output:** scores :math:`(N, P)`, float32
    """

    name = "graphfilter"

    def __init__(
        self,
        num_factors: int = 768,
        ideal_weight: float = 0.1,
        blur_time: float = 1.0,
        blur_steps: int = 1,
        sharpen_time: float = 2.0,
        sharpen_steps: int = 1,
        early_merge: bool = True,
        user_power: float = 0.3,
        item_power: float = 0.4,
        spectral_power: float = 0.5,
        social_weight: float = 0.0,
        chunk_size: int = 128,
        seed: int = 0,
    ) -> None:
        if num_factors < 0:
            raise ValueError(f"'num_factors' must be non-negative (got {num_factors})")
        if blur_time < 0 or sharpen_time < 0:
            raise ValueError(f"ODE end times must be non-negative (got {blur_time}, {sharpen_time})")
        if blur_steps < 1 or sharpen_steps < 1:
            raise ValueError(f"ODE step counts must be positive (got {blur_steps}, {sharpen_steps})")
        if not (0.0 <= user_power <= 1.0 and 0.0 <= item_power <= 1.0):
            raise ValueError(f"degree exponents must lie in [0, 1] (got {user_power}, {item_power})")
        if not 0.0 <= spectral_power <= 4.0:
            raise ValueError(f"'spectral_power' must lie in [0, 4] (got {spectral_power})")
        if social_weight < 0:
            raise ValueError(f"'social_weight' must be non-negative (got {social_weight})")
        if chunk_size < 1:
            raise ValueError(f"'chunk_size' must be positive (got {chunk_size})")
        self.num_factors = num_factors
        self.ideal_weight = ideal_weight
        self.blur_time = blur_time
        self.blur_steps = blur_steps
        self.sharpen_time = sharpen_time
        self.sharpen_steps = sharpen_steps
        self.early_merge = early_merge
        self.user_power = user_power
        self.item_power = item_power
        self.spectral_power = spectral_power
        self.social_weight = social_weight
        self.chunk_size = chunk_size
        self.seed = seed
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Forgets the fitted graph."""
        self._interactions: sp.csr_matrix | None = None
        self._norm: sp.csr_matrix | None = None  # R̃, users × products
        self._norm_t: sp.csr_matrix | None = None  # R̃ᵀ, products × users
        self._left: np.ndarray | None = None  # D_I^{-b} V_k W_k, (P, k)
        self._right_t: np.ndarray | None = None  # (V_kᵀ D_I^{b})ᵀ = D_I^{b} V_k, (P, k)
        self._friends_rows: sp.csr_matrix | None = None  # γ F X: friends' mean rows, weighted; None without
        self.singular_values: np.ndarray | None = None

    def fit(self, interactions: sp.spmatrix, social: sp.spmatrix | None = None) -> GraphFilter:
        """Normalises the interaction matrix and finds the top singular vectors; returns ``self``.

        ``social`` (users × users, any non-zero entry a link, either direction) gives each user's friends,
        whose mean row the ideal low-pass term adds at :obj:`social_weight`.

        Raises:
            ValueError: ``social`` is not users × users.
        """
        x = binary_csr(interactions)
        num_users, num_products = x.shape
        self._friends_rows = None
        if social is not None and self.social_weight > 0:
            if social.shape != (num_users, num_users):
                raise ValueError(f"'social' must be users × users, {num_users} × {num_users} (got {social.shape})")
            self._friends_rows = _mean_neighbour_rows(social, x) * np.float32(self.social_weight)
        user_degree = np.asarray(x.sum(axis=1)).ravel()
        d_user = _inv_power(user_degree, self.user_power)
        item_degree = np.asarray(x.sum(axis=0)).ravel()
        d_item = _inv_power(item_degree, self.item_power)
        norm = sp.diags(d_user) @ x @ sp.diags(d_item)
        if (self.user_power, self.item_power) != (0.5, 0.5):  # rescale P̃'s spectrum to [0, 1], as at 1/2, 1/2
            norm = norm / np.sqrt(_top_eigenvalue(_kernel_csr(norm), _kernel_csr(norm.T), seed=self.seed))
        self._interactions = x
        self._norm = _kernel_csr(norm)
        self._norm_t = _kernel_csr(norm.T)
        k = min(self.num_factors, num_users, num_products)
        if k > 0:
            if num_users < num_products:
                # Eigenvectors of the smaller Gram matrix R̃R̃ᵀ, then V = R̃ᵀ U Σ⁻¹.
                eigenvalues, left = _top_eigenvectors(self._apply_user_gram, num_users, k, seed=self.seed)
                sigma = np.sqrt(np.clip(eigenvalues, 0.0, None))
                inv_sigma = np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > 1e-6 * sigma.max())
                vectors = _spmm(self._norm_t, left) * inv_sigma.astype(np.float32)[None, :]
            else:
                eigenvalues, vectors = _top_eigenvectors(self._apply_p, num_products, k, seed=self.seed)
            self.singular_values = np.sqrt(np.clip(eigenvalues, 0.0, None))
            weights = _spectral_weights(self.singular_values, self.spectral_power)
            self._left = np.ascontiguousarray(vectors * d_item[:, None] * weights[None, :], dtype=np.float32)
            self._right_t = np.ascontiguousarray(vectors * np.power(item_degree, self.item_power)[:, None],
                                                 dtype=np.float32)
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray | Tensor) -> Tensor:
        """Filtered scores of every product for :obj:`users`, float32 ``(len(users), P)``."""
        if self._interactions is None:
            raise RuntimeError("GraphFilter.score() called before fit()")
        users = np.asarray(torch.as_tensor(users).cpu(), dtype=np.int64).reshape(-1)
        out = torch.empty(len(users), self._interactions.shape[1], dtype=torch.float32)
        for start in range(0, len(users), self.chunk_size):
            chunk = users[start : start + self.chunk_size]
            out[start : start + len(chunk)] = torch.from_numpy(self._filter(chunk)).T
        return out

    def factors(self, neighbours: int = DEFAULT_NEIGHBOURS) -> Factors:
        r"""The served form. The ideal low-pass term is exactly rank :math:`k`: user vectors
        :math:`\beta\,\mathbf{x}\mathbf{D}_I^{-b}\mathbf{V}_k`, product vectors
        :math:`\mathbf{D}_I^{b}\mathbf{V}_k` (sharpened, with early merge). The blurred-and-sharpened term is a
        polynomial :math:`g(\tilde{\mathbf{P}})` of full rank, served as its item-item matrix with each row cut to
        its ``neighbours`` largest entries (computed a block of products at a time; the first application of
        :math:`\tilde{\mathbf{P}}` to a block's one-hot columns is a sparse product: Gowalla, 0.82× the time per
        block, 0.45 s against 0.55 s)."""
        if self._interactions is None:
            raise RuntimeError("GraphFilter.factors() called before fit()")
        x = self._interactions
        num_users, num_products = x.shape
        if self._left is not None and self.ideal_weight != 0.0:
            product = self._right_t.copy()
            if self.early_merge and self.sharpen_time > 0:
                h = self.sharpen_time / self.sharpen_steps
                for _ in range(self.sharpen_steps):
                    product = self._rk4_step(product, h)
            user = self.ideal_weight * np.asarray(self._ideal_rows(np.arange(num_users)) @ self._left,
                                                  dtype=np.float32)
        else:
            user, product = np.zeros((num_users, 1), np.float32), np.zeros((num_products, 1), np.float32)

        rows = sparsify_rows(self._served_rows, num_products, neighbours, block_size=self.chunk_size)
        return Factors(user, product, rows)

    def served_seconds(self, neighbours: int = DEFAULT_NEIGHBOURS, seed: int = 0) -> float:
        """About how long :meth:`factors` takes here: one block of :obj:`chunk_size` products drawn at random,
        timed with its neighbour cut, times the number of blocks, plus :math:`k` / :obj:`chunk_size` blocks for
        sharpening the rank-:math:`k` part. The automatic choice keeps this much of its budget for the refit
        (Gowalla: ~0.45 s a block, 321 + 6 blocks)."""
        if self._interactions is None:
            raise RuntimeError("GraphFilter.served_seconds() called before fit()")
        num_products = self._interactions.shape[1]
        ids = np.sort(np.random.default_rng(seed).permutation(num_products)[:self.chunk_size])
        started = time.perf_counter()
        block = self._served_rows(ids)
        np.argpartition(-np.abs(block), min(neighbours, num_products) - 1, axis=1)
        blocks = -(-num_products // self.chunk_size)
        if self._left is not None and self.ideal_weight != 0.0 and self.early_merge and self.sharpen_time > 0:
            blocks += -(-self._right_t.shape[1] // self.chunk_size)
        return (time.perf_counter() - started) * blocks

    def _served_rows(self, ids: np.ndarray) -> np.ndarray:
        r"""Rows ``ids`` of :math:`g(\tilde{\mathbf{P}})`: its columns (it is symmetric), the first application of
        :math:`\tilde{\mathbf{P}}` a sparse product (R̃ᵀ times R̃'s columns), not two dense passes over one-hot
        columns."""
        num_products = self._interactions.shape[1]
        first = np.ascontiguousarray((self._norm_t @ self._norm_t[ids].T).toarray(), dtype=np.float32)
        block = None
        if self.blur_time / self.blur_steps != 1.0:
            block = np.zeros((num_products, len(ids)), np.float32)
            block[ids, np.arange(len(ids))] = 1.0
        return np.ascontiguousarray(self._smooth(block, first=first).T)

    def _filter(self, users: np.ndarray) -> np.ndarray:
        """Runs blur, ideal low-pass and sharpening for a few users; products × users layout, so
        every sparse product gathers contiguous rows."""
        x = self._interactions[users]
        ideal = None
        if self._left is not None and self.ideal_weight != 0.0:
            ideal = self._right_t @ np.ascontiguousarray((self._ideal_rows(users) @ self._left).T)
            ideal *= self.ideal_weight
        # The first product of the first blur step starts from the sparse x.
        first = _spmm(self._norm_t, np.ascontiguousarray((x @ self._norm_t).T.toarray()))
        tau = self.blur_time / self.blur_steps
        base = None if tau == 1.0 else np.ascontiguousarray(x.T.toarray(), dtype=np.float32)
        return self._smooth(base, ideal, first)

    def _ideal_rows(self, users: np.ndarray) -> sp.csr_matrix:
        """What the ideal low-pass term filters for ``users``: their rows, plus their friends' mean rows at
        :obj:`social_weight` when fitted with a social graph."""
        x = self._interactions[users]
        return x if self._friends_rows is None else x + self._friends_rows[users]

    def _smooth(self, z: np.ndarray | None, ideal: np.ndarray | None = None,
                first: np.ndarray | None = None) -> np.ndarray:
        """Blurs a products × m block ``z`` (``first``: its :math:`\tilde{P} z` when known), adds ``ideal``
        (early merge), sharpens, adds ``ideal`` (late merge)."""
        tau = self.blur_time / self.blur_steps
        r = z
        for step in range(self.blur_steps):
            rp = first if step == 0 and first is not None else self._apply_p(r)
            r = rp if tau == 1.0 else (1.0 - tau) * r + tau * rp
        if ideal is not None and self.early_merge:
            r = r + ideal
        if self.sharpen_time > 0:
            h = self.sharpen_time / self.sharpen_steps
            for _ in range(self.sharpen_steps):
                r = self._rk4_step(r, h)
        if ideal is not None and not self.early_merge:
            r = r + ideal
        return r

    def _rk4_step(self, r: np.ndarray, h: float) -> np.ndarray:
        r"""One classical RK4 step of :math:`dr/dt = -r\tilde{P}`. For a linear ODE it equals
        :math:`r\,(I - hP + (hP)^2/2 - (hP)^3/6 + (hP)^4/24)`, evaluated in Horner form with
        four applications of :math:`\tilde{P}` and one buffer."""
        w = r
        for c in (4.0, 3.0, 2.0, 1.0):
            w = self._apply_p(w)
            w *= -h / c
            w += r
        return w

    def _apply_p(self, z: np.ndarray) -> np.ndarray:
        r""":math:`\tilde{P} z` for a products × m block, as :math:`\tilde{R}^T (\tilde{R} z)`."""
        return _spmm(self._norm_t, _spmm(self._norm, np.ascontiguousarray(z, dtype=np.float32)))

    def _apply_user_gram(self, z: np.ndarray) -> np.ndarray:
        r""":math:`\tilde{R}\tilde{R}^T z` for a users × m block."""
        return _spmm(self._norm, _spmm(self._norm_t, np.ascontiguousarray(z, dtype=np.float32)))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_factors={self.num_factors}, ideal_weight={self.ideal_weight}, "
            f"blur_time={self.blur_time}, sharpen_time={self.sharpen_time}, sharpen_steps={self.sharpen_steps}, "
            f"early_merge={self.early_merge}, user_power={self.user_power}, item_power={self.item_power}, "
            f"spectral_power={self.spectral_power}, social_weight={self.social_weight})"
        )


def _spectral_weights(singular_values: np.ndarray, power: float) -> np.ndarray:
    r""":math:`(\sigma_j / \sigma_1)^p`, scaled to mean 1 so :obj:`ideal_weight` keeps its size as :math:`p` moves."""
    if power == 0.0 or singular_values[0] <= 0:
        return np.ones_like(singular_values)
    weights = np.power(np.clip(singular_values / singular_values[0], 0.0, None), power)
    return weights / weights.mean()


def _mean_neighbour_rows(links: sp.spmatrix, x: sp.csr_matrix) -> sp.csr_matrix:
    """Each user's mean of their friends' rows of ``x`` (links taken in either direction; 0 for a user without)."""
    friends = sp.csr_matrix(links, dtype=np.float32)
    friends = ((friends + friends.T) != 0).astype(np.float32)
    friends = friends - sp.diags(friends.diagonal())  # oneself is no friend
    friends.eliminate_zeros()
    degree = np.asarray(friends.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return sp.csr_matrix(sp.diags(inverse.astype(np.float32)) @ friends @ x, dtype=np.float32)


def _inv_power(degree: np.ndarray, power: float) -> np.ndarray:
    """:math:`d^{-p}` with 0 for isolated nodes."""
    return np.where(degree > 0, np.power(np.maximum(degree, 1), -power), 0.0)


def _top_eigenvalue(norm: sp.csr_matrix, norm_t: sp.csr_matrix, seed: int = 0) -> float:
    r"""The largest eigenvalue of :math:`\tilde{R}^T\tilde{R}` (ARPACK on the smaller Gram operator)."""
    rows, cols = norm.shape
    first, second = (norm_t, norm) if rows < cols else (norm, norm_t)  # the smaller Gram: second @ first
    n = min(rows, cols)

    def apply(z: np.ndarray) -> np.ndarray:
        return _spmm(second, _spmm(first, np.ascontiguousarray(z, dtype=np.float32).reshape(n, -1)))

    start = np.random.default_rng(seed).random(n)
    operator = scipy.sparse.linalg.LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float32)
    return float(scipy.sparse.linalg.eigsh(operator, k=1, which="LA", v0=start, tol=1e-6,
                                           return_eigenvectors=False)[0])


def _kernel_csr(matrix: sp.spmatrix) -> sp.csr_matrix:
    """CSR with float32 values and int64 index arrays, the types :func:`_spmm_kernel` is compiled for."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    m.indptr = m.indptr.astype(np.int64)
    m.indices = m.indices.astype(np.int64)
    return m


@njit(parallel=True, fastmath=True, cache=True)
def _spmm_kernel(indptr, indices, data, z, out):  # pragma: no cover - compiled
    width = z.shape[1]
    for row in prange(out.shape[0]):
        acc = out[row]
        acc[:] = 0.0
        for p in range(indptr[row], indptr[row + 1]):
            v = data[p]
            src = z[indices[p]]
            for c in range(width):
                acc[c] += v * src[c]


def _spmm(a: sp.csr_matrix, z: np.ndarray) -> np.ndarray:
    """``a @ z`` for CSR ``a`` and a dense row-major float32 ``z`` on all cores (scipy's is single
    threaded and torch's CSR product was ~2-3x slower on this shape)."""
    out = np.empty((a.shape[0], z.shape[1]), dtype=np.float32)
    if z.shape[1]:
        _spmm_kernel(a.indptr, a.indices, a.data, z, out)
    return out


def _top_eigenvectors(
    apply,
    n: int,
    k: int,
    block_size: int = 64,
    krylov_factor: float = 3.0,
    dense_max: int = 3000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-:obj:`k` eigenpairs of a symmetric positive semi-definite ``n × n`` operator given
    by ``apply(block) -> operator @ block``, descending.

    Small operators are formed and solved densely. Otherwise: block Lanczos with full
    re-orthogonalisation (two Gram–Schmidt passes) to a Krylov basis of about
    ``krylov_factor × k`` vectors, then Rayleigh–Ritz. The leading pairs are exact to float32
    precision; those near the :obj:`k`-th, where the spectrum is dense, are approximate, which an
    ideal low-pass filter does not notice (Gowalla: same Recall@20 as ARPACK's vectors).
    """
    rng = np.random.default_rng(seed)
    block_size = max(1, min(block_size, math.ceil(k / 4)))  # at least ~4 Krylov steps
    steps = max(2, math.ceil(max(krylov_factor * k, k + block_size) / block_size))
    # numpy / scipy (OpenBLAS) rather than torch here: torch's MKL eigh and QR were 2-10x slower
    # on this AMD CPU.
    if n <= dense_max or steps * block_size >= n // 2:
        dense = apply(np.eye(n, dtype=np.float32)).astype(np.float64)
        values, vectors = np.linalg.eigh((dense + dense.T) / 2)
        order = np.argsort(-values)[:k]
        return values[order], vectors[:, order].astype(np.float32)

    basis = np.empty((n, steps * block_size), dtype=np.float32)
    images = np.empty_like(basis)  # operator @ basis
    basis[:, :block_size] = _orthonormal(rng.standard_normal((n, block_size), dtype=np.float32))
    for j in range(steps):
        cols = slice(j * block_size, (j + 1) * block_size)
        images[:, cols] = apply(np.ascontiguousarray(basis[:, cols]))
        if j + 1 == steps:
            break
        done = basis[:, : (j + 1) * block_size]
        w = images[:, cols].copy()
        norms = np.linalg.norm(w, axis=0)
        for _ in range(2):
            w -= done @ (done.T @ w)
        # An (almost) invariant subspace: continue with fresh random directions.
        lost = np.linalg.norm(w, axis=0) < 1e-4 * np.maximum(norms, 1e-30)
        if lost.any():
            w[:, lost] = rng.standard_normal((n, int(lost.sum())), dtype=np.float32)
            for _ in range(2):
                w -= done @ (done.T @ w)
        basis[:, (j + 1) * block_size : (j + 2) * block_size] = _orthonormal(w)
    projected = (basis.T @ images).astype(np.float64)
    values, vectors = np.linalg.eigh((projected + projected.T) / 2)
    order = np.argsort(-values)[:k]
    return values[order], basis @ vectors[:, order].astype(np.float32)


def _orthonormal(block: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of a tall float32 block: Cholesky QR twice in float64
    (two small GEMMs a pass; OpenBLAS's Householder QR of a 30k × 64 block was ~50× slower),
    Householder QR when the block is too close to rank-deficient for that."""
    q = block.astype(np.float64)
    try:
        for _ in range(2):
            upper = np.linalg.cholesky(q.T @ q).T
            q = scipy.linalg.solve_triangular(upper, q.T, trans="T", check_finite=False).T
    except np.linalg.LinAlgError:
        return scipy.linalg.qr(block, mode="economic", check_finite=False)[0].astype(np.float32)
    return q.astype(np.float32)
