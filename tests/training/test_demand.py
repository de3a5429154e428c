"""`sharerank demand` on a simulated world, and the forecasting pieces on series built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.dataset.reader import load_dataset
from sharerank.training.demand.forecast import score_series, smooth_forecast
from sharerank.training.demand.signals import observed_window
from sharerank.training.sources.simulate import simulate_world

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demand-world")
    simulate_world(out, users=2000, seed=7)
    return out


def test_forecast_beats_the_naive_one_on_the_held_out_period_of_the_simulated_world(world: Path) -> None:
    result = runner.invoke(app, ["demand", "--data", str(world), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for kind in ("purchases", "shares"):
        score = report["score"][kind]
        assert score["series"] >= 10
        assert score["mase"] < score["naive_mase"]
    assert report["beats_naive"] == {"purchases": True, "shares": True}
    dataset = load_dataset(world)
    beauty = report["categories"]["Beauty"]["purchases"]["volumes"]
    assert len(beauty) == report["periods"]
    assert sum(beauty) <= int((dataset.category[dataset.purchases.product] == "Beauty").sum())
    for row in report["rising_conversion"]:
        assert row["recent_conversion"] > row["earlier_conversion"] and row["z"] >= 1.96


def test_smoothing_averages_noise_that_the_naive_forecast_repeats() -> None:
    rng = np.random.default_rng(0)
    wins = 0
    for _ in range(20):
        series = rng.poisson(40, size=20).astype(float)
        scored = score_series(series)
        wins += scored.mase < scored.naive_mase
    assert wins >= 13  # a level of 40 plus noise: the last value is a worse guess than the smoothed level


def test_a_trend_is_followed_and_flat_or_short_series_are_not_scored() -> None:
    assert smooth_forecast(np.arange(10, 30, dtype=float), "damped_trend") > 28
    assert smooth_forecast(np.full(8, 5.0), "level") == pytest.approx(5.0)
    assert score_series(np.full(10, 5.0)) is None
    assert score_series(np.array([1.0, 2.0, 3.0])) is None


def test_the_window_ends_before_a_thin_tail_and_starts_a_whole_number_of_periods_earlier() -> None:
    day = 86400.0
    busy = np.repeat(np.arange(30) * day, 20) + 10.0
    tail = np.array([31, 35, 40]) * day
    start, periods = observed_window(np.r_[busy, tail], 7 * day)
    assert periods == 4
    assert start + periods * 7 * day == pytest.approx(30 * day + 10.0)


@pytest.mark.parametrize(("args", "message"), [
    (["--period-days", "0"], "--period-days must be positive"),
    (["--period-days", "100"], "forecasts need at least"),
])
def test_bad_options_exit_2_in_one_line(tiny_world: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["demand", "--data", str(tiny_world), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
