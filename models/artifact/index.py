"""Product retrieval index: maximum inner product search over product embeddings with FAISS.

The index type follows the catalogue size: exact search (``IndexFlatIP``) below ``exact_below``
products, where a scan costs well under a millisecond; an inverted-file index above it, where an exact
scan of a million 64-d vectors takes ~10 ms (memory bandwidth bound). Row ``i`` of the embedding matrix is FAISS id
``i``. Excluded products never come back: a few (the usual bought and excluded sets of a first page) by
searching ``k + len(exclude)`` and dropping them from the results, which gives the same top-k as excluding
them in the search and saves building an id selector per request; many (later pages' served ids) by id
selector inside the search, where the longer result list of over-fetching would cost more.

An IVF index visits ``nprobe`` of its lists per query. Recall depends on the data, so
:meth:`ProductIndex.tune_nprobe` picks the smallest ``nprobe`` that reaches a recall target against exact
search on sample queries (training calls it with the model's own user embeddings). ``nprobe`` is stored in
the FAISS file itself (the IVF header), so :meth:`ProductIndex.load` restores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

DEFAULT_EXACT_BELOW = 100_000
DEFAULT_NPROBE = 8
NPROBE_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)
SELECTOR_ABOVE = 96
"""Excluded ids above which the search excludes them by id selector instead of over-fetching
``k + len(exclude)`` results and dropping them. Measured on a 1M-product IVF4000 index, k = 69, nprobe 8
(FAISS 1.15, one thread): over-fetching is 5-12% faster up to ~64 excluded ids, about even at 64-128
(faster for cache-hot lists, slower for cold ones), and slower above: the result list grows with every
excluded id, the selector's cost barely does. 96 keeps a fourth page of 20 (60 served ids plus a typical
purchase history) on the over-fetch path."""


@dataclass(frozen=True)
class NprobeReport:
    """What :meth:`ProductIndex.tune_nprobe` measured and chose.

    Attributes:
        nprobe: The nprobe now set (the smallest candidate that reached ``target``; the best one tried when
            none did).
        recall: Mean recall@k of that nprobe against exact search on the queries.
        target: The recall asked for.
        reached: Whether ``recall >= target``.
        k: The cut-off of the recall (capped at the index size).
        queries: How many queries were measured.
        tried: ``(nprobe, recall)`` of every candidate measured, in the order tried.
    """

    nprobe: int
    recall: float
    target: float
    reached: bool
    k: int
    queries: int
    tried: tuple[tuple[int, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for a bundle's ``info`` and MLflow)."""
        out = asdict(self)
        out["tried"] = [[n, r] for n, r in self.tried]
        return out


class ProductIndex:
    """Top-k products by inner product with a user (or product) vector, with ids excluded in-search.

    Args:
        index (faiss.Index): A trained, filled FAISS index whose ids are product rows.
        nprobe (int | None): Inverted lists visited per query for IVF indexes (ignored for exact search).
            None: the nprobe stored in an IVF index (as read from a file), else ``DEFAULT_NPROBE``.
    """

    def __init__(self, index: faiss.Index, nprobe: int | None = None):
        self.index = index
        self._ivf = faiss.try_extract_index_ivf(index) if "IVF" in self.kind else None
        if nprobe is None:
            nprobe = int(self._ivf.nprobe) if self._ivf is not None else DEFAULT_NPROBE
        self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        value = int(value)
        if value < 1:
            raise ValueError(f"nprobe must be at least 1, got {value}")
        self._nprobe = value
        if self._ivf is not None:
            self._ivf.nprobe = min(value, self._ivf.nlist)  # saved with the index (IVF header)
            # Built once, not per search: SWIG objects cost more to make than a small search's scan.
            self._plain_params = faiss.SearchParametersIVF(nprobe=value)
        else:
            self._plain_params = None

    @property
    def is_exact(self) -> bool:
        """True for exact (flat) search, where nprobe means nothing."""
        return self._ivf is None

    @classmethod
    def build(cls, embeddings: np.ndarray, *, exact_below: int = DEFAULT_EXACT_BELOW, nlist: int | None = None,
              nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> ProductIndex:
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
        if exclude is None or not len(exclude):
            return self.index.search(queries, k, params=self._plain_params)
        if len(exclude) > SELECTOR_ABOVE:
            return self.index.search(queries, k, params=self._params(exclude))
        scores, ids = self.index.search(queries, min(k + len(exclude), self.size), params=self._plain_params)
        drop = _dropped(ids, exclude)
        if not drop.any():
            return scores[:, :k], ids[:, :k]
        # Per query, the first k results not dropped (a stable sort keeps their order), padded as FAISS pads.
        first = np.argsort(drop, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(scores, first, 1), np.take_along_axis(ids, first, 1)
        missing = np.take_along_axis(drop, first, 1)
        ids[missing], scores[missing] = -1, self._missing_score
        return scores, ids

    def search_excluding(self, vector: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One query's ``(scores, ids)``: the best ``k`` products not in ``exclude``, best first, as 1-d arrays
        without padding (shorter than ``k`` when fewer qualify). What :meth:`search` returns for one query, less
        its -1 padding, without the work of padding it."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        k = min(k, self.size)
        if len(exclude) > SELECTOR_ABOVE:
            scores, ids = self.index.search(query, k, params=self._params(exclude))
            scores, ids = scores[0], ids[0]
            found = ids >= 0
            return (scores, ids) if found.all() else (scores[found], ids[found])
        scores, ids = self.index.search(query, min(k + len(exclude), self.size), params=self._plain_params)
        scores, ids = scores[0], ids[0]
        drop = _dropped(ids, exclude)
        if drop.any():
            keep = ~drop
            scores, ids = scores[keep], ids[keep]
        return scores[:k], ids[:k]

    @property
    def _missing_score(self) -> float:
        """The score FAISS reports beside id -1: the worst for the metric."""
        worst = float(np.finfo(np.float32).max)
        return -worst if self.index.metric_type == faiss.METRIC_INNER_PRODUCT else worst

    def reconstruct(self, row: int) -> np.ndarray:
        return self.index.reconstruct(int(row))

    def vectors(self) -> np.ndarray:
        """Every stored vector as a ``(size, d)`` float32 matrix, row ``i`` = id ``i`` (a copy).

        Read from the inverted lists for IVF indexes, so the index needs no direct map.
        """
        if self._ivf is None or not isinstance(self._ivf, faiss.IndexIVFFlat):
            return self.index.reconstruct_n(0, self.size)
        out = np.empty((self.size, self._ivf.d), dtype=np.float32)
        lists, width = self._ivf.invlists, self._ivf.code_size
        for number in range(self._ivf.nlist):
            size = lists.list_size(number)
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
            codes = faiss.rev_swig_ptr(lists.get_codes(number), size * width)
            out[ids] = np.frombuffer(codes, dtype=np.float32).reshape(size, self._ivf.d)
        return out

    def recall_at(self, queries: np.ndarray, k: int, nprobe: int, exact_ids: np.ndarray) -> float:
        """Mean recall@k of this index at ``nprobe`` against ``exact_ids`` (the true top-k of each query)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = faiss.SearchParametersIVF(nprobe=nprobe) if self._ivf is not None else None
        _, ids = self.index.search(queries, exact_ids.shape[1], params=params)
        return _mean_recall(ids, exact_ids)

    def tune_nprobe(self, queries: np.ndarray, k: int = 100, target: float = 0.95,
                    candidates: Sequence[int] = NPROBE_CANDIDATES) -> NprobeReport | None:
        """Sets the smallest ``nprobe`` whose mean recall@k against exact search on ``queries`` is ≥ ``target``.

        The truth is an ``IndexFlatIP`` over the same vectors. Candidates are tried in increasing order
        (recall only grows with nprobe: more lists visited is a superset of candidates) and stop at the first
        that reaches the target; when none does, the best one tried is set and ``reached`` is False.
        Candidates above ``nlist`` count as ``nlist`` (every list: exact up to ties).

        Args:
            queries: ``(n, d)`` query vectors, e.g. a sample of user embeddings (the real query mix: recall
                depends on the data).
            k: Recall cut-off (capped at the index size).
            target: Recall to reach, in (0, 1].
            candidates: nprobe values to try.

        Returns:
            The report, or None for an exact index (nothing to tune; the index is left untouched).
        """
        if self._ivf is None:
            return None
        if not 0 < target <= 1:
            raise ValueError(f"target recall must be in (0, 1], got {target}")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if len(queries) == 0:
            raise ValueError("tune_nprobe needs at least one query")
        steps = sorted({min(max(int(c), 1), self._ivf.nlist) for c in candidates})
        if not steps:
            raise ValueError("tune_nprobe needs at least one candidate nprobe")
        k = min(k, self.size)
        exact = faiss.IndexFlatIP(self._ivf.d)
        exact.add(self.vectors())
        _, truth = exact.search(queries, k)
        del exact
        tried: list[tuple[int, float]] = []
        for nprobe in steps:
            tried.append((nprobe, round(self.recall_at(queries, k, nprobe, truth), 4)))
            if tried[-1][1] >= target:
                break
        chosen, recall = next(((n, r) for n, r in tried if r >= target), max(tried, key=lambda t: (t[1], -t[0])))
        self.nprobe = chosen
        return NprobeReport(nprobe=chosen, recall=recall, target=target, reached=recall >= target, k=k,
                            queries=len(queries), tried=tuple(tried))

    def save(self, path: str | Path) -> None:
        """Writes the FAISS file; an IVF index's nprobe travels in it."""
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, nprobe: int | None = None) -> ProductIndex:
        """Reads a saved index; ``nprobe`` None restores the saved one (IVF), or the default (exact).

        Note: IVF files written before nprobe was saved hold FAISS's default of 1; pass ``nprobe`` for them.
        """
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


_STOPS = np.array([-1, np.iinfo(np.int64).max], dtype=np.int64)


def _dropped(ids: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """True where ``ids`` is -1 (no result) or in ``exclude`` (a small array, any order, repeats allowed)."""
    # -1 joins the excluded ids, and the largest int64 bounds them, so every id finds an entry to compare with.
    stops = np.sort(np.concatenate((np.asarray(exclude, dtype=np.int64), _STOPS)))
    return stops[np.searchsorted(stops, ids)] == ids


def _mean_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found ∩ truth| / |truth| (ids -1 in ``truth`` are not counted)."""
    hits, total = 0, 0
    for got, want in zip(found, truth, strict=True):
        want = want[want >= 0]
        hits += np.intersect1d(got[got >= 0], want, assume_unique=True).size
        total += want.size
    return hits / total if total else 1.0
