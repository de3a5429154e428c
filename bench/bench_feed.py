"""Benchmark of the feed pipeline's own time per GetFeed (no gRPC, no network store).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feed.py --products 1000000 --out-json FILE

Builds a synthetic served model (random embeddings, a power-law popularity, categories and sellers; the
index is the one ``ProductIndex.build`` picks for the size: IVF above 100k products) and an in-process
online store holding live purchases, friends' purchases and shares for some users, then times
``FeedPipeline.run`` after a warm-up over these cases: a known user's first page, their fourth page (60
served ids in the token), a user with live social proof, a cold user served from the people who shared to
them, and a user with nothing known (popular). Prints JSON with p50/p90/p99 in microseconds to stdout
(and to --out-json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the server: one FAISS thread per request

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from report import log

from sharerank.models.artifact.bundle import ModelBundle  # noqa: E402
from sharerank.models.artifact.index import ProductIndex  # noqa: E402
from sharerank.serving.feed.pipeline import FeedPipeline  # noqa: E402
from sharerank.serving.online_store import InMemoryOnlineStore, Purchase  # noqa: E402
from sharerank.serving.online_store.base import Share  # noqa: E402


def synthetic_bundle(products: int, users: int, dim: int, seed: int = 0, clusters: int = 0) -> ModelBundle:
    """A served model of random data. ``clusters`` > 0 draws products and users around that many shared
    centres (trained embeddings are clustered, and IVF recall depends on it); 0: isotropic Gaussian."""
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        product_embedding = centres[rng.integers(0, clusters, products)]
        product_embedding += 0.5 * rng.standard_normal((products, dim), dtype=np.float32)
        product_embedding /= np.sqrt(dim)
        user_embedding = centres[rng.integers(0, clusters, users)]
        user_embedding += 0.5 * rng.standard_normal((users, dim), dtype=np.float32)
        user_embedding /= np.sqrt(dim)
    else:
        product_embedding = rng.standard_normal((products, dim), dtype=np.float32) / np.sqrt(dim)
        user_embedding = rng.standard_normal((users, dim), dtype=np.float32) / np.sqrt(dim)
    popularity = rng.zipf(1.6, products).clip(max=100_000) - 1
    per_user = rng.integers(0, 30, users)
    rows = np.repeat(np.arange(users), per_user)
    cols = rng.integers(0, products, len(rows))
    history = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(users, products))
    history.sum_duplicates()
    src = rng.integers(0, users, users * 10)
    dst = rng.integers(0, users, users * 10)
    friends = sp.csr_matrix((np.ones(len(src), dtype=np.float32), (src, dst)), shape=(users, users))
    friends.sum_duplicates()
    log(f"building the index over {products:,} products")
    started = time.perf_counter()
    index = ProductIndex.build(product_embedding)
    log(f"index {index.kind} built in {time.perf_counter() - started:.1f}s")
    return ModelBundle(
        users=np.array([f"u{i}" for i in range(users)], dtype=object),
        products=np.array([f"p{i}" for i in range(products)], dtype=object),
        category=np.array([f"c{i}" for i in range(50)], dtype=object)[rng.integers(0, 50, products)],
        in_stock=rng.random(products) < 0.95,
        user_embedding=user_embedding, product_embedding=product_embedding, history=history, friends=friends,
        popularity=popularity, index=index, info={"model_type": "synthetic"},
        seller=np.array([f"s{i}" for i in range(max(10, products // 100))], dtype=object)[
            rng.integers(0, max(10, products // 100), products)],
    ).warm()


def time_calls(run, repeats: int) -> dict[str, float]:
    for _ in range(min(50, repeats)):
        run()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - started) / 1000)
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {"p50_us": round(float(p50), 1), "p90_us": round(float(p90), 1), "p99_us": round(float(p99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out-json", default=None)
    args = parser.parse_args()

    bundle = synthetic_bundle(args.products, args.users, args.dim)
    rng = np.random.default_rng(1)
    store = InMemoryOnlineStore()
    now = time.time()
    pick = lambda n: [str(bundle.products[p]) for p in rng.integers(0, args.products, n)]  # noqa: E731
    store.record_purchases([Purchase("u1", p, now - i) for i, p in enumerate(pick(20))])
    store.record_friend_purchases([("u2", Purchase(f"u{10 + i % 7}", p, now - 60 * i))
                                   for i, p in enumerate(pick(50))])
    store.record_shares([Share(f"u{20 + i % 5}", "u2", p, now - 60 * i) for i, p in enumerate(pick(20))])
    store.record_shares([Share(f"u{30 + i}", "newcomer", p, now) for i, p in enumerate(pick(3))])
    pipeline = FeedPipeline(store)
    page = args.page_size
    served = frozenset(pipeline_pages(pipeline, bundle, "u1", page, 3))

    cases = {
        "known_user_first_page": lambda: pipeline.run(model=bundle, user_id="u1", page_size=page, explain=True),
        "known_user_fourth_page": lambda: pipeline.run(model=bundle, user_id="u1", page_size=page, served=served,
                                                       explain=True),
        "social_proof_user": lambda: pipeline.run(model=bundle, user_id="u2", page_size=page, explain=True),
        "cold_user_from_sharers": lambda: pipeline.run(model=bundle, user_id="newcomer", page_size=page,
                                                       explain=True),
        "unknown_user_popular": lambda: pipeline.run(model=bundle, user_id="nobody", page_size=page, explain=True),
    }
    results = {}
    for name, run in cases.items():
        results[name] = time_calls(run, args.repeats)
        log(f"{name}: {results[name]}")
    report = {"products": args.products, "users": args.users, "dim": args.dim, "page_size": page,
              "index": bundle.index.kind, "repeats": args.repeats, "python": platform.python_version(),
              "machine": platform.machine(), "cases": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out_json:
        with open(args.out_json, "w") as out:
            out.write(text + "\n")


def pipeline_pages(pipeline: FeedPipeline, bundle: ModelBundle, user: str, page: int, pages: int) -> list[int]:
    served: list[int] = []
    for _ in range(pages):
        served += [c.product for c in pipeline.run(model=bundle, user_id=user, page_size=page,
                                                   served=frozenset(served)).items]
    return served


if __name__ == "__main__":
    main()
