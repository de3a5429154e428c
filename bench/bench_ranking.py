"""Benchmark of full-ranking evaluation: every test user ranked over the whole catalogue, known purchases
excluded, top 50 kept (what `sharerank eval` does per model).

    .venv/bin/python bench/bench_ranking.py --data DIR [--model graphfilter] --repeats 3 --out-json FILE

Fits the model once (untimed here; its fit time is reported), then times `rank` over all test users with the
served form (user and product vectors plus the sparse item-item part, what FAISS and the feed use) and, as the
same-process baseline, with the exact model where it has one (the graph filter's and EASE's dense scores).
Prints JSON to stdout (and to --out-json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from report import emit, log

from sharerank.dataset.reader import load_dataset
from sharerank.training.feed.evaluate import held_out_users, rank, ranked_depth
from sharerank.training.feed.fit import fit_model
from sharerank.training.feed.split import split_dataset


def time_ranking(scorer, users, seen, depth: int, repeats: int) -> list[float]:
    seconds = []
    for run in range(repeats):
        started = time.perf_counter()
        rank(scorer, users, seen, depth)
        seconds.append(time.perf_counter() - started)
        log(f"  run {run + 1}/{repeats}: {seconds[-1]:.1f}s")
    return seconds


def summary(seconds: list[float]) -> dict:
    return {"seconds": [round(s, 2) for s in seconds], "median_s": round(statistics.median(seconds), 2),
            "min_s": round(min(seconds), 2), "max_s": round(max(seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="graphfilter")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    split = split_dataset(dataset)
    log(f"fitting {args.model} on {args.data}")
    fitted = fit_model(args.model, dataset, split)
    users, seen, _ = held_out_users(dataset, split)
    depth = ranked_depth(args.k)
    log(f"served form: {len(users):,} users x {dataset.num_products:,} products, top {depth}")
    result = {"data": str(args.data), "model": args.model, "users": int(len(users)),
              "products": int(dataset.num_products), "depth": depth, "repeats": args.repeats,
              "fit_seconds": round(fitted.fit_seconds, 2), "served": summary(time_ranking(
                  fitted.scorer, users, seen, depth, args.repeats))}
    if fitted.exact is not None:
        log("baseline: the exact model")
        result["exact"] = summary(time_ranking(fitted.exact, users, seen, depth, args.repeats))
        result["ratio_exact_to_served"] = round(result["exact"]["median_s"] / result["served"]["median_s"], 2)
    result["machine"] = {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                         "python": platform.python_version()}
    emit(result, args.out_json)


if __name__ == "__main__":
    main()
