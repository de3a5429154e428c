"""EASE: the closed-form shallow linear auto-encoder over products."""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack
from torch import Tensor

from sharerank.models.recommenders.factors import DEFAULT_NEIGHBOURS, Factors, sparsify_rows
from sharerank.models.recommenders.graph import binary_csr

__all__ = ["EASE", "EASEMemoryError"]


class EASEMemoryError(MemoryError):
    """The dense products × products matrix of :class:`EASE` would not fit in memory; the
    message names the gigabytes needed and available."""

    def __init__(self, num_products: int, required: int, available: int) -> None:
        self.num_products, self.required, self.available = num_products, required, available
        super().__init__(
            f"EASE on {num_products:,} products needs ~{required / 2**30:.1f} GiB "
            f"(one dense {num_products:,}² float32 matrix, inverted in place) but only "
            f"{available / 2**30:.1f} GiB is available"
        )


class EASE:
    r"""The item–item linear model from the `"Embarrassingly Shallow Autoencoders for Sparse Data"
    <https://arxiv.org/abs/1905.03375>`_ paper (Steck, WWW'19), fit in closed form:

    .. math::
        \mathbf{P} = (\mathbf{X}^{\top}\mathbf{X} + \lambda \mathbf{I})^{-1}, \qquad
        \mathbf{B} = \mathbf{I} - \mathbf{P} \, \operatorname{diag}(1 / \operatorname{diag}(\mathbf{P})),
        \qquad \mathbf{S} = \mathbf{X}\mathbf{B},

    the least-squares weights that reconstruct each product from the others with
    :math:`\operatorname{diag}(\mathbf{B}) = 0`.

    :math:`\mathbf{B}` is dense, :math:`P \times P`: :meth:`fit` builds the Gram matrix block by
    block into one float32 array and inverts it in place with LAPACK's Cholesky routines
    (``spotrf`` / ``spotri``: scipy's OpenBLAS up to 20,000 products, torch's MKL beyond, where
    OpenBLAS crashed), so the peak is about one :math:`P^2` float32 matrix (Gowalla's 40,981
    products: 7.6 GB with slack) instead of three. :meth:`fits` says ahead of time whether that
    fits; :meth:`fit` raises :class:`EASEMemoryError` when it does not, so a harness can report
    the model as skipped. Time is :math:`P^3` flops, the real limit on two cores: LastFM's
    17.6k products take 1–3 min; Gowalla's 41k fit in memory but need ~30 CPU-minutes
    (extrapolated from 12k: ``spotrf`` 8 CPU-s, MKL's ``spotri`` 41 CPU-s). Float32 matches the
    float64 closed form to ~1e-6 relative (the eigenvalues of
    :math:`\mathbf{X}^\top\mathbf{X} + \lambda\mathbf{I}` are at least :math:`\lambda`).

    :math:`\lambda` must grow with the data: the paper used 200 (MSD), 500 (MovieLens-20M) and
    3000 (Netflix). By default it is set per dataset from the mean number of buyers per product,
    :math:`\lambda = 25 \cdot \operatorname{nnz}(\mathbf{X}) / P` clipped to :math:`[10, 3000]`:
    LastFM (74k purchases of 17.6k products) gets :math:`\lambda \approx 105`, where a sweep gave
    Recall@20 / NDCG@20 0.2707 / 0.2720 at 50, 0.2714 / 0.2733 at 100, 0.2663 / 0.2680 at 200,
    0.2492 / 0.2518 at 500 and 0.2328 / 0.2357 at 1000; Gowalla (810k of 41k) gets
    :math:`\approx 494`, the usual 500.

    Args:
        reg (float or str, optional): :math:`\lambda`, the L2 penalty, or ``"auto"`` for the rule
            above. (default: :obj:`"auto"`)
        block_size (int, optional): Products per block when building the Gram matrix and
            finishing :math:`\mathbf{B}`. (default: :obj:`2048`)

    Shapes:
        - **fit input:** binary interactions :math:`(U, P)`, scipy sparse
        - **score input:** user ids :math:`(N)`
        - **score output:** scores :math:`(N, P)`, float32
    """

    name = "ease"

    def __init__(self, reg: float | str = "auto", block_size: int = 2048) -> None:
        if reg != "auto" and (isinstance(reg, str) or not reg > 0):
            raise ValueError(f"'reg' must be positive or 'auto' (got {reg!r})")
        if block_size < 1:
            raise ValueError(f"'block_size' must be positive (got {block_size})")
        self.reg = reg
        self.block_size = block_size
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Forgets the fitted weights."""
        self._interactions: sp.csr_matrix | None = None
        self.fitted_reg: float | None = None  # λ used by the last fit
        self.weight: Tensor | None = None  # B, (P, P) float32

    @staticmethod
    def auto_reg(interactions: sp.spmatrix) -> float:
        r""":math:`\lambda` for ``reg="auto"``: 25 × the mean number of buyers per product, in [10, 3000]."""
        num_products = max(interactions.shape[1], 1)
        return float(np.clip(25.0 * interactions.nnz / num_products, 10.0, 3000.0))

    @staticmethod
    def memory_required(num_products: int) -> int:
        """Bytes :meth:`fit` needs for :obj:`num_products`: the dense float32 matrix plus 10% and
        256 MiB for the Gram blocks and scoring buffers."""
        return int(1.1 * 4 * num_products**2) + 256 * 2**20

    @staticmethod
    def seconds_required(num_products: int) -> float:
        """About how long :meth:`fit` takes on two cores: :math:`P^3` flops, scaled from 12,000 products in
        ~25 s (49 CPU-s) here, so Gowalla's 41k need ~16 min. The automatic choice skips EASE when this is
        more than its share of the budget, instead of overrunning it."""
        return 25.0 * (num_products / 12_000) ** 3

    @staticmethod
    def fits(num_products: int, memory_bytes: int | None = None) -> bool:
        """Whether :meth:`fit` on :obj:`num_products` products fits in :obj:`memory_bytes`
        (default: the memory available now, ``MemAvailable`` of ``/proc/meminfo``)."""
        available = available_memory() if memory_bytes is None else memory_bytes
        return EASE.memory_required(num_products) <= available

    def fit(self, interactions: sp.spmatrix, memory_bytes: int | None = None) -> EASE:
        """Solves for :math:`\\mathbf{B}`; returns ``self``.

        Raises:
            EASEMemoryError: If :meth:`fits` says no (before allocating anything large).
        """
        x = binary_csr(interactions)
        n = x.shape[1]
        available = available_memory() if memory_bytes is None else memory_bytes
        if not self.fits(n, available):
            raise EASEMemoryError(n, self.memory_required(n), available)

        gram = np.empty((n, n), dtype=np.float32)
        x_t = x.T.tocsr()
        for start in range(0, n, self.block_size):
            stop = min(start + self.block_size, n)
            gram[start:stop] = (x_t[start:stop] @ x).toarray()
        self.fitted_reg = self.auto_reg(x) if self.reg == "auto" else float(self.reg)
        gram[np.diag_indices(n)] += np.float32(self.fitted_reg)
        inverse = _invert_spd_in_place(gram)
        del gram
        _mirror_upper(inverse, self.block_size)
        scale = -1.0 / np.diag(inverse).copy()
        for start in range(0, n, self.block_size):
            inverse[start : start + self.block_size] *= scale[None, :]
        inverse[np.diag_indices(n)] = 0.0
        self.weight = torch.from_numpy(inverse)
        self._interactions = x
        return self

    def factors(self, neighbours: int = DEFAULT_NEIGHBOURS) -> Factors:
        r"""The served form: :math:`\mathbf{B}` as the item-item part, each row cut to its ``neighbours``
        largest weights (the dense matrix cannot be served)."""
        if self.weight is None or self._interactions is None:
            raise RuntimeError("EASE.factors() called before fit()")
        weight = self.weight.numpy()
        return Factors.item_item_only(self._interactions.shape[0],
                                      sparsify_rows(lambda ids: weight[ids], weight.shape[0], neighbours))

    @torch.no_grad()
    def score(self, users: np.ndarray | Tensor) -> Tensor:
        """``X[users] @ B``, float32 ``(len(users), P)``."""
        if self.weight is None or self._interactions is None:
            raise RuntimeError("EASE.score() called before fit()")
        users = np.asarray(torch.as_tensor(users).cpu(), dtype=np.int64).reshape(-1)
        rows = self._interactions[users]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*Sparse CSR tensor support is in beta.*")
            rows_t = torch.sparse_csr_tensor(
                torch.from_numpy(rows.indptr.astype(np.int64)),
                torch.from_numpy(rows.indices.astype(np.int64)),
                torch.from_numpy(rows.data),
                size=rows.shape,
                check_invariants=False,
            )
        return torch.sparse.mm(rows_t, self.weight) if rows.nnz else torch.zeros(rows.shape)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(reg={self.reg!r})"


def available_memory() -> int:
    """Bytes of memory available to a new allocation: ``MemAvailable`` from ``/proc/meminfo``
    (page cache the kernel can drop counts), else free pages from ``sysconf``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _invert_spd_in_place(a: np.ndarray) -> np.ndarray:
    """Inverts the symmetric positive definite C-order float32 ``a`` in place (Cholesky
    ``potrf`` + ``potri``) and returns it; only its upper triangle holds the inverse.

    ``a`` is symmetric, so its C-order buffer is also its own F-order transpose, which LAPACK
    overwrites without a copy. Up to 20,000 products that is scipy's OpenBLAS (the faster here);
    beyond, the MKL inside torch's CPU library (64-bit index interface), because OpenBLAS's
    ``spotrf`` (scipy's and numpy's builds alike) crashed with SIGSEGV at 40,981 products.
    """
    n = a.shape[0]
    if n <= _MAX_OPENBLAS:
        factor, info = lapack.spotrf(a.T, lower=True, overwrite_a=True, clean=False)
        if info == 0:
            factor, info = lapack.spotri(factor, lower=True, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"Cholesky inversion failed (LAPACK info={info})")
        return np.ascontiguousarray(factor.T)  # a view of `a` itself: f2py does not copy F-order input
    lib = _mkl_lapack()
    if lib is None:
        raise ValueError(f"EASE on {n:,} products needs MKL's LAPACK (OpenBLAS crashes at this size)")
    for routine in (lib.spotrf_64_, lib.spotri_64_):
        size, info = ctypes.c_int64(n), ctypes.c_int64(0)
        routine(ctypes.c_char_p(b"L"), ctypes.byref(size), a.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(size), ctypes.byref(info), ctypes.c_size_t(1))
        if info.value != 0:
            raise np.linalg.LinAlgError(f"Cholesky inversion failed (LAPACK info={info.value})")
    return a


_MAX_OPENBLAS = 20_000  # OpenBLAS inverted LastFM's 17,632 products; its spotrf crashed at 40,981


@functools.cache
def _mkl_lapack() -> ctypes.CDLL | None:
    """The LAPACK of the MKL linked into torch's CPU library (x86 wheels), if its 64-bit index
    routines are exported."""
    for path in sorted((Path(torch.__file__).resolve().parent / "lib").glob("libtorch_cpu.*")):
        try:
            lib = ctypes.CDLL(str(path))
            lib.spotrf_64_, lib.spotri_64_  # noqa: B018 - both symbols must exist
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _mirror_upper(a: np.ndarray, block_size: int) -> None:
    """Copies the upper triangle of the square C-order ``a`` onto its lower triangle, in place,
    one block of rows at a time (a full transpose would need a second matrix)."""
    n = a.shape[0]
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        # Rows start:stop, columns < start: from the upper triangle's columns start:stop.
        a[start:stop, :start] = a[:start, start:stop].T
        tile = a[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        tile[lower] = tile.T[lower]

