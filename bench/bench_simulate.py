"""Benchmark of the synthetic world generator.

    .venv/bin/python bench/bench_simulate.py --users 100000 --repeats 3 --out-json FILE

Times `simulate_world` (files included) after an untimed warm-up that loads or compiles the numba code, and
a same-process baseline: writing one CSV with as many rows as all the world's files together (shaped like
shares.csv) straight from numpy through pyarrow, i.e. the I/O floor. Prints JSON to stdout (and to
--out-json); progress goes to stderr. Worlds are written to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from report import emit, log

from sharerank.training.sources.simulate import CATEGORIES, simulate_world


def time_world(folder: Path, users: int, seed: int) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = simulate_world(folder, users=users, seed=seed)
    return time.perf_counter() - started, summary


def rows_written(summary: dict) -> int:
    """Data rows in all the files of a world (interests: one row per user and category)."""
    return (summary["products"] + summary["purchases"] + summary["shares"] + 2 * summary["social_arcs"]
            + summary["users"] * (1 + len(CATEGORIES)))


def time_csv_floor(folder: Path, rows: int) -> float:
    """Seconds to build and write a shares.csv-shaped table (3 string id columns, 2 integer columns)."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    ids = pa.array(rng.integers(0, 10**7, rows)).cast(pa.string())
    table = pa.table({"share_id": ids, "sharer_id": ids, "recipient_id": ids,
                      "product_id": rng.integers(0, 10**6, rows), "ts": rng.integers(0, 2**31, rows)})
    pa_csv.write_csv(table, folder / "floor.csv")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        tmp = Path(tmp)
        warmup, _ = time_world(tmp / "warmup", 1000, args.seed)
        log(f"warm-up (1000 users, includes numba load/compile): {warmup:.2f}s")
        seconds = []
        for run in range(args.repeats):
            elapsed, summary = time_world(tmp / f"run{run}", args.users, args.seed)
            seconds.append(elapsed)
            log(f"run {run + 1}/{args.repeats}: {elapsed:.2f}s, {summary['shares']} shares")
        rows = rows_written(summary)
        floor = time_csv_floor(tmp, rows)
        log(f"baseline (write a {rows}-row CSV from numpy): {floor:.2f}s")

    median = statistics.median(seconds)
    result = {
        "users": args.users, "seed": args.seed, "repeats": args.repeats,
        "shares": summary["shares"], "purchases": summary["purchases"],
        "share_purchases": summary["share_purchases"], "social_arcs": summary["social_arcs"],
        "max_cascade_depth": summary["max_cascade_depth"],
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(median, 3), "min_s": round(min(seconds), 3), "max_s": round(max(seconds), 3),
        "warmup_1000_users_s": round(warmup, 3),
        "rows_written": rows,
        "baseline": "pyarrow write, same process, of a CSV built from numpy with rows_written rows",
        "baseline_s": round(floor, 3),
        "ratio_median_to_baseline": round(median / floor, 2),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    emit(result, args.out_json)


if __name__ == "__main__":
    main()
