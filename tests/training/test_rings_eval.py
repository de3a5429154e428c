"""`sharerank rings` on simulated worlds: rings planted by the simulator are found, precision and recall against
truth/ clear a bound, a world without rings flags (almost) nobody, and bad input exits 2 in one line."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.training.rings.evaluate import run_rings
from sharerank.training.sources.simulate import simulate_world

runner = CliRunner()
USERS = 5000


@pytest.fixture(scope="module")
def ringed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ringed")
    simulate_world(folder, users=USERS, seed=23, rings=10, fatigue_window_days=7)
    return folder


def test_every_planted_ring_is_found_with_its_evidence(ringed):
    rings = {}
    with open(ringed / "truth" / "rings.csv", newline="") as f:
        for row in csv.DictReader(f):
            rings.setdefault(row["ring"], set()).add(row["user_id"])
    report = run_rings(ringed)
    groups = [set(g["members"]) for g in report["groups"]]
    for members in rings.values():  # each ring is (nearly) all of one flagged group
        best = max(groups, key=lambda g: len(g & members))
        assert len(best & members) >= 0.8 * len(members) and len(best - members) <= 1
    group = report["groups"][0]
    assert group["internal_purchases"] > group["outside_purchases"] and group["repeat_products"] >= 2
    assert 0 <= group["outside_reach"] < 0.5 and group["score"] >= report["threshold"]


def test_precision_and_recall_against_truth_clear_the_bound(ringed):
    truth = run_rings(ringed, truth=True)["truth"]
    assert truth["rings"] == 10 and truth["ring_members"] > 30
    assert truth["users"]["precision"] >= 0.9 and truth["users"]["recall"] >= 0.8
    assert truth["groups"]["recall"] >= 0.9
    flagged = [row["flagged"] for row in truth["sweep"]]
    assert flagged == sorted(flagged, reverse=True)  # a higher threshold never flags more people


def test_a_world_without_rings_flags_almost_nobody(tmp_path):
    simulate_world(tmp_path, users=USERS, seed=23)
    report = run_rings(tmp_path)
    assert report["flagged_users"] <= 0.002 * USERS


def test_cli_prints_groups_as_json(ringed):
    result = runner.invoke(app, ["rings", "--data", str(ringed), "--truth", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["groups"]) == 2 and report["flagged_groups"] >= 9 and "truth" in report


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda d: None, ["--data", "{d}/missing"], "no such directory"),
    (lambda d: (d / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,5\n"), ["--data", "{d}"],
     "no shares.csv"),
    (lambda d: (d / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,soon\n"), ["--data", "{d}"],
     "purchases.csv, line 2, column 'ts'"),
    (lambda d: simulate_world(d, users=300, seed=1), ["--data", "{d}", "--truth"], "truth/rings.csv"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, make, args, message):
    make(tmp_path)
    result = runner.invoke(app, ["rings", *(a.format(d=tmp_path) for a in args)])
    assert result.exit_code == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_the_trained_bundle_flags_the_ring_members_and_keeps_the_flags_when_saved(ringed, tmp_path):
    import numpy as np

    from sharerank.dataset.reader import load_dataset
    from sharerank.models.artifact.bundle import ModelBundle
    from sharerank.models.recommenders.factors import Factors
    from sharerank.training.bundle import build_bundle

    dataset = load_dataset(ringed)
    factors = Factors(np.ones((dataset.num_users, 1)), np.ones((dataset.num_products, 1)))
    bundle = build_bundle(dataset, factors, {})
    with open(ringed / "truth" / "rings.csv", newline="") as f:
        members = {bundle.user_rows[row["user_id"]] for row in csv.DictReader(f)}
    flagged = bundle.ring_members
    assert len(flagged & members) >= 0.8 * len(members) and len(flagged - members) <= 0.1 * len(flagged)
    assert ModelBundle.load(bundle.save(tmp_path / "bundle")).ring_members == flagged
