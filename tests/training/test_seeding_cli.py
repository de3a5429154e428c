"""`sharerank seed` and `sharerank eval-seeding` end to end on real folders: a simulated world and NetHEPT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.training.dataset import load_dataset
from sharerank.training.importers import import_nethept
from sharerank.training.seeding_eval import share_roots

runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_seed_prints_seeds_with_reach_and_reasons(tiny_world: Path) -> None:
    report = invoke("seed", "--data", str(tiny_world), "--k", "5", "--category", "Beauty", "--mc-runs", "500")
    assert report["category"] == "Beauty" and len(report["seeds"]) == 5
    reach = [s["cumulative_reach"] for s in report["seeds"]]
    assert reach == sorted(reach) and report["expected_reach"] == pytest.approx(reach[-1])
    assert all(s["reasons"] and s["ci95"][0] <= s["cumulative_reach"] <= s["ci95"][1] for s in report["seeds"])


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
])
def test_seed_bad_input_exits_2(tiny_world: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["seed", "--data", str(tiny_world), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_eval_seeding_on_a_simulated_world(tiny_world: Path) -> None:
    report = invoke("eval-seeding", "--data", str(tiny_world), "--k", "5", "--mc-runs", "500")
    methods = report["synthetic"]["methods"]
    assert set(methods) == {"learned", "oracle", "degree", "pagerank", "most_shares_sent"}
    assert methods["oracle"]["ratio_to_oracle"] == 1.0
    for row in methods.values():
        assert row["ci95"][0] <= row["spread"] <= row["ci95"][1]
    replay = report["replay"]
    assert set(replay["methods"]) == {"learned", "degree", "most_shares_sent"}
    assert replay["earlier_shares"] > replay["later_shares"] > 0


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
