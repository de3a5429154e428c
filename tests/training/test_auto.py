"""The automatic choice: made on a validation split carved from training only, the better model wins where the
answer is known, every trial is an MLflow child run, and the test split is never read."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from sharerank.config import Settings
from sharerank.dataset.reader import load_dataset
from sharerank.models.recommenders.registry import model_names, spec
from sharerank.registry import connect
from sharerank.training.bundle import build_bundle
from sharerank.training.feed import train
from sharerank.training.feed.auto import (
    Validation,
    _may_catch_up,
    _pace,
    _training_room,
    choose,
    fit_choice,
    score_trial,
)
from sharerank.training.feed.blend import BLEND, MIN_GAIN
from sharerank.training.feed.fit import fit_model
from sharerank.training.jobs import run_training, training_split


def _purchases(folder: Path, rows: list[tuple[int, int, int]]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "purchases.csv").open("w") as f:
        f.write("user_id,product_id,ts\n")
        f.writelines(f"u{u},p{p},{t}\n" for u, p, t in rows)
    return folder


def _pairs_world(folder: Path) -> Path:
    """Products come in pairs and every user buys both of three pairs: the partner of what a user bought
    predicts the held-out purchase (item-kNN finds it; buyer counts are flat, so popularity cannot)."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(300):
        for k, pair in enumerate(rng.choice(60, 3, replace=False)):
            rows += [(user, 2 * pair, 2 * k), (user, 2 * pair + 1, 2 * k + 1)]
    return _purchases(folder, rows)


def _head_world(folder: Path) -> Path:
    """Every user buys two products drawn independently from a steep popularity curve: what a user bought
    says nothing about the next purchase, the buyer counts say the most."""
    rng = np.random.default_rng(1)
    weights = 1.0 / np.arange(1, 121) ** 1.2
    return _purchases(folder, [(user, int(p), k) for user in range(300)
                               for k, p in enumerate(rng.choice(120, 2, replace=False, p=weights / weights.sum()))])


def _two_signal_world(folder: Path) -> Path:
    """Every user buys both products of one pair and three drawn from a steep popularity curve, in random order:
    the held-out purchase is the partner (item-kNN finds it) or a popular product (popularity's), so a blend
    of the two ranks both kinds in one top 20."""
    rng = np.random.default_rng(2)
    weights = 1.0 / np.arange(1, 121) ** 1.2
    rows = []
    for user in range(400):
        pair = int(rng.integers(60))
        items = [2 * pair, 2 * pair + 1, *(120 + rng.choice(120, 3, replace=False, p=weights / weights.sum()))]
        rows += [(user, int(item), t) for t, item in enumerate(rng.permutation(items))]
    return _purchases(folder, rows)


@pytest.mark.parametrize(("world", "better", "worse"), [(_pairs_world, "itemknn", "popularity"),
                                                        (_head_world, "popularity", "itemknn")])
def test_the_better_of_two_models_is_chosen_where_the_answer_is_known(tmp_path, world, better, worse) -> None:
    dataset = load_dataset(world(tmp_path / "world"), with_test=False)
    choice = choose(dataset, training_split(dataset), families=["popularity", "itemknn"], budget_seconds=30,
                    blend=False)
    assert choice.name == better
    assert choice.families[better]["val_recall_20"] > 2 * choice.families[worse]["val_recall_20"], choice.families
    assert choice.validation["val_recall_20"] == choice.families[better]["val_recall_20"]


def test_a_blend_is_chosen_where_each_model_sees_half_the_signal(tmp_path) -> None:
    dataset = load_dataset(_two_signal_world(tmp_path / "world"), with_test=False)
    split = training_split(dataset)
    choice = choose(dataset, split, families=["popularity", "itemknn"], budget_seconds=30)
    families = choice.families
    assert choice.name == BLEND, families
    best_member = max(families["popularity"]["val_recall_20"], families["itemknn"]["val_recall_20"],
                      families[BLEND]["members_recall_20"])
    assert choice.validation["val_recall_20"] >= (1 + MIN_GAIN) * best_member, families
    weights = {m["name"]: m["weight"] for m in choice.params["members"]}
    assert set(weights) == {"popularity", "itemknn"} and 0 < weights["popularity"] < 1, weights
    # what retraining scores a blend champion with: the same figures from its settings alone
    figures, _, _ = score_trial(BLEND, choice.params, Validation.of(dataset, split))
    assert figures["val_recall_20"] == pytest.approx(choice.validation["val_recall_20"], abs=0.01)


def test_a_blend_choice_refits_into_one_served_form_that_scores_as_the_blend(tmp_path) -> None:
    dataset = load_dataset(_two_signal_world(tmp_path / "world"), with_test=False)
    split = training_split(dataset)
    choice = choose(dataset, split, families=["popularity", "itemknn"], budget_seconds=30)
    assert choice.name == BLEND  # the premise
    fitted = fit_choice(dataset, split, choice)
    assert fitted.name == BLEND and fitted.factors.item_item is not None  # item-kNN's part, weighted
    assert fitted.factors.user.shape[1] == 1  # popularity's one column; item-kNN brings none
    users = np.arange(dataset.num_users)
    served, exact = fitted.scorer.score(users), fitted.exact.score(users)
    assert served.std(dim=1).mean() > 0.1  # the premise: scores that rank
    torch.testing.assert_close(served, exact, rtol=1e-4, atol=1e-5)  # 240 products: no neighbour is cut
    bundle = build_bundle(dataset, fitted.factors, {"model_type": BLEND, "params": choice.params})
    assert bundle.model_type == BLEND and bundle.item_item is not None


def test_no_blend_is_chosen_where_one_model_has_all_the_signal(tmp_path) -> None:
    dataset = load_dataset(_pairs_world(tmp_path / "world"), with_test=False)
    choice = choose(dataset, training_split(dataset), families=["popularity", "itemknn"], budget_seconds=30)
    assert choice.name == "itemknn" and BLEND in choice.families, choice.families  # tried, not enough


@pytest.mark.parametrize("links", [False, True])
def test_the_social_weight_is_tuned_only_where_users_have_links(tmp_path, links) -> None:
    world = _pairs_world(tmp_path / "world")
    if links:  # each user linked to the next
        (world / "social.csv").write_text("src_id,dst_id\n" + "".join(f"u{u},u{u + 1}\n" for u in range(299)))
    dataset = load_dataset(world, with_test=False)
    split = training_split(dataset)
    trials = []
    choose(dataset, split, families=["graphfilter"], budget_seconds=60, on_trial=trials.append, blend=False)
    weights = [trial.params.get("social_weight") for trial in trials]
    assert len(trials) == spec("graphfilter").trials, weights
    if not links:
        assert weights == [None] * len(trials)  # the search is the one it was without the setting
        return
    assert weights[2] == 1.0 and any(w not in (None, 0.0, 1.0) for w in weights[3:]), weights  # start, tuner
    users = np.arange(dataset.num_users)
    with_friends = fit_model("graphfilter", dataset, split, {"social_weight": 1.0}, refit=False, served=False)
    alone = fit_model("graphfilter", dataset, split, {}, refit=False, served=False)
    assert not torch.allclose(with_friends.scorer.score(users), alone.scorer.score(users))  # the links reached it


def test_fixed_settings_run_each_family_once_untuned(tmp_path) -> None:
    dataset = load_dataset(_pairs_world(tmp_path / "world"), with_test=False)
    choice = choose(dataset, training_split(dataset), families=["itemknn"], fixed={"neighbors": 5})
    assert choice.families["itemknn"]["trials"] == 1 and choice.params == {"neighbors": 5}


def test_a_family_whose_one_fit_outlasts_its_share_is_skipped_not_overrun(tmp_path) -> None:
    dataset = load_dataset(_pairs_world(tmp_path / "world"), with_test=False)
    choice = choose(dataset, training_split(dataset), families=["ease", "popularity"], budget_seconds=1e-6)
    assert "share" in choice.families["ease"]["skipped"] and choice.name == "popularity"


def test_a_blend_that_would_overrun_the_budget_is_skipped_with_its_reason(tmp_path) -> None:
    dataset = load_dataset(_two_signal_world(tmp_path / "world"), with_test=False)
    choice = choose(dataset, training_split(dataset), families=["popularity", "itemknn"], budget_seconds=1e-6)
    assert "budget" in choice.families[BLEND]["skipped"], choice.families[BLEND]
    assert choice.name in ("popularity", "itemknn")
    for name in ("popularity", "itemknn"):  # what the budget's bookkeeping runs on, from the trials' own clocks
        assert choice.families[name]["refit_seconds"] > 0 and choice.families[name]["rank_seconds"] > 0


@pytest.mark.parametrize(("left", "leader", "weighing"), [
    (240.0, {"refit_seconds": 160.0, "rank_seconds": 25.0}, 20.0),  # Gowalla at 600 s: the graph filter leads
    (400.0, {"refit_seconds": 5.0, "rank_seconds": 3.0}, 60.0),  # Ciao: item-kNN leads, the GNN trains on
    (400.0, {"refit_seconds": 5.0, "rank_seconds": 3.0}, None),  # no blend to check
    (400.0, None, 60.0),  # a lone family
    (100.0, {"refit_seconds": 160.0, "rank_seconds": 25.0}, 20.0),  # the leader's refit alone outlasts what is left
])
def test_training_on_leaves_time_for_its_own_refit_the_leaders_and_the_blends_check(left, leader, weighing) -> None:
    family = {"epoch_seconds": 18.0, "rank_seconds": 2.0, "refit_seconds": 11 * 14.5 * 1.1, "params": {"epochs": 11}}
    room = _training_room(family, leader, left, weighing)
    trains = room + family["epoch_seconds"]  # the loop may finish one epoch past its room
    refit = trains / family["epoch_seconds"] * 14.5 * 1.1  # the epochs it trains, refit without validation
    kept_back = 0.0 if leader is None else leader["refit_seconds"] + (
        leader["rank_seconds"] + family["rank_seconds"] + weighing if weighing is not None else 0.0)
    if left - kept_back > family["epoch_seconds"] * (1 + 14.5 * 1.1 / 18.0):  # more than the one epoch kept back
        assert trains + refit + kept_back == pytest.approx(left)
    else:
        assert room == 0.0


def test_train_auto_never_reads_the_test_split_and_logs_every_trial(tiny_world: Path, tmp_path: Path) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    (world / "test.csv").mkdir()  # a test split that fails whoever opens it
    with pytest.raises(OSError):
        load_dataset(world)  # the premise: reading it fails
    settings = Settings(home=tmp_path / "home")
    report = run_training([world], settings, model="auto", budget_seconds=8)
    families = report["choice"]["families"]
    assert set(families) == {*model_names(servable=True), BLEND}
    best = max((name for name in families if name != BLEND),
               key=lambda name: (families[name]["val_recall_20"], families[name]["val_ndcg_20"]))
    if "skipped" not in families[BLEND]:  # tried when its check and refits fit in what the budget has left
        bar = max(families[best]["val_recall_20"], families[BLEND]["members_recall_20"])
        if families[BLEND]["val_recall_20"] >= (1 + MIN_GAIN) * bar:
            best = BLEND
    assert report["model"] == best and report["metrics"]["val_recall_20"] == families[best]["val_recall_20"]
    connect(settings)
    client = MlflowClient()
    run = client.get_run(report["run_id"])
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{report['run_id']}'",
                                  max_results=1000)
    assert all(child.data.tags["kind"] == "trial" for child in children)
    per_family = {name: sum(c.data.tags["model"] == name for c in children) for name in families}
    assert per_family == {name: result.get("trials", 0) for name, result in families.items()}
    assert max(c.data.metrics["val_recall_20"] for c in children) == report["metrics"]["val_recall_20"]
    assert run.data.tags["chosen"] == best


def test_a_graph_winner_cut_short_by_its_share_trains_on_to_its_early_stop(tiny_world: Path) -> None:
    """A graph model's trial gets a slice of the search; the winner's refit must not inherit that slice's epoch
    count when validation was still improving (the Ciao case: 3 epochs where 11 were best)."""
    dataset = load_dataset(tiny_world, with_test=False)
    fixed = {"embedding_dim": 16, "num_layers": 2, "batch_size": 1024, "epochs": 2000, "patience": 2000}
    choice = choose(dataset, training_split(dataset), families=["lightgcn"], fixed=fixed,
                    budget_seconds=12, search_share=0.05)  # the trial gets 1 s, far short of 2,000 epochs
    family = choice.families["lightgcn"]
    assert not family["converged"], family  # the premise: the trial was cut by time
    continued = family["continued"]
    assert continued["epochs_run"] > family["epochs_run"], (continued, family["epochs_run"])
    if continued["val_recall_20"] >= family["val_recall_20"]:
        assert choice.params["epochs"] == continued["epochs"]


@pytest.mark.parametrize(("leader", "room", "recent_gain", "trains_on"), [
    (0.24, 135.0, 0.005, False),  # Gowalla's case: ~7 epochs of room replay the trial's 6 and add one
    (0.24, 1000.0, 0.005, True),  # 44 more epochs at that pace would pass the leader
    (0.18, 135.0, 0.005, True),  # it leads already: training on decides how long its refit runs
    (0.24, 135.0, None, True),  # one epoch shows no pace: it may catch up
    (0.24, 1000.0, -0.002, False),  # falling at the cut, behind
])
def test_a_cut_short_graph_model_trains_on_only_while_its_pace_could_reach_the_leader(
        leader, room, recent_gain, trains_on) -> None:
    family = {"val_recall_20": 0.19, "epochs_run": 6, "epoch_seconds": 20.0, "recent_gain": recent_gain}
    assert _may_catch_up(family, leader, room) is trains_on


def test_a_trials_pace_is_its_median_epoch_with_validation_and_its_largest_recent_gain() -> None:
    history = [{"epoch_seconds": 10.0, "validation_seconds": 2.0, "val_recall_20": r}
               for r in (0.05, 0.15, 0.17, 0.18, 0.185)]
    history[0]["epoch_seconds"] = 40.0  # a slow first epoch (compilation) does not set the pace
    pace = _pace(history)
    assert pace["epoch_seconds"] == pytest.approx(12.0)
    assert pace["recent_gain"] == pytest.approx(0.02)  # the last three steps: 0.02, 0.01, 0.005, not the first 0.1
    assert "recent_gain" not in _pace(history[:1])


def test_a_graph_family_whose_defaults_were_cut_short_is_not_tuned(tiny_world: Path, monkeypatch) -> None:
    """Trials a few epochs long would rank settings by their start: the family's time goes to training its
    defaults on instead of to more such trials."""
    slow = replace(train.default_config("lightgcn"), epochs=2000, patience=2000)  # never stops by validation
    monkeypatch.setitem(train.DEFAULT_CONFIGS, "lightgcn", slow)
    dataset = load_dataset(tiny_world, with_test=False)
    choice = choose(dataset, training_split(dataset), families=["lightgcn"], budget_seconds=16,
                    search_share=0.5)  # an 8 s share, 2 s of it for the defaults: time for more trials
    family = choice.families["lightgcn"]
    assert not family["converged"], family  # the premise: the defaults were cut by time
    assert family["trials"] == 2 and "continued" in family, family  # the defaults, then trained on: no tuning


def test_the_cli_default_budget_is_the_automatic_choices() -> None:
    from sharerank.cli import AUTO_BUDGET_SECONDS
    from sharerank.training.feed.auto import DEFAULT_BUDGET_SECONDS

    assert AUTO_BUDGET_SECONDS == DEFAULT_BUDGET_SECONDS
