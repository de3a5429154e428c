"""The product index: exact below the size threshold, IVF above, exclusion inside the search."""

from __future__ import annotations

import numpy as np
import pytest

from sharerank.models.artifact.index import ProductIndex


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


# nprobe tuning: recall against exact search on the queries given, smallest nprobe that reaches the target.


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """20k products and 400 user queries around the same 100 cluster centres (embeddings are clustered)."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((100, 16)).astype(np.float32)
    products = centres[rng.integers(0, 100, 20_000)] + 0.6 * rng.standard_normal((20_000, 16)).astype(np.float32)
    queries = centres[rng.integers(0, 100, 400)] + 0.6 * rng.standard_normal((400, 16)).astype(np.float32)
    return products.astype(np.float32), queries.astype(np.float32)


def brute_force_recall(products: np.ndarray, queries: np.ndarray, index: ProductIndex, k: int) -> float:
    truth = np.argpartition(-(queries @ products.T), k, axis=1)[:, :k]
    _, ids = index.search(queries, k)
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ids, truth, strict=True)]))


@pytest.mark.parametrize("target", [0.9, 0.95, 0.99])
def test_tuned_nprobe_reaches_the_target_and_is_the_smallest(clustered, target: float) -> None:
    products, queries = clustered
    index = ProductIndex.build(products, exact_below=1000, nlist=128)
    report = index.tune_nprobe(queries, k=50, target=target)
    assert report is not None and report.reached and report.recall >= target
    assert index.nprobe == report.nprobe and report.tried[-1] == (report.nprobe, report.recall)
    assert all(recall < target for _, recall in report.tried[:-1])  # every smaller candidate fell short
    assert report.k == 50 and report.queries == 400 and report.target == target
    # The recall the report claims is what searches now get (checked by numpy, not FAISS).
    assert brute_force_recall(products, queries, index, 50) == pytest.approx(report.recall, abs=1e-3)


def test_recall_grows_with_nprobe_up_to_exact(clustered) -> None:
    products, queries = clustered
    index = ProductIndex.build(products, exact_below=1000, nlist=128)
    report = index.tune_nprobe(queries[:100], k=20, target=1.0, candidates=(1, 2, 4, 8, 16, 32, 64, 128, 500))
    recalls = [r for _, r in report.tried]
    assert [n for n, _ in report.tried] == [1, 2, 4, 8, 16, 32, 64, 128][: len(recalls)]  # 500 capped to nlist
    assert recalls == sorted(recalls) and recalls[0] < 1.0 and report.recall == 1.0


def test_unreachable_target_keeps_the_best_candidate_and_says_so(clustered) -> None:
    products, queries = clustered
    index = ProductIndex.build(products, exact_below=1000, nlist=128)
    report = index.tune_nprobe(queries, k=50, target=0.999, candidates=(1, 2))
    assert not report.reached and report.nprobe == 2 and report.recall == max(r for _, r in report.tried)
    assert report.to_dict()["tried"] == [[1, report.tried[0][1]], [2, report.tried[1][1]]]


def test_exact_index_is_left_untouched(clustered) -> None:
    products, queries = clustered
    index = ProductIndex.build(products)
    before = index.search(queries[:5], 10)
    assert index.tune_nprobe(queries) is None
    assert index.kind == "Flat" and index.nprobe == 8 and index.size == len(products)
    after = index.search(queries[:5], 10)
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])


def test_tuned_nprobe_is_saved_with_the_index(clustered, tmp_path) -> None:
    products, queries = clustered
    index = ProductIndex.build(products, exact_below=1000, nlist=128)
    report = index.tune_nprobe(queries, k=50, target=0.99)
    assert report.nprobe != 8  # so the round trip below is not the default
    index.save(tmp_path / "index.faiss")
    again = ProductIndex.load(tmp_path / "index.faiss")
    assert again.nprobe == report.nprobe
    assert np.array_equal(again.search(queries[:20], 10)[1], index.search(queries[:20], 10)[1])
    assert ProductIndex.load(tmp_path / "index.faiss", nprobe=3).nprobe == 3  # an explicit nprobe wins


def test_vectors_reads_back_what_was_added(clustered) -> None:
    products, _ = clustered
    assert np.array_equal(ProductIndex.build(products, exact_below=1000, nlist=64).vectors(), products)
    assert np.array_equal(ProductIndex.build(products[:500]).vectors(), products[:500])


# Exclusion without FAISS's id selector: over-fetch k + len(exclude) and drop them; same results.


def selector_search(index: ProductIndex, queries: np.ndarray, k: int, exclude: np.ndarray):
    """The reference: FAISS excluding the ids inside the search, by id selector."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    return index.index.search(queries, min(k, index.size), params=index._params(exclude))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_excluding_by_over_fetch_matches_the_id_selector(vectors: np.ndarray, kind: str) -> None:
    index = ProductIndex.build(vectors) if kind == "flat" else ProductIndex.build(vectors, exact_below=1000,
                                                                                  nlist=32, nprobe=4)
    rng = np.random.default_rng(3)
    queries = vectors[:6]
    for m in (1, 5, 40, 200):
        # The excluded: the queries' own best results (they must go), some repeats, some far away ids.
        _, top = index.search(queries, 30)
        exclude = np.concatenate([top[:, : m // 4 + 1].ravel(), rng.integers(0, len(vectors), m)])[:m]
        exclude = np.concatenate([exclude, exclude[:2]])
        got_scores, got_ids = index.search(queries, 25, exclude=exclude)
        want_scores, want_ids = selector_search(index, queries, 25, exclude)
        assert np.array_equal(got_ids, want_ids) and np.allclose(got_scores, want_scores)
        assert not np.isin(got_ids, exclude).any()
        for q in range(len(queries)):
            scores, ids = index.search_excluding(queries[q], 25, exclude)
            found = want_ids[q] >= 0
            assert ids.tolist() == want_ids[q][found].tolist() and np.allclose(scores, want_scores[q][found])


def test_many_excluded_ids_use_the_id_selector(vectors: np.ndarray) -> None:
    from sharerank.models.artifact.index import SELECTOR_ABOVE

    index = ProductIndex.build(vectors)
    exclude = np.arange(0, 2 * (SELECTOR_ABOVE + 1), 2)
    _, ids = index.search(vectors[1], 10, exclude=exclude)
    assert ids[0].tolist() == exact_top(vectors, vectors[1], 10, exclude=exclude.tolist())
    _, ids = index.search_excluding(vectors[1], 10, exclude)
    assert ids.tolist() == exact_top(vectors, vectors[1], 10, exclude=exclude.tolist())


def test_excluding_more_than_remains_pads_like_faiss(vectors: np.ndarray) -> None:
    # One probed list of an IVF index over 300 products holds fewer than k: -1 pads the rest.
    index = ProductIndex.build(vectors[:300], exact_below=1, nlist=8, nprobe=1)
    _, first = index.search(vectors[0], 10)
    exclude = first[0][:5]
    scores, ids = index.search(vectors[0], 200, exclude=exclude)
    want_scores, want_ids = selector_search(index, vectors[0], 200, exclude)
    assert ids.tolist() == want_ids.tolist() and np.array_equal(scores, want_scores)
    missing = ids[0] == -1
    assert missing.any() and (scores[0][missing] == -np.finfo(np.float32).max).all()
    short_scores, short_ids = index.search_excluding(vectors[0], 200, exclude)
    assert short_ids.tolist() == want_ids[0][~missing].tolist() and len(short_scores) == (~missing).sum()
