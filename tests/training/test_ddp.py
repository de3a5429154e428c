"""Data-parallel training under torchrun: two gloo ranks reach the single-process validation figure, and only
rank 0 logs, registers and reports.

Tolerance: each global batch is split into one shard per rank with the same shuffle and negatives on every rank,
and DistributedDataParallel averages the shards' gradients, which is the gradient of the whole batch's mean
loss: the two runs differ only in the order floating-point sums are taken (measured: equal to 8 digits on the
tiny world). 0.01 absolute Recall@20 leaves room for that rounding to flip a few validation hits over the
epochs, and no more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SMALL_LIGHTGCN
from mlflow import MlflowClient
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.config import Settings
from sharerank.training.jobs import run_training

TOLERANCE = 0.01
"""Allowed absolute difference in validation Recall@20 between 2 ranks and 1 process (see the module doc)."""
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_two_ranks_reach_the_single_process_figure_and_only_rank_0_registers(tiny_world: Path,
                                                                            tmp_path: Path) -> None:
    single = run_training([tiny_world], Settings(home=tmp_path / "one"), model="lightgcn", params=SMALL_LIGHTGCN)
    assert single is not None and "world_size" not in single

    home = tmp_path / "two"
    sets = [arg for key, value in SMALL_LIGHTGCN.items() for arg in ("--set", f"lightgcn.{key}={value}")]
    env = {**os.environ, "SHARERANK_HOME": str(home)}
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "sharerank.cli",
                           "train", "--data", str(tiny_world), "--model", "lightgcn", *sets, "--json"],
                          capture_output=True, text=True, timeout=110, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # one JSON document: rank 1 printed nothing
    assert report["world_size"] == 2
    assert abs(report["metrics"]["val_recall_20"] - single["metrics"]["val_recall_20"]) <= TOLERANCE, (
        report["metrics"], single["metrics"])
    assert report["params"]["epochs"] == single["params"]["epochs"]  # the refit ran as long

    client = MlflowClient(tracking_uri=Settings(home=home).resolved_tracking_uri)
    versions = client.search_model_versions(f"name='{report['model_name']}'")
    assert [str(v.version) for v in versions] == [str(report["version"])] == ["1"]
    runs = client.search_runs([client.get_run(report["run_id"]).info.experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in top] == [report["run_id"]]  # rank 1 started no run of its own
    assert top[0].data.params["world_size"] == "2"


def test_auto_under_torchrun_is_refused_in_one_line(tiny_world: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_world), "--model", "auto"])
    assert result.exit_code == 2
    assert "not trained data-parallel" in result.output and "Traceback" not in result.output
