"""The evaluation harness: same split and exclusions for every model; `recommend` writes the scored lists."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.dataset.reader import load_dataset
from sharerank.models.recommenders.registry import REGISTRY, ModelSpec
from sharerank.training.feed import evaluate as harness
from sharerank.training.feed.evaluate import EmbeddingScorer, evaluate, fit_model, held_out_users, rank
from sharerank.training.feed.metrics import evaluate_ranking
from sharerank.training.feed.split import split_dataset
from sharerank.training.feed.train import TrainConfig
from sharerank.training.jobs import run_recommend

SMALL = TrainConfig(model="lightgcn", epochs=3, embedding_dim=8, num_layers=1, batch_size=1024, patience=3)


def test_rank_excludes_seen_products_and_matches_a_naive_sort() -> None:
    rng = np.random.default_rng(0)
    scorer = EmbeddingScorer(torch.randn(30, 4, generator=torch.Generator().manual_seed(1)),
                             torch.randn(50, 4, generator=torch.Generator().manual_seed(2)))
    seen = sp.random(30, 50, density=0.2, format="csr", random_state=3)
    seen.data[:] = 1
    users = rng.permutation(30)[:12]
    top, scores = rank(scorer, users, seen, k=7, batch_size=5)
    for row, user in enumerate(users):
        s = (scorer.user_embedding[user] @ scorer.product_embedding.T).numpy()
        s[seen[user].indices] = -np.inf
        assert top[row].tolist() == np.argsort(-s, kind="stable")[:7].tolist()
        np.testing.assert_allclose(scores[row], np.sort(s)[::-1][:7], rtol=1e-5)


@pytest.fixture(scope="module")
def world(tiny_world: Path):
    dataset = load_dataset(tiny_world)
    return dataset, split_dataset(dataset, seed=0)


def test_every_model_is_scored_with_the_same_metrics(world) -> None:
    dataset, split = world
    results = evaluate(dataset, split, ["popularity", "itemknn", "lightgcn"], configs={"lightgcn": SMALL})
    expected = {f"{m}@{c}" for m in ("Recall", "NDCG", "HitRate", "Coverage", "LongTail") for c in (1, 5, 10, 20, 50)}
    for name in ("popularity", "itemknn", "lightgcn"):
        assert set(results[name]["metrics"]) == expected
        assert 0 <= results[name]["metrics"]["Recall@20"] <= 1
    assert results["popularity"]["metrics"]["LongTail@20"] == 0.0  # popularity never leaves the head
    assert results["lightgcn"]["refit_epochs"] == results["lightgcn"]["best_epoch"]


class TooBig:
    """A baseline whose fit runs out of memory."""

    def fit(self, matrix):
        raise MemoryError("needs 80 GB")


def test_a_model_that_cannot_run_is_reported_as_skipped(world, monkeypatch) -> None:
    monkeypatch.setitem(REGISTRY, "toobig", ModelSpec("toobig", f"{__name__}:TooBig", trainable=False,
                                                      servable=False))
    results = evaluate(*world, ["toobig"])
    assert results == {"toobig": {"skipped": "needs 80 GB"}}


def test_unknown_model_is_a_value_error(world) -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        fit_model("nope", *world)


@pytest.mark.parametrize("model", ["itemknn", "lightgcn"])
def test_recommend_writes_the_lists_eval_scores(world, tiny_world: Path, tmp_path: Path, model: str,
                                                monkeypatch) -> None:
    dataset, split = world
    monkeypatch.setattr(harness, "default_config", lambda name: SMALL)
    out = tmp_path / "recs.csv"
    summary = run_recommend(tiny_world, model, 20, out)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["rows"] == 20 * summary["users"]
    users, seen, test = held_out_users(dataset, split)
    user_rows = {u: i for i, u in enumerate(dataset.users.tolist())}
    product_rows = {p: i for i, p in enumerate(dataset.products.tolist())}
    lists: dict[int, list[int]] = {}
    for row in rows:
        lists.setdefault(user_rows[row["user_id"]], []).append(product_rows[row["product_id"]])
    top = np.array([lists[u] for u in users])
    recomputed = evaluate_ranking(top, test, users, dataset.num_products, np.asarray(seen.sum(axis=0)).ravel(),
                                  ks=(20,))
    scored = evaluate(dataset, split, [model], configs={"lightgcn": SMALL})[model]["metrics"]
    assert recomputed["Recall@20"] == pytest.approx(scored["Recall@20"])
    assert recomputed["NDCG@20"] == pytest.approx(scored["NDCG@20"])
