"""`sharerank eval-audience` end to end (a simulated world, Ciao) and its baselines on a hand-built world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.dataset.reader import Interactions, load_dataset
from sharerank.training.audience.evaluate import KnownWorld, co_purchase, held_out, recall_at
from sharerank.training.sources.importers import import_ciao
from sharerank.training.sources.simulate import simulate_world

runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def beats_both(report: dict, k: int) -> bool:
    test = report["test"]
    return test["audience"][f"recall@{k}"] > max(test["most_active_buyers"][f"recall@{k}"],
                                                 test["co_purchase"][f"recall@{k}"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audience-world")
    simulate_world(out, users=3000, seed=7)
    return out


def test_audience_beats_both_baselines_on_held_out_buyers_of_the_simulated_world(world: Path) -> None:
    report = invoke("eval-audience", "--data", str(world))
    assert report["products"] > 100
    assert set(report["test"]) == {"audience", "affinity_only", "most_active_buyers", "co_purchase"}
    assert beats_both(report, 50) and beats_both(report, 100)
    assert report["chosen_on"] == "validation Recall@50"


def test_audience_beats_both_baselines_on_held_out_buyers_of_ciao(shared_data: Path, tmp_path: Path) -> None:
    import_ciao(shared_data / "ciao", tmp_path / "ciao")
    report = invoke("eval-audience", "--data", str(tmp_path / "ciao"), "--max-products", "1000")
    assert beats_both(report, 50) and beats_both(report, 100)


def test_co_purchase_ranks_users_by_buyers_in_common_and_recall_counts_held_out_buyers(tiny_world: Path) -> None:
    dataset = load_dataset(tiny_world)
    # Users 0 and 1 bought products 0 and 1; user 2 bought product 1 only; user 3 bought product 2.
    known = Interactions(np.array([0, 0, 1, 1, 2, 3]), np.array([0, 1, 0, 1, 1, 2]), np.zeros(6), np.zeros(6))
    world = KnownWorld(dataset, known)
    scores = co_purchase(world, np.array([0]))[:, 0]
    assert scores[2] > scores[3] and scores[3] >= scores[4]  # user 2's product 1 shares 2 buyers with product 0
    held = held_out(Interactions(np.array([2, 0]), np.array([0, 0]), np.ones(2), np.zeros(2)), world)
    assert held.indices[held.indptr[0]:held.indptr[1]].tolist() == [2]  # user 0 had already bought it
    assert recall_at(scores[:, None], world, np.array([0]), held, (1, 5)).tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize(("args", "message"), [
    (["--ks", "a,b"], "'a,b': item 1: input should be a valid integer"),
    (["--ks", "10,0"], "'10,0': item 2: input should be greater than 0"),
    (["--ks", " , "], "at least 1 item"),
    (["--model", "auto"], "--model auto is not available"),
])
def test_bad_options_exit_2_in_one_line(tiny_world: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval-audience", "--data", str(tiny_world), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
