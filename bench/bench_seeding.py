"""Benchmark of influence-maximisation seed selection (`select_seeds`, OPIM-C over RR sets).

    .venv/bin/python bench/bench_seeding.py --nodes 1000000 --repeats 3 --out-json FILE

(a) NetHEPT (--nethept, the published NetHEPT.txt), k = 50, epsilon = 0.1: selection wall time after an untimed
    warm-up call (numba load/compile), the selected seeds' spread (OPIM-C's own estimate and an independent
    one from fresh RR sets) and, for a ratio, the spread of the top-out-degree seeds; the same selection with
    the standard sampler is the same-process baseline for SUBSIM.
(b) A synthetic graph of --nodes nodes with ~--arcs-per-node arcs each: Chung-Lu, endpoints drawn in
    proportion to independent lognormal(0, 1) out- and in-weights (heavy-tailed degrees), weighted-cascade
    probabilities p_uv = 1 / in-degree(v), so every node has one live in-arc in expectation (the regime
    where RR sets are largest for the degree; OPIM-C's authors' code took 6.1 s on such a graph, 80 copies of
    ca-HepPh, here). Selection time for SUBSIM and the standard sampler, RR sets used, the RR
    collection bytes and the process's peak RSS (ru_maxrss, before and after selecting).

(c) With --world DIR, a `sharerank simulate` world (e.g. 1,000,000 users, --mean-degree 20: ~20M social
    arcs): the influence model learned from its shares, the learned IC graph of the most shared category,
    then selection time, RR sets and memory on it (the issue's 1M-user target: k = 50 in <= 10 s).

Prints JSON to stdout (and to --out-json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numba
import numpy as np
from report import emit, log

from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.opim import estimate_spread, select_seeds

NETHEPT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nethept" / "NetHEPT.txt"


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load_nethept(path: Path) -> ICGraph:
    with path.open() as f:
        n = int(f.readline().split()[0])
    arcs = np.loadtxt(path, skiprows=1)
    return ICGraph.from_arcs(arcs[:, 0].astype(np.int64), arcs[:, 1].astype(np.int64), arcs[:, 2], num_nodes=n)


def chung_lu_wc(n: int, arcs_per_node: int, seed: int) -> ICGraph:
    """Heavy-tailed directed graph with weighted-cascade probabilities (see the module docstring)."""
    rng = np.random.default_rng(seed)
    m = n * arcs_per_node
    ends = []
    for weights in (rng.lognormal(0.0, 1.0, n), rng.lognormal(0.0, 1.0, n)):
        cdf = np.cumsum(weights)
        ends.append(np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1]), n - 1))
    src, dst = ends
    in_degree = np.bincount(dst, minlength=n)
    return ICGraph.from_arcs(src, dst, 1.0 / in_degree[dst], num_nodes=n)


def top_degree(graph: ICGraph, k: int) -> np.ndarray:
    return np.argsort(-graph.out_degree(), kind="stable")[:k]


def timed(graph: ICGraph, k: int, epsilon: float, sampler: str, repeats: int) -> tuple[dict, list]:
    """Wall and CPU seconds (all threads) of ``repeats`` selections with seeds ``0..``, and their results.
    CPU time is reported because on a shared machine wall time also counts waiting for a core."""
    wall, cpu, results = [], [], []
    for r in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = select_seeds(graph, k, epsilon=epsilon, sampler=sampler, seed=r)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        results.append(result)
        log(f"  {sampler} run {r + 1}/{repeats}: {wall[-1]:.3f}s ({cpu[-1]:.3f}s CPU), {result.num_rr_sets} RR sets,"
            f" estimated spread {result.cumulative[-1]:.1f}, certified ratio {result.approximation:.3f}")
    times = {"median_s": round(statistics.median(wall), 4), "min_s": round(min(wall), 4),
             "max_s": round(max(wall), 4), "seconds": [round(s, 4) for s in wall],
             "cpu_median_s": round(statistics.median(cpu), 4), "cpu_seconds": [round(s, 4) for s in cpu]}
    return times, results


def bench_nethept(path: Path, k: int, epsilon: float, repeats: int, eval_sets: int) -> dict:
    graph = load_nethept(path)
    log(f"NetHEPT: {graph.num_nodes} nodes, {graph.num_arcs} arcs")
    started = time.perf_counter()
    select_seeds(graph, k, epsilon=epsilon, sampler="subsim")
    select_seeds(graph, k, epsilon=epsilon, sampler="standard")
    log(f"  warm-up (numba load/compile): {time.perf_counter() - started:.2f}s")
    times, results = timed(graph, k, epsilon, "subsim", repeats)
    base_times, _ = timed(graph, k, epsilon, "standard", repeats)
    middle = results[len(results) // 2]
    independent = estimate_spread(graph, middle.seeds, num_rr_sets=eval_sets, seed=12345)
    degree = estimate_spread(graph, top_degree(graph, k), num_rr_sets=eval_sets, seed=12345)
    log(f"  independent spread ({eval_sets} fresh RR sets): OPIM-C seeds {independent:.1f}, "
        f"top-degree {degree:.1f}")
    return {
        "graph": {"nodes": graph.num_nodes, "arcs": graph.num_arcs, "file": str(path)},
        "k": k, "epsilon": epsilon,
        "selection_subsim": times,
        "baseline": "same selection with the standard sampler (one coin per in-arc), same process",
        "selection_standard": base_times,
        "ratio_standard_to_subsim": round(base_times["median_s"] / times["median_s"], 2),
        "ratio_standard_to_subsim_cpu": round(base_times["cpu_median_s"] / times["cpu_median_s"], 2),
        "rr_sets": [r.num_rr_sets for r in results],
        "mean_rr_size": round(middle.mean_rr_size, 3),
        "certified_ratio": [round(r.approximation, 4) for r in results],
        "spread_opim_estimate": [round(float(r.cumulative[-1]), 1) for r in results],
        "spread_opim_lower_bound": [round(r.lower_bound, 1) for r in results],
        "spread_opim_independent": round(independent, 1),
        "spread_top_degree_independent": round(degree, 1),
        "independent_rr_sets": eval_sets,
        "ratio_spread_opim_to_top_degree": round(independent / degree, 3),
    }


def bench_synthetic(nodes: int, arcs_per_node: int, k: int, epsilon: float, repeats: int, eval_sets: int) -> dict:
    started = time.perf_counter()
    select_seeds(chung_lu_wc(50_000, arcs_per_node, seed=1), k, epsilon=epsilon)  # threaded kernels too
    log(f"synthetic warm-up on 50k nodes: {time.perf_counter() - started:.2f}s")
    started = time.perf_counter()
    graph = chung_lu_wc(nodes, arcs_per_node, seed=0)
    generation = time.perf_counter() - started
    log(f"synthetic: {graph.num_nodes} nodes, {graph.num_arcs} arcs, generated in {generation:.1f}s")
    rss_before = maxrss_mb()
    times, results = timed(graph, k, epsilon, "subsim", repeats)
    base_times, base_results = timed(graph, k, epsilon, "standard", repeats)
    middle = results[len(results) // 2]
    independent = estimate_spread(graph, middle.seeds, num_rr_sets=eval_sets, seed=12345)
    degree = estimate_spread(graph, top_degree(graph, k), num_rr_sets=eval_sets, seed=12345)
    log(f"  independent spread ({eval_sets} fresh RR sets): OPIM-C seeds {independent:.1f}, "
        f"top-degree {degree:.1f}")
    return {
        "graph": {"nodes": graph.num_nodes, "arcs": graph.num_arcs, "generated_s": round(generation, 1),
                  "model": "Chung-Lu, lognormal(0, 1) out/in weights, weighted cascade p = 1/in-degree",
                  "max_in_degree": int(graph.in_degree().max()), "max_out_degree": int(graph.out_degree().max())},
        "k": k, "epsilon": epsilon,
        "selection_subsim": times,
        "baseline": "same selection with the standard sampler (one coin per in-arc), same process",
        "selection_standard": base_times,
        "ratio_standard_to_subsim": round(base_times["median_s"] / times["median_s"], 2),
        "ratio_standard_to_subsim_cpu": round(base_times["cpu_median_s"] / times["cpu_median_s"], 2),
        "rr_sets": [r.num_rr_sets for r in results],
        "rr_sets_standard": [r.num_rr_sets for r in base_results],
        "mean_rr_size": round(middle.mean_rr_size, 2),
        "method": middle.method,
        "certified_ratio": [round(r.approximation, 4) for r in results],
        "spread_opim_estimate": [round(float(r.cumulative[-1]), 1) for r in results],
        "spread_opim_independent": round(independent, 1),
        "spread_top_degree_independent": round(degree, 1),
        "independent_rr_sets": eval_sets,
        "rr_collection_mb": round(middle.memory_bytes / 2**20, 1),
        "graph_csr_mb": round(graph.nbytes() / 2**20, 1),
        "maxrss_before_selection_mb": round(rss_before, 1),
        "maxrss_after_selection_mb": round(maxrss_mb(), 1),
    }


def bench_world(world: Path, k: int, epsilon: float, repeats: int, eval_sets: int) -> dict:
    from sharerank.dataset.reader import load_dataset
    from sharerank.models.seeding.influence import InfluenceModel

    started = time.perf_counter()
    dataset = load_dataset(world)
    loaded = time.perf_counter()
    log(f"world {world}: {dataset.num_users} users, {len(dataset.shares.id)} shares, loaded in {loaded - started:.1f}s")
    influence = InfluenceModel.fit(dataset)
    fitted = time.perf_counter()
    names, counts = np.unique(dataset.category[dataset.shares.product], return_counts=True)
    category = str(names[np.argmax(counts)])
    graph = influence.ic_graph(category)
    built = time.perf_counter()
    log(f"influence fitted in {fitted - loaded:.1f}s; {category} graph ({graph.num_arcs} arcs) "
        f"in {built - fitted:.1f}s")
    del dataset
    rss_before = maxrss_mb()
    times, results = timed(graph, k, epsilon, "subsim", repeats)
    middle = results[len(results) // 2]
    independent = estimate_spread(graph, middle.seeds, num_rr_sets=eval_sets, seed=12345)
    degree = estimate_spread(graph, top_degree(graph, k), num_rr_sets=eval_sets, seed=12345)
    return {
        "world": str(world), "users": graph.num_nodes, "arcs": graph.num_arcs, "category": category,
        "load_s": round(loaded - started, 1), "influence_fit_s": round(fitted - loaded, 1),
        "ic_graph_s": round(built - fitted, 1), "k": k, "epsilon": epsilon,
        "selection_subsim": times, "rr_sets": [r.num_rr_sets for r in results],
        "mean_rr_size": round(middle.mean_rr_size, 2), "method": middle.method,
        "certified_ratio": [round(r.approximation, 4) for r in results],
        "spread_opim_independent": round(independent, 1), "spread_top_degree_independent": round(degree, 1),
        "rr_collection_mb": round(middle.memory_bytes / 2**20, 1), "graph_csr_mb": round(graph.nbytes() / 2**20, 1),
        "maxrss_before_selection_mb": round(rss_before, 1), "maxrss_after_selection_mb": round(maxrss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nethept", type=Path, default=NETHEPT)
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--arcs-per-node", type=int, default=20)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-rr-sets", type=int, default=1_000_000,
                        help="fresh RR sets behind the independent spread estimates")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--world", type=Path, help="A `sharerank simulate` folder to select seeds on (section c).")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()

    result = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "numba_threads": numba.get_num_threads(), "load_average_at_start": os.getloadavg()}
    if args.nethept.is_file():
        result["nethept"] = bench_nethept(args.nethept, args.k, args.epsilon, args.repeats, args.eval_rr_sets)
    else:
        log(f"NetHEPT not found at {args.nethept}: skipped")
    if not args.skip_synthetic:
        result["synthetic"] = bench_synthetic(args.nodes, args.arcs_per_node, args.k, args.epsilon, args.repeats,
                                              min(args.eval_rr_sets, 200_000))
    if args.world is not None:
        result["world"] = bench_world(args.world, args.k, args.epsilon, args.repeats,
                                      min(args.eval_rr_sets, 200_000))
    result["load_average_at_end"] = os.getloadavg()
    emit(result, args.out_json)


if __name__ == "__main__":
    main()
