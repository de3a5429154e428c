"""Product retrieval index: maximum inner product search over product embeddings with FAISS.

The index type follows the catalogue size: exact search (``IndexFlatIP``) below ``exact_below``
products, where a scan costs well under a millisecond; an inverted-file index above it, where an exact
scan of a million 64-d vectors takes ~10 ms (FIELD_NOTES). Row ``i`` of the embedding matrix is FAISS id
``i``, so excluded products are removed inside the search by id selector rather than after it.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

DEFAULT_EXACT_BELOW = 100_000


class ProductIndex:
    """Top-k products by inner product with a user (or product) vector, with ids excluded in-search.

    Args:
        index (faiss.Index): A trained, filled FAISS index whose ids are product rows.
        nprobe (int): Inverted lists visited per query for IVF indexes (ignored for exact search).
    """

    def __init__(self, index: faiss.Index, nprobe: int = 8):
        self.index = index
        self.nprobe = nprobe
        self._ivf = faiss.try_extract_index_ivf(index) if "IVF" in self.kind else None

    @classmethod
    def build(cls, embeddings: np.ndarray, *, exact_below: int = DEFAULT_EXACT_BELOW, nlist: int | None = None,
              nprobe: int = 8, seed: int = 0) -> ProductIndex:
        """Builds an exact index for small catalogues and ``IVF{nlist},Flat`` for large ones."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, dim = vectors.shape
        if n < exact_below:
            index = faiss.IndexFlatIP(dim)
        else:
            nlist = nlist or int(min(65536, max(1024, 4 * np.sqrt(n))))
            index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = vectors[np.random.default_rng(seed).permutation(n)[: 64 * nlist]]
            index.train(sample)
        index.add(vectors)
        return cls(index, nprobe)

    @property
    def kind(self) -> str:
        """Short description, e.g. ``Flat`` or ``IVF4096,Flat`` (reported by GetModelInfo)."""
        if isinstance(self.index, faiss.IndexFlat):
            return "Flat"
        ivf = faiss.try_extract_index_ivf(self.index)
        return f"IVF{ivf.nlist},Flat" if ivf is not None else type(self.index).__name__

    @property
    def size(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(scores, ids)`` of shape ``(n_queries, k)``, best first; ids are -1 where fewer than
        ``k`` products qualify. ``exclude`` holds product rows never to return."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.size)
        params = self._params(exclude)
        return self.index.search(queries, k, params=params)

    def reconstruct(self, row: int) -> np.ndarray:
        return self.index.reconstruct(int(row))

    def save(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, nprobe: int = 8) -> ProductIndex:
        return cls(faiss.read_index(str(path)), nprobe)

    def _params(self, exclude: np.ndarray | None) -> faiss.SearchParameters | None:
        selector = None
        if exclude is not None and len(exclude):
            ids = np.ascontiguousarray(exclude, dtype=np.int64)
            batch = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
            selector = faiss.IDSelectorNot(batch)
            selector.referenced = (batch, ids)  # keep the wrapped selector and ids alive with it
        if self._ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
            if selector is not None:
                params.sel = selector
            params.referenced = selector
            return params
        if selector is None:
            return None
        params = faiss.SearchParameters(sel=selector)
        params.referenced = selector
        return params

    def __repr__(self) -> str:
        return f"ProductIndex({self.kind}, size={self.size}, nprobe={self.nprobe})"
