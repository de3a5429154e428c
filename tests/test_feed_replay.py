"""The feed replayed through a simulated world: pages served by the real pipeline with and without the per-sharer
cap, scored under the world's true behaviour, and the `sharerank eval-feed-replay` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.config import Settings
from sharerank.dataset.reader import load_dataset
from sharerank.feed_replay import pipelines, serve_and_score
from sharerank.serving.events.log import ShareRecord
from sharerank.serving.events.recorder import live_writes
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.training.bundle import build_bundle
from sharerank.training.feed.fit import fit_model
from sharerank.training.feed.true_behaviour import TrueBehaviour
from sharerank.training.jobs import training_split

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tiny_world: Path):
    dataset = load_dataset(tiny_world, with_test=False)
    fitted = fit_model("itemknn", dataset, training_split(dataset))
    end = float(dataset.purchases.ts.max())
    truth = TrueBehaviour.from_world(dataset, since=end - 7 * 86_400, at=end)
    return dataset, build_bundle(dataset, fitted.factors, {"model_type": "itemknn"}), truth


def test_the_cap_changes_what_a_flooded_user_is_shown(served) -> None:
    dataset, bundle, truth = served
    settings = Settings()
    store = InMemoryOnlineStore()
    user = next(u for u in range(dataset.num_users) if len(bundle.friends_of(u)) and bundle.bought(u).size)
    user_id, spammer = str(bundle.users[user]), str(bundle.users[bundle.friends_of(user)[0]])
    # The spammer floods the user with products the model ranks just below the first page.
    deeper = pipelines(settings, store)["capped"].run(model=bundle, user_id=user_id, page_size=45)
    flood = [item.product for item in deeper.items[20:]]
    now = time.time()
    records = [ShareRecord(f"flood-{i}", spammer, user_id, str(bundle.products[p]), now - i)
               for i, p in enumerate(flood)]
    for _, write, items in live_writes(store, records, bundle):
        write(items)

    arms = pipelines(settings, store)
    pages = {arm: [item.product for item in p.run(model=bundle, user_id=user_id, page_size=20).items]
             for arm, p in arms.items()}
    scored = serve_and_score(arms, bundle, truth, [user_id], page_size=20)
    capped, uncapped = scored["capped"][0], scored["uncapped"][0]
    assert capped["max_from_one_sharer"] <= settings.feed_shares_per_sharer < uncapped["max_from_one_sharer"]
    assert capped["shared_shown"] == len(set(pages["capped"]) & set(flood))
    assert uncapped["shared_shown"] == len(set(pages["uncapped"]) & set(flood))
    assert set(pages["capped"]) != set(pages["uncapped"])
    # Each page is scored by the truth, product by product.
    for arm in ("capped", "uncapped"):
        rows = pages[arm]
        assert scored[arm][0]["expected_purchases"] == pytest.approx(float(truth.conversion(user, rows).sum()))


@pytest.fixture(scope="module")
def fatigued_world(tmp_path_factory) -> Path:
    from sharerank.training.sources.simulate import simulate_world

    out = tmp_path_factory.mktemp("fatigued")
    simulate_world(out, users=1000, seed=4, fatigue_window_days=7, rings=2)
    return out


def test_cli_prints_the_replay_as_json(fatigued_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    result = runner.invoke(app, ["eval-feed-replay", "--data", str(fatigued_world), "--users", "40",
                                 "--window-days", "14", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    assert report["world"]["fatigue"] and report["world"]["rings"] and report["world"]["mutes_by_then"] > 0
    assert report["users_served"] == 40 <= report["window"]["recipients"]
    assert set(report["arms"]) == {"capped", "uncapped", "uncapped_no_fatigue"}
    for figures in report["arms"].values():
        low, high = figures["expected_purchases_ci95"]
        assert 0 < low <= figures["expected_purchases"] <= high < figures["shown"]
        assert figures["through_shares"] <= figures["expected_purchases"]
    assert report["arms"]["capped"]["pages_with_more_than_3_from_one_sharer"] == 0
    assert set(report["differences"]) == {"capped_minus_uncapped", "capped_minus_uncapped_no_fatigue"}


def successes_only(root: Path) -> None:
    from sharerank.training.sources.simulate import simulate_world

    simulate_world(root, users=300, seed=1, log="successes-only")


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: None, "not a simulated world"),
    (successes_only, "--log all"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, make, message) -> None:
    make(tmp_path)
    result = runner.invoke(app, ["eval-feed-replay", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
