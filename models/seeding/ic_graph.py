"""The independent-cascade graph every seeding algorithm works on: nodes ``0..n-1``, directed arcs with a
propagation probability each, held as CSR twice (out-arcs for forward simulation, in-arcs for reverse
reachable sets), so no algorithm rebuilds an adjacency per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class ICGraph:
    """Arcs ``u -> v`` with probability ``p_uv``: a share from ``u`` makes ``v`` buy (and share on).

    Args:
        num_nodes: Number of nodes ``n``.
        out_indptr, out_indices, out_prob: Out-arcs of each node, CSR (``int64``, ``int32``, ``float64``).
        in_indptr, in_indices, in_prob: In-arcs of each node, CSR: the transpose of the above.
    """

    num_nodes: int
    out_indptr: np.ndarray
    out_indices: np.ndarray
    out_prob: np.ndarray
    in_indptr: np.ndarray
    in_indices: np.ndarray
    in_prob: np.ndarray

    @classmethod
    def from_arcs(cls, src: np.ndarray, dst: np.ndarray, prob: np.ndarray, num_nodes: int | None = None) -> ICGraph:
        """Builds both CSRs from arc lists. Self loops are dropped; duplicate arcs are merged as independent
        chances, ``1 - prod(1 - p)``, which is what repeated arcs mean under the independent cascade."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        prob = np.asarray(prob, dtype=np.float64)
        if not (src.shape == dst.shape == prob.shape):
            raise ValueError("'src', 'dst' and 'prob' must have the same length")
        if prob.size and (np.isnan(prob).any() or prob.min() < 0.0 or prob.max() > 1.0):
            raise ValueError("arc probabilities must lie in [0, 1]")
        n = int(num_nodes if num_nodes is not None else (max(src.max(initial=-1), dst.max(initial=-1)) + 1))
        if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
            raise ValueError(f"arc endpoints must lie in [0, {n})")
        keep = (src != dst) & (prob > 0.0)
        src, dst, prob = src[keep], dst[keep], prob[keep]
        # Sum of log(1 - p) over duplicates = log of the chance that no copy fires.
        log_fail = np.log1p(-np.minimum(prob, 1.0 - 1e-12))
        out = sp.csr_matrix((log_fail, (src, dst)), shape=(n, n))
        out.sum_duplicates()
        out.sort_indices()
        out_p = -np.expm1(out.data)
        inn = sp.csr_matrix((out_p, out.indices, out.indptr), shape=(n, n)).T.tocsr()
        inn.sort_indices()
        return cls(n, out.indptr.astype(np.int64), out.indices.astype(np.int32), out_p,
                   inn.indptr.astype(np.int64), inn.indices.astype(np.int32), inn.data.astype(np.float64))

    def with_seed_handles(self, compliance: np.ndarray) -> ICGraph:
        """This graph plus a handle node ``n + u`` per node ``u``, with one arc ``n + u -> u`` of probability
        ``compliance[u]``: seeding the handle asks ``u`` to share, and ``u`` does with that chance. Pick seeds
        among the handles; a spread on this graph counts each seeded handle once more than the real nodes."""
        n = self.num_nodes
        compliance = np.asarray(compliance, dtype=np.float64)
        if compliance.shape != (n,):
            raise ValueError(f"'compliance' must have one entry per node ({n})")
        src = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.out_indptr))
        return ICGraph.from_arcs(np.r_[src, np.arange(n) + n], np.r_[self.out_indices, np.arange(n)],
                                 np.r_[self.out_prob, compliance], 2 * n)

    @property
    def num_arcs(self) -> int:
        return int(self.out_indices.size)

    def out_degree(self) -> np.ndarray:
        return np.diff(self.out_indptr)

    def in_degree(self) -> np.ndarray:
        return np.diff(self.in_indptr)

    def nbytes(self) -> int:
        """Memory held by the two CSRs."""
        return sum(a.nbytes for a in (self.out_indptr, self.out_indices, self.out_prob,
                                      self.in_indptr, self.in_indices, self.in_prob))
