"""`sharerank seed` and `sharerank eval-seeding` end to end on real folders: a simulated world and NetHEPT.

Reported reach and its interval are checked against Monte Carlo runs of the tests' own, on graphs the tests
build themselves (from ``truth/`` for the simulated world), never against the report's own numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.dataset.reader import load_dataset
from sharerank.models.seeding.cascades import share_roots
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.plan import SeedingContext
from sharerank.models.seeding.spread import monte_carlo_spread
from sharerank.training.sources.importers import import_nethept

runner = CliRunner()
Z95 = 1.959963984540054


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def agrees(reported: float, ci95: list[float], check: float, check_se: float, z: float = 4.0) -> bool:
    """Whether a reported Monte Carlo mean (with its 95% interval) and an independent estimate differ by no
    more than ``z`` standard errors of their difference (plus rounding: the report keeps 3 decimals)."""
    reported_se = (ci95[1] - ci95[0]) / (2 * Z95)
    return abs(reported - check) <= z * math.hypot(reported_se, check_se) + 2e-3


def test_seed_reach_and_interval_match_an_independent_simulation(tiny_world: Path) -> None:
    report = invoke("seed", "--data", str(tiny_world), "--k", "5", "--category", "Beauty", "--mc-runs", "500")
    assert report["category"] == "Beauty" and len(report["seeds"]) == 5
    assert all(s["reasons"] for s in report["seeds"])
    reach = [s["cumulative_reach"] for s in report["seeds"]]
    assert reach == sorted(reach) and np.allclose(np.cumsum([s["marginal_reach"] for s in report["seeds"]]), reach,
                                                  atol=5e-3)
    # The same learned graph, simulated again with another stream and 8x the runs.
    world = load_dataset(tiny_world)
    context = SeedingContext.from_dataset(world, seed=0)
    asked = context.graph("Beauty").with_seed_handles(context.compliance)  # seeds share with their compliance
    rows = {u: i for i, u in enumerate(world.users.tolist())}
    seeds = np.array([rows[s["user_id"]] for s in report["seeds"]]) + world.num_users
    check = monte_carlo_spread(asked, seeds, runs=4000, seed=424242)
    check = dataclasses.replace(check, prefix_mean=check.prefix_mean - np.arange(1, len(seeds) + 1))
    check_se = (check.prefix_ci_high - check.prefix_ci_low) / (2 * Z95)
    for j, s in enumerate(report["seeds"]):
        assert agrees(s["cumulative_reach"], s["ci95"], check.prefix_mean[j], check_se[j]), (j, s, check.prefix_mean[j])
    # The interval is a real one: as wide as 500 runs of this reach's spread make it (within 25%).
    widths = np.array([s["ci95"][1] - s["ci95"][0] for s in report["seeds"]])
    expected = 2 * Z95 * check_se * math.sqrt(4000 / 500)
    assert np.all(np.abs(widths - expected) <= 0.25 * expected + 2e-3), (widths, expected)


def test_seed_for_a_product_excludes_its_buyers(tiny_world: Path) -> None:
    world = load_dataset(tiny_world)
    product = world.products[world.purchases.product[0]]
    buyers = set(world.users[world.purchases.user[world.purchases.product == world.purchases.product[0]]].tolist())
    report = invoke("seed", "--data", str(tiny_world), "--k", "5", "--product", str(product), "--mc-runs", "500")
    assert not buyers & {s["user_id"] for s in report["seeds"]}


@pytest.mark.parametrize(("args", "message"), [
    (["--k", "0"], "budget"),
    (["--k", "5", "--product", "nope"], "unknown product"),
    (["--k", "5", "--category", "Garden gnomes"], "unknown category"),
    (["--k", "5", "--product", "p001", "--category", "Beauty"], "not both"),
    (["--k", "5", "--ring-policy", "welcome"], "ring_policy"),
    (["--k", "5", "--max-fatigue", "1.5"], "max-fatigue"),
])
def test_seed_bad_input_exits_2(tiny_world: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["seed", "--data", str(tiny_world), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def true_graph_from_files(world_dir: Path, category: str) -> tuple[ICGraph, dict[str, int]]:
    """The simulated world's true IC graph for a launch in ``category``, read from ``truth/`` by plain csv:
    ``p(u, v) = min(1, p_uv * interest(v, category))`` (the simulator's documented conversion rule)."""
    users = load_dataset(world_dir).users.tolist()
    rows = {u: i for i, u in enumerate(users)}
    with (world_dir / "truth" / "interests.csv").open() as f:
        interest = {r["user_id"]: float(r["weight"]) for r in csv.DictReader(f) if r["category"] == category}
    src, dst, prob = [], [], []
    with (world_dir / "truth" / "influence.csv").open() as f:
        for r in csv.DictReader(f):
            src.append(rows[r["src_id"]])
            dst.append(rows[r["dst_id"]])
            prob.append(min(1.0, float(r["p"]) * interest.get(r["dst_id"], 1.0)))
    return ICGraph.from_arcs(np.array(src), np.array(dst), np.array(prob), len(users)), rows


def test_eval_seeding_on_a_simulated_world(tiny_world: Path) -> None:
    report = invoke("eval-seeding", "--data", str(tiny_world), "--k", "20", "--mc-runs", "2000")
    synthetic = report["synthetic"]
    methods = synthetic["methods"]
    assert set(methods) == {"learned", "oracle", "degree", "pagerank", "most_shares_sent"}
    truth, rows = true_graph_from_files(tiny_world, synthetic["category"])
    for name, row in methods.items():  # every spread is a spread under the truth, with a real interval
        assert len(row["seeds"]) == len(set(row["seeds"])) == 20
        check = monte_carlo_spread(truth, np.array([rows[u] for u in row["seeds"]]), runs=4000, seed=777)
        assert agrees(row["spread"], row["ci95"], check.mean, check.std_error), (name, row["spread"], check.mean)
    # Learned influence picks better seeds than the network alone or share volume; the oracle bounds it.
    learned, oracle = methods["learned"], methods["oracle"]
    for baseline in ("degree", "pagerank", "most_shares_sent"):
        assert learned["ci95"][0] > methods[baseline]["ci95"][1], (baseline, learned, methods[baseline])
    assert oracle["ci95"][1] >= learned["ci95"][0]
    assert synthetic["learned_beats_every_baseline"] is True
    # No fatigue in this world: the fatigue-aware planner finds none and picks the fatigue-blind seeds.
    fatigue = synthetic["fatigue"]
    assert fatigue["world_fatigue"] is False and fatigue["fatigue_model"]["active"] is False
    assert fatigue["methods"]["fatigue_aware"]["seeds"] == fatigue["methods"]["fatigue_blind"]["seeds"]
    replay = report["replay"]
    assert replay["influence"]["regime"] == "recorded"
    (part,) = [value for value in replay.values() if isinstance(value, dict) and "replay" in value]
    assert [row["k"] for row in part["replay"]] == [10, 50, 100]
    for row in part["replay"]:
        assert set(row) >= {"learned", "degree", "pagerank", "most_shares_sent", "most_active_adopters"}
        assert all(row[m]["seeds_that_started_one"] <= min(row["k"], row[m]["cascades"]) for m in ("learned", "degree"))
    assert part["cascades"] > 0 and part["calibration"]["cascades"] > 1


def test_replay_on_a_cascade_log_reports_started_cascades_calibration_and_next_adopters(
        shared_data: Path, tmp_path: Path) -> None:
    from sharerank.training.sources.importers import import_cascade_log

    import_cascade_log(shared_data / "christianity", tmp_path / "christianity")
    result = runner.invoke(app, ["eval-seeding", "--data", str(tmp_path / "christianity"), "--mc-runs", "200",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["replay"]
    assert report["influence"]["regime"] == "exposure" and report["mean_arc_probability"] < 0.1
    for split, cascades in (("valid", 59), ("test", 59)):
        part = report[split]
        assert part["cascades"] == cascades and part["adopters"] > cascades
        calibration = part["calibration"]
        assert calibration["cascades"] == len(calibration["pairs"]) > 0
        assert 0 <= calibration["within_20pct"] <= 1 and calibration["total_ratio"] > 0
        nxt = part["next_adopter"]
        assert nxt["predictions"] == part["adopters"] - cascades  # every adopter after the first
        assert 0 < nxt["hits@10"] <= nxt["hits@50"] <= nxt["hits@100"] <= 1 and nxt["map@100"] >= nxt["map@10"]
    k50 = next(row for row in report["test"]["replay"] if row["k"] == 50)
    assert k50["learned_over_best_baseline"] >= 1.2  # the target; 1.39 when measured
    assert "replay: test" in result.stderr and "calibration on" in result.stderr  # the tables for people


def test_eval_seeding_on_nethept(shared_data: Path, tmp_path: Path) -> None:
    import_nethept(shared_data / "nethept", tmp_path / "nethept")
    report = invoke("eval-seeding", "--data", str(tmp_path / "nethept"), "--ks", "10", "--mc-runs", "1000")
    (row,) = report["given_influence"]["per_k"]
    assert row["k"] == 10 and row["spread"]["mean"] > row["degree_spread"]["mean"]
    celf = report["given_influence"]["celf_subgraph"]
    assert celf["ratio_to_celf"] > 0.9
    assert "synthetic" not in report and "replay" not in report


def test_share_roots_follow_cascades_hop_by_hop(tmp_path: Path) -> None:
    (tmp_path / "purchases.csv").write_text("user_id,product_id,ts,share_id\na,p,1,\nb,p,3,s1\nc,p,5,s2\nd,q,6,\n")
    (tmp_path / "shares.csv").write_text("share_id,sharer_id,recipient_id,product_id,ts\n"
                                         "s1,a,b,p,2\ns2,b,c,p,4\ns3,c,e,p,6\ns4,d,e,q,7\n")
    world = load_dataset(tmp_path)
    roots = [world.users[r] for r in share_roots(world)]
    order = [str(s) for s in world.shares.id]
    assert dict(zip(order, roots, strict=True)) == {"s1": "a", "s2": "a", "s3": "a", "s4": "d"}


def test_seed_drops_self_loops_of_a_given_graph_with_a_warning(tmp_path: Path) -> None:
    # A chain a -> b -> c with certain arcs, plus two self-loops (as NetHEPT has): a reaches all three.
    (tmp_path / "influence.csv").write_text("src_id,dst_id,p\na,b,1\nb,b,0.5\nb,c,1\nc,c,0.2\n")
    result = runner.invoke(app, ["seed", "--data", str(tmp_path), "--k", "1", "--mc-runs", "200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dropped"] == {"influence_self_loops_dropped": 2}
    assert "dropped 2 self-loops" in result.stderr
    assert [s["user_id"] for s in report["seeds"]] == ["a"] and report["expected_reach"] == 3.0


def test_a_degenerate_graph_is_reported_not_answered_silently(tmp_path: Path, shared_data: Path) -> None:
    # Every arc certain, as learning a log of successes without inferring failures gives: one component.
    users = [f"u{i}" for i in range(30)]
    arcs = "".join(f"{a},{b},1\n" for a in users for b in users if a != b)
    (tmp_path / "influence.csv").write_text("src_id,dst_id,p\n" + arcs)
    report = invoke("seed", "--data", str(tmp_path), "--k", "3", "--mc-runs", "200")
    assert report["warnings"] and all("degenerate influence graph" in w for w in report["warnings"])
    assert any("width 0" in w for w in report["warnings"]) and any("first seed alone" in w for w in report["warnings"])
    # The real cascade log, learned from exposure: a graph with a real interval and no warning.
    from sharerank.training.sources.importers import import_cascade_log

    import_cascade_log(shared_data / "christianity", tmp_path / "christianity")
    report = invoke("seed", "--data", str(tmp_path / "christianity"), "--k", "5", "--mc-runs", "300")
    assert report["warnings"] == [] and report["selection"]["influence"]["regime"] == "exposure"
    assert report["ci95"][1] > report["ci95"][0] and report["expected_reach"] < 0.5 * 2_897


def true_fatigue_graph_from_files(world: Path, category: str, at_ts: float) -> tuple[ICGraph, dict[str, int]]:
    """The simulator's fatigue at ``at_ts``, by a plain loop over the files: each share in time order is the
    j-th from its sender; seen unless the recipient muted the sender before it (truth/mutes.csv) or it is a
    ring's push of its own product to a ring-mate; seen shares in (at_ts - W, at_ts] load their recipient."""
    truth, rows = true_graph_from_files(world, category)
    tolerance, window = {}, 0.0
    with open(world / "truth" / "fatigue.csv") as f:
        for r in csv.DictReader(f):
            tolerance[r["user_id"]], window = float(r["tolerance"]), float(r["window_s"])
    with open(world / "truth" / "mutes.csv") as f:
        muted_at = {(r["src_id"], r["dst_id"]): float(r["ts"]) for r in csv.DictReader(f)}
    ring_of, pushed = {}, set()
    if (world / "truth" / "rings.csv").exists():
        with open(world / "truth" / "rings.csv") as f:
            ring_of = {r["user_id"]: r["ring"] for r in csv.DictReader(f)}
        with open(world / "truth" / "ring_products.csv") as f:
            pushed = {(r["ring"], r["product_id"]) for r in csv.DictReader(f)}
    load: dict[str, int] = {}
    with open(world / "shares.csv") as f:
        for r in csv.DictReader(f):
            ts, a, b = float(r["ts"]), r["sharer_id"], r["recipient_id"]
            collusive = a in ring_of and ring_of.get(b) == ring_of[a] and (ring_of[a], r["product_id"]) in pushed
            if collusive or ts > muted_at.get((a, b), np.inf) or not at_ts - window < ts <= at_ts:
                continue
            load[b] = load.get(b, 0) + 1
    users = {i: u for u, i in rows.items()}
    src, dst, prob = [], [], []
    for u in range(truth.num_nodes):
        for pos in range(truth.out_indptr[u], truth.out_indptr[u + 1]):
            v = int(truth.out_indices[pos])
            a, b = users[u], users[v]
            tau = tolerance.get(b, 1.0)
            keep = 0.0 if muted_at.get((a, b), np.inf) <= at_ts else tau / (tau + load.get(b, 0))
            src.append(u)
            dst.append(v)
            prob.append(truth.out_prob[pos] * keep)
    return ICGraph.from_arcs(np.array(src), np.array(dst), np.array(prob), truth.num_nodes), rows


def test_eval_seeding_scores_fatigue_aware_and_blind_seeds_under_the_true_fatigue(tmp_path: Path) -> None:
    world = tmp_path / "world"
    invoke("simulate", "--users", "1500", "--seed", "5", "--fatigue-window-days", "14", "--rings", "8",
           "--out", str(world))
    report = invoke("eval-seeding", "--data", str(world), "--k", "10", "--mc-runs", "2000")
    fatigue = report["synthetic"]["fatigue"]
    assert fatigue["world_fatigue"] is True
    assert set(fatigue["methods"]) == {"fatigue_blind", "fatigue_aware", "fatigue_aware_rings_excluded", "oracle",
                                       "fatigue_aware_true_factors", "truth_without_fatigue"}
    truth, rows = true_fatigue_graph_from_files(world, report["synthetic"]["category"], fatigue["launch_ts"])
    plain, _ = true_graph_from_files(world, report["synthetic"]["category"])
    assert truth.out_prob.sum() < 0.95 * plain.out_prob.sum()  # fatigue bites at the launch
    for name, row in fatigue["methods"].items():  # every spread is one under the true fatigue
        check = monte_carlo_spread(truth, np.array([rows[u] for u in row["seeds"]]), runs=4000, seed=777)
        assert agrees(row["spread"], row["ci95"], check.mean, check.std_error), (name, row["spread"], check.mean)
    with open(world / "truth" / "rings.csv") as f:
        rings = {r["user_id"] for r in csv.DictReader(f)}
    assert not set(fatigue["methods"]["fatigue_aware_rings_excluded"]["seeds"]) & rings
