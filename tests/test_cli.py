"""The command line: JSON on stdout, exit code 2 with a one-line message on bad input, a help text for every
option, and the main commands run as subprocesses the way users call them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.models.recommenders.registry import model_names
from sharerank.training.feed.blend import BLEND

runner = CliRunner()


def sharerank(*args: str, home: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``sharerank ARGS`` in a subprocess, as a user runs it (the console script of this environment)."""
    script = Path(sys.executable).with_name("sharerank")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "SHARERANK_HOME": str(home), **env})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error of a refused command: exit code 2, nothing on stdout, one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


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


BAD_INPUT = [  # (arguments, what the one line says): at least one per command, then bad values of every kind
    (["simulate", "--users", "5", "--out", "x"], "--users"),
    (["import", "lastfm", "--src", "/no/such/folder", "--out", "x"], "no such directory"),
    (["train", "--data", "/no/such/folder"], "no such directory"),
    (["retrain", "--data", "/no/such/folder"], "no such directory"),
    (["eval", "--data", "/no/such/folder"], "no such directory"),
    (["recommend", "--data", "/no/such/folder"], "no such directory"),
    (["seed", "--data", "/no/such/folder"], "no such directory"),
    (["eval-seeding", "--data", "/no/such/folder"], "no such directory"),
    (["eval-feed-replay", "--data", "/no/such/folder"], "not a simulated world"),
    (["eval-audience", "--data", "/no/such/folder"], "no such directory"),
    (["demand", "--data", "/no/such/folder"], "no such directory"),
    (["rings", "--data", "/no/such/folder"], "no such directory"),
    (["promote", "--version", "99"], "sharerank train"),
    (["serve", "--port", "-5"], "--port"),
    (["ingest", "--out", "x"], "SHARERANK_EVENT_STREAM_URL"),
    (["console", "--port", "0"], "--port"),
    (["demo", "--users", "5"], "--users"),
    (["import", "nosuch", "--src", ".", "--out", "x"], "'nosuch' is not one of"),
    (["train", "--data", ".", "--model", "nope"], "'nope' is not one of"),
    (["train", "--data", ".", "--model", "lightgcn", "--set", "lightgcn.nope=1"], "no setting 'nope'"),
    (["eval", "--data", ".", "--models", "lightgcn,nope"], "'lightgcn,nope': item 2: input should be 'popularity'"),
    (["seed", "--data", ".", "--k", "0"], "budget must be between 1 and 1000"),
    (["seed", "--data", ".", "--ring-policy", "sometimes"], "ring_policy must be one of"),
    (["eval-seeding", "--data", ".", "--ks", "10,b"], "--ks': '10,b': item 2: input should be a valid integer"),
    (["eval-audience", "--data", ".", "--ks", "x"], "--ks"),
    (["demand", "--data", ".", "--period-days", "-1"], "--period-days"),
    (["simulate"], "Missing option '--out'"),
    (["nosuch"], "No such command 'nosuch'"),
]


def test_every_command_has_a_bad_input_case() -> None:
    assert {args[0] for args, _ in BAD_INPUT} >= set(typer.main.get_command(app).commands)


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(args) for args, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # "." is a folder without data
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_version_and_completion() -> None:
    from importlib.metadata import version

    assert runner.invoke(app, ["--version"]).stdout == f"sharerank {version('sharerank')}\n"
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "250"}).output
    assert "--install-completion" in shown and "--show-completion" in shown


def test_promote_with_an_empty_registry_exits_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    result = runner.invoke(app, ["promote"])
    assert result.exit_code == 2 and "sharerank train" in result.output


def test_eval_set_rejects_unknown_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_HOME", str(tmp_path))
    (tmp_path / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,1\nu2,p1,2\n")
    for assignment, message in (("sharegnn.nope=1", "no setting 'nope'"),
                                ("lightgcn.lr=0.1", "lightgcn is not a model being used"),
                                ("sharegnn", "MODEL.KEY=VALUE"), ("sharegnn.lr=", "MODEL.KEY=VALUE")):
        result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--models", "sharegnn", "--set", assignment])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_settings_read_json_and_none_and_reach_training_and_model_arguments() -> None:
    from sharerank.cli_params import parse_setting
    from sharerank.training.feed.fit import train_config

    params = {"batch_size": parse_setting("2048"), "popularity_weight": parse_setting("none"),
              "temperature": parse_setting("0.3")}
    config = train_config("sharegnn", params)
    assert config.batch_size == 2048 and config.model_params["popularity_weight"] is None
    assert config.model_params["temperature"] == 0.3 and config.model == "sharegnn"


def test_every_option_has_help_and_model_options_list_their_choices() -> None:
    group = typer.main.get_command(app)
    missing = []
    for name, command in {"sharerank": group, **group.commands}.items():
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.opts[0]}")
    assert not missing, f"options without a help text: {missing}"
    shown = {name: " ".join(runner.invoke(app, [name, "--help"], env={"COLUMNS": "250"}).output.split())
             for name in ("train", "eval", "recommend")}
    assert "<" + "|".join(["auto", *model_names(servable=True)]) + ">" in shown["train"]
    assert "<" + "|".join(["auto", *model_names()]) + ">" in shown["recommend"]
    assert "from " + ", ".join(model_names()) in shown["eval"]


def test_import_of_a_malformed_file_exits_2_naming_file_line_and_column(tmp_path: Path) -> None:
    src = tmp_path / "nethept"
    src.mkdir()
    (src / "NetHEPT.txt").write_text("3 2\n0 1 0.5\n1 2 often\n")
    line = one_line_error(sharerank("import", "nethept", "--src", str(src), "--out", str(tmp_path / "out"),
                                    home=tmp_path / "home"))
    assert "NetHEPT.txt, line 3, column 3: not a number: 'often'" in line
    (src / "NetHEPT.txt").write_text("3 2\n0 1 0.5\n1 2\n")
    line = one_line_error(sharerank("import", "nethept", "--src", str(src), "--out", str(tmp_path / "out"),
                                    home=tmp_path / "home"))
    assert "NetHEPT.txt, line 3, column 3: expected u v p, found 2 field(s)" in line


# The main commands end to end, as subprocesses: what users type, on a small simulated world.


def test_train_registers_a_version_and_prints_it(tiny_world: Path, tmp_path: Path) -> None:
    result = sharerank("train", "--data", str(tiny_world), "--model", "lightgcn", "--set", "lightgcn.epochs=3",
                       "--set", "lightgcn.embedding_dim=16", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["version"] == "1" and report["model_name"] == "sharerank" and report["model"] == "lightgcn"
    assert 0 < report["metrics"]["val_recall_20"] <= 1
    assert (tmp_path / "mlflow.db").exists()  # the registry went where SHARERANK_HOME points
    promoted = sharerank("promote", "--json", home=tmp_path)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert json.loads(promoted.stdout)["version"] == "1"


def test_eval_scores_each_model_and_writes_the_report(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = sharerank("eval", "--data", str(tiny_world), "--models", "popularity,itemknn,lightgcn", "--epochs", "2",
                       "--out", str(out), "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report == json.loads(out.read_text())
    assert list(report["models"]) == ["popularity", "itemknn", "lightgcn"]
    recall = {name: row["metrics"]["Recall@20"] for name, row in report["models"].items()}
    assert all(0 < value <= 1 for value in recall.values())
    assert "Recall@20" in result.stderr  # the table for people


def test_recommend_writes_k_products_per_test_user(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.csv"
    result = sharerank("recommend", "--data", str(tiny_world), "--model", "itemknn", "--k", "5", "--out", str(out),
                       "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["rows"] == 5 * summary["users"] > 0
    per_user: dict[str, list[int]] = {}
    for row in rows:
        per_user.setdefault(row["user_id"], []).append(int(row["rank"]))
    assert all(ranks == [1, 2, 3, 4, 5] for ranks in per_user.values())


def test_demo_runs_end_to_end_and_prints_only_json(tmp_path: Path, redis_url: str) -> None:
    result = sharerank("demo", "--users", "400", "--budget", "5", home=tmp_path, REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert report["online_store"] == "RedisOnlineStore"
    chosen = report["chosen"]
    assert set(chosen["families"]) == {*model_names(servable=True), BLEND}  # the two best blended, too
    scored = {name: r for name, r in chosen["families"].items() if isinstance(r, float)}
    assert chosen["validation"]["val_recall_20"] == scored[chosen["model"]]  # the validation winner serves
    assert scored[chosen["model"]] == max(r for name, r in scored.items()
                                          if name != BLEND or chosen["model"] == BLEND)
    assert len(report["feeds"]) == 3 and all(feed["items"] for feed in report["feeds"].values())
    assert {feed["model_version"] for feed in report["feeds"].values()} == {report["model_version"]}
    assert report["live_purchase"]["gone_from_next_feed"] is True
    assert len(report["seeding"]["seeds"]) == 5
    retrain = report["retrain"]  # the held-back events went through RecordEvents into the log, then a retrain
    assert retrain["live_events"]["accepted"] > 100 and retrain["live_events"]["duplicates"] == 0
    assert (Path(retrain["event_log"]) / "purchases.csv").exists()
    assert retrain["candidate"]["version"] == "2" and retrain["champion_before"]["version"] == "1"
    serving = "2" if retrain["promoted"] else "1"
    assert retrain["serving_after_reload"] == retrain["feed_model_version"] == serving
