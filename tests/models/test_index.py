"""The product index: exact below the size threshold, IVF above, exclusion inside the search."""

from __future__ import annotations

import numpy as np
import pytest

from sharerank.models.index import ProductIndex


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, exclude=()) -> list[int]:
    scores = vectors @ query
    scores[list(exclude)] = -np.inf
    return np.argsort(-scores, kind="stable")[:k].tolist()


def test_exact_index_matches_brute_force(vectors: np.ndarray) -> None:
    index = ProductIndex.build(vectors)
    assert index.kind == "Flat" and index.size == 3000
    _, ids = index.search(vectors[:5], 10)
    for q in range(5):
        assert ids[q].tolist() == exact_top(vectors, vectors[q], 10)


def test_exclusion_happens_inside_the_search(vectors: np.ndarray) -> None:
    index = ProductIndex.build(vectors)
    first = exact_top(vectors, vectors[0], 5)
    _, ids = index.search(vectors[0], 5, exclude=np.array(first[:3]))
    assert ids[0].tolist() == exact_top(vectors, vectors[0], 5, exclude=first[:3])


@pytest.mark.parametrize("exclude", [None, np.array([1, 2, 3])])
def test_ivf_above_threshold_with_full_probe_is_exact(vectors: np.ndarray, exclude) -> None:
    index = ProductIndex.build(vectors, exact_below=1000, nlist=32, nprobe=32)
    assert index.kind == "IVF32,Flat"
    _, ids = index.search(vectors[7], 10, exclude=exclude)
    assert ids[0].tolist() == exact_top(vectors, vectors[7], 10, exclude=() if exclude is None else exclude)


def test_save_and_load_roundtrip(vectors: np.ndarray, tmp_path) -> None:
    index = ProductIndex.build(vectors)
    index.save(tmp_path / "index.faiss")
    again = ProductIndex.load(tmp_path / "index.faiss")
    assert again.search(vectors[3], 4)[1].tolist() == index.search(vectors[3], 4)[1].tolist()
    assert repr(again) == "ProductIndex(Flat, size=3000, nprobe=8)"


def test_k_larger_than_catalogue_is_capped(vectors: np.ndarray) -> None:
    index = ProductIndex.build(vectors[:4])
    _, ids = index.search(vectors[0], 10, exclude=np.array([0]))
    assert ids.shape == (1, 4) and sorted(ids[0].tolist()) == [-1, 1, 2, 3]
