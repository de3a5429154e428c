import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.training.feed.metrics import (
    LinkPredLongTail,
    evaluate_ranking,
    popularity_top_k,
    product_popularity,
    rank_top_k,
    ranking_metrics,
)


def csr(rows: list[list[int]], num_products: int) -> sp.csr_matrix:
    """users × products matrix with a 1 at every listed product of every row."""
    row = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    col = np.array([p for r in rows for p in r], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(col)), (row, col)), shape=(len(rows), num_products))


def test_evaluate_ranking_hand_computed() -> None:
    # user 0: top [5, 1, 7], test {1, 7, 9}: hits at ranks 2 and 3.
    #   Recall@3 = 2/3; DCG = 1/log2(3) + 1/log2(4) = 0.63093 + 0.5 = 1.13093,
    #   IDCG over min(3, 3) = 3 ranks = 1 + 0.63093 + 0.5 = 2.13093, NDCG@3 = 0.53072.
    #   Rank 1 misses: Recall@1 = NDCG@1 = Hit@1 = 0.
    # user 1: top [0, 3, 4], test {0}: Recall = NDCG = Hit = 1 at k = 1 and k = 3.
    # user 2: top [0, 6, 8], no test products: left out of accuracy, kept in coverage and long tail.
    # popularity: head = round(0.2 * 10) = 2 products = {0, 3}.
    #   Coverage@3 = |{5,1,7,0,3,4,6,8}| / 10 = 0.8; Coverage@1 = |{5, 0}| / 10 = 0.2.
    #   LongTail@3 = (3 + 1 + 2) / 9 = 2/3; LongTail@1 = [5, 0, 0] -> 1/3.
    top_k = torch.tensor([[5, 1, 7], [0, 3, 4], [0, 6, 8]])
    test = csr([[1, 7, 9], [0], []], num_products=10)
    popularity = np.array([50, 1, 2, 40, 3, 0, 0, 0, 0, 0])
    ndcg_user0 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))

    out = evaluate_ranking(top_k, test, np.arange(3), 10, popularity, ks=(1, 3))

    assert out == pytest.approx(
        {
            "Recall@1": 0.5,
            "NDCG@1": 0.5,
            "HitRate@1": 0.5,
            "Coverage@1": 0.2,
            "LongTail@1": 1 / 3,
            "Recall@3": (2 / 3 + 1) / 2,
            "NDCG@3": (ndcg_user0 + 1) / 2,
            "HitRate@3": 1.0,
            "Coverage@3": 0.8,
            "LongTail@3": 2 / 3,
        },
        abs=1e-6,
    )
    assert ndcg_user0 == pytest.approx(0.53072, abs=1e-5)


def test_recall_denominator_is_test_size() -> None:
    # LightGCN convention: 5 test products and all 3 slots hit gives Recall@3 = 3/5 = 0.6, not 3/3;
    # NDCG@3 is 1 because the ideal list also has only 3 slots (IDCG over min(3, 5) ranks).
    # The user's ids are 4 (row 0) to check that rows of 'test_csr' are looked up by user id.
    test = csr([[], [], [], [], [0, 1, 2, 3, 4]], num_products=6)
    out = evaluate_ranking(np.array([[0, 1, 2]]), test, np.array([4]), 6, np.ones(6), ks=(3,))
    assert out["Recall@3"] == pytest.approx(0.6)
    assert out["NDCG@3"] == pytest.approx(1.0)


def naive_metrics(
    top_k: np.ndarray, test: list[set[int]], num_products: int, tail: set[int], k: int
) -> dict[str, float]:
    recall, ndcg, hit, tail_slots = [], [], [], 0
    for ranked, relevant in zip(top_k[:, :k].tolist(), test, strict=True):
        tail_slots += sum(p in tail for p in ranked)
        if not relevant:
            continue
        hits = [p in relevant for p in ranked]
        recall.append(sum(hits) / len(relevant))
        dcg = sum(1 / math.log2(rank + 2) for rank, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
        ndcg.append(dcg / idcg)
        hit.append(float(any(hits)))
    return {
        f"Recall@{k}": float(np.mean(recall)),
        f"NDCG@{k}": float(np.mean(ndcg)),
        f"HitRate@{k}": float(np.mean(hit)),
        f"Coverage@{k}": len(set(top_k[:, :k].ravel().tolist())) / num_products,
        f"LongTail@{k}": tail_slots / top_k[:, :k].size,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_ranking_matches_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_users, num_products, n = 40, 60, 25
    users = rng.choice(num_users, size=n, replace=False)
    top_k = np.stack([rng.permutation(num_products)[:20] for _ in range(n)])
    test_rows = [
        sorted(rng.choice(num_products, size=rng.integers(0, 8), replace=False)) for _ in range(num_users)
    ]
    test = csr([list(r) for r in test_rows], num_products)
    popularity = rng.integers(0, 100, size=num_products)
    tail = set(np.argsort(-popularity, kind="stable")[round(0.2 * num_products) :].tolist())

    out = evaluate_ranking(torch.from_numpy(top_k), test, torch.from_numpy(users), num_products, popularity)

    expected = {}
    for k in (10, 20):
        expected |= naive_metrics(top_k, [set(test_rows[u]) for u in users], num_products, tail, k)
    assert out == pytest.approx(expected, abs=1e-6)


def test_metric_collection_accumulates_and_resets() -> None:
    rng = np.random.default_rng(3)
    top_k = torch.from_numpy(np.stack([rng.permutation(30)[:5] for _ in range(10)]))
    test = csr([list(rng.choice(30, size=3, replace=False)) for _ in range(10)], 30)
    popularity = rng.integers(0, 10, size=30)
    whole = evaluate_ranking(top_k, test, np.arange(10), 30, popularity, ks=(5,))

    metrics = ranking_metrics((5,), 30, popularity)
    for users in (np.arange(4), np.arange(4, 10)):  # two batches, row positions local to each
        rows = test[users]
        label = torch.stack(
            [
                torch.from_numpy(np.repeat(np.arange(len(users)), np.diff(rows.indptr))),
                torch.from_numpy(rows.indices).long(),
            ]
        )
        metrics.update(top_k[users], label)
    assert {name: float(v) for name, v in metrics.compute().items()} == pytest.approx(whole)

    metrics.reset()
    assert all(float(v) == 0.0 for v in metrics.compute().values())


def test_metrics_declare_direction_and_check_k() -> None:
    metrics = ranking_metrics((10, 20), 50, np.arange(50))
    assert list(metrics.keys())[:5] == ["Recall@10", "NDCG@10", "HitRate@10", "Coverage@10", "LongTail@10"]
    assert all(metric.higher_is_better for metric in metrics.values())
    with pytest.raises(ValueError):
        ranking_metrics((0,), 50, np.arange(50))
    with pytest.raises(ValueError):
        evaluate_ranking(
            np.zeros((2, 5), dtype=np.int64), csr([[], []], 10), np.arange(2), 10, np.ones(10), ks=(10,)
        )
    with pytest.raises(ValueError):
        evaluate_ranking(np.full((2, 5), 10), csr([[], []], 10), np.arange(2), 10, np.ones(10), ks=(5,))
    with pytest.raises(ValueError):
        LinkPredLongTail(5, np.ones(10), head_fraction=1.5)


def test_long_tail_head_ties_go_to_lower_id() -> None:
    # Three products tie at the top; the head (2 of 10) is products 0 and 1, so product 2 is tail.
    metric = LinkPredLongTail(1, np.array([5, 5, 5, 1, 0, 0, 0, 0, 0, 0]))
    metric.update(torch.tensor([[0], [1], [2], [9]]), torch.empty(2, 0, dtype=torch.long))
    assert float(metric.compute()) == pytest.approx(0.5)
    assert repr(metric) == "LinkPredLongTail(k=1, head_fraction=0.2)"


@pytest.mark.parametrize("batch_size", [1, 3, 2048])
def test_rank_top_k_matches_dense_argsort(batch_size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    num_users, num_products, k = 12, 30, 7
    user_emb = torch.randn(num_users, 8, generator=gen)
    product_emb = torch.randn(num_products, 8, generator=gen)
    rng = np.random.default_rng(0)
    train_rows = [
        list(rng.choice(num_products, size=rng.integers(0, 15), replace=False)) for _ in range(num_users)
    ]
    train = csr(train_rows, num_products)
    users = torch.tensor([11, 0, 5, 5, 3, 8, 2])

    top_k = rank_top_k(user_emb, product_emb, users, train, k, batch_size=batch_size)

    assert top_k.shape == (len(users), k) and top_k.dtype == torch.long
    scores = (user_emb @ product_emb.T).numpy()
    scores[train.toarray() > 0] = -np.inf
    expected = np.argsort(-scores[users.numpy()], axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k.numpy(), expected)
    for user, ranked in zip(users.tolist(), top_k.tolist(), strict=True):
        assert not set(ranked) & set(train_rows[user])


def test_rank_top_k_rejects_too_few_candidates() -> None:
    train = csr([[0, 1, 2], [0]], num_products=5)
    with pytest.raises(ValueError, match="user 0 has fewer than k=3"):
        rank_top_k(torch.ones(2, 2), torch.ones(5, 2), torch.tensor([1, 0]), train, 3)
    with pytest.raises(ValueError):
        rank_top_k(torch.ones(2, 2), torch.ones(5, 2), torch.tensor([0]), train, 6)


def test_popularity_top_k_hand_computed() -> None:
    # Buyers per product: p0 3, p1 1, p2 2, p3 2, p4 0, p5 0 -> order 0, 2, 3, 1, 4, 5 (ties: lower id).
    train = csr([[0, 1], [0, 2, 3], [0, 2, 3], []], num_products=6)
    np.testing.assert_array_equal(product_popularity(train), [3, 1, 2, 2, 0, 0])
    top = popularity_top_k(train, torch.tensor([0, 1, 3]), k=3, batch_size=2)
    # user 0 bought 0, 1 -> 2, 3, 4; user 1 bought 0, 2, 3 -> 1, 4, 5; user 3 bought nothing -> 0, 2, 3.
    assert top.tolist() == [[2, 3, 4], [1, 4, 5], [0, 2, 3]]
