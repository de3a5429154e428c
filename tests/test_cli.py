"""The command line: JSON on stdout, exit code 2 with a one-line message on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sharerank.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("simulate", "import", "train", "promote", "serve", "demo"):
        assert name in result.output


def test_simulate_writes_a_world_and_prints_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--users", "300", "--seed", "1", "--out", str(tmp_path / "w"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["users"] == 300 and (tmp_path / "w" / "purchases.csv").exists()


def test_train_on_a_malformed_folder_exits_2_naming_the_place(tmp_path: Path) -> None:
    (tmp_path / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,yesterday\n")
    result = subprocess.run([sys.executable, "-m", "sharerank.cli", "train", "--data", str(tmp_path)],
                            capture_output=True, text=True, env={"SHARERANK_HOME": str(tmp_path / "home"),
                                                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "purchases.csv, line 2, column 'ts'" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "/no/such/folder"], "no such directory"),
        (["import", "nosuch", "--src", ".", "--out", "x"], "unknown dataset"),
        (["simulate", "--users", "5", "--out", "x"], "users"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_promote_with_an_empty_registry_exits_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    result = runner.invoke(app, ["promote"])
    assert result.exit_code == 2 and "sharerank train" in result.output


def test_eval_set_rejects_unknown_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    (tmp_path / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,1\nu2,p1,2\n")
    for assignment, message in (("sharegnn.nope=1", "no setting 'nope'"), ("lightgcn.lr=0.1", "MODEL.KEY=VALUE"),
                                ("sharegnn", "MODEL.KEY=VALUE")):
        result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--models", "sharegnn", "--set", assignment])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_with_setting_reads_json_none_and_model_arguments() -> None:
    from sharerank.training.train import default_config, with_setting

    config = with_setting(with_setting(default_config("sharegnn"), "batch_size", "2048"), "popularity_weight", "none")
    assert config.batch_size == 2048 and config.model_params["popularity_weight"] is None
    assert with_setting(config, "temperature", "0.3").model_params["temperature"] == 0.3
