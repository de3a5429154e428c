"""Progress on stderr: a moving display on a terminal, plain lines while the work runs when stderr is a file,
nothing with --quiet; stdout stays the JSON document in every case."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_for
from rich.console import Console
from typer.testing import CliRunner

from sharerank import progress
from sharerank.cli import app

SHARERANK = str(Path(sys.executable).with_name("sharerank"))
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def frames(raw: str) -> list[str]:
    """The screens a live display drew: split where it rewinds (carriage return, cursor up), codes removed."""
    return [text for part in re.split(r"\r|\x1b\[\d*A", raw) if (text := ESCAPE.sub("", part).strip())]


def test_plain_lines_come_per_epoch_and_as_a_heartbeat_during_one_long_step() -> None:
    stream = io.StringIO()
    with progress.reporting(progress.LineReporter(stream, heartbeat=0.05, grace=0.0)):
        with progress.stage("fit", 3, each_step=True) as epochs:
            epochs.advance(note="loss 0.5")
            assert "fit: 1/3 loss 0.5" in stream.getvalue()
            with progress.stage("one long step"):
                wait_for(lambda: "fit > one long step: running for" in stream.getvalue(), "a heartbeat line")
    assert "fit: done in" in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_quick_stage_gets_one_plain_line_and_its_steps_none() -> None:
    stream = io.StringIO()
    with progress.reporting(progress.LineReporter(stream, heartbeat=60.0, grace=60.0)):
        with progress.stage("rank users", 100) as ranking:
            ranking.advance(100)
            assert stream.getvalue() == ""
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "rank users: done in" in lines[0] and lines[0].endswith(", 100/100"), lines


def test_plain_lines_of_a_run_refused_at_once_are_dropped_and_of_a_quick_run_kept() -> None:
    stream = io.StringIO()
    with progress.reporting(progress.LineReporter(stream, grace=60.0)):
        try:
            with progress.stage("seed"), progress.stage("read the dataset"):
                raise FileNotFoundError("no such directory")
        except FileNotFoundError:
            pass
        assert stream.getvalue() == ""  # the error line will say it alone
        with progress.stage("simulate", 2) as parts:
            parts.advance(2)
        assert "simulate: done in" in stream.getvalue()


def test_the_live_display_keeps_the_outer_stage_and_drops_finished_inner_ones() -> None:
    screen = io.StringIO()
    with progress.reporting(progress.LiveReporter(Console(file=screen, force_terminal=True, width=120))):
        with progress.stage("eval", 2) as models:
            for step in range(2):
                with progress.stage("lightgcn epochs", 3) as epochs:
                    epochs.advance(3, note="loss 0.5")
                models.advance(note=f"model {step} done")
    last = frames(screen.getvalue())[-1]
    assert "eval" in last and "2/2" in last and "model 1 done" in last and "lightgcn" not in last, last


def test_quiet_leaves_stderr_without_progress(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--quiet", "simulate", "--users", "300", "--out", str(tmp_path / "w"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["users"] == 300
    assert result.stderr == ""
    loud = CliRunner().invoke(app, ["simulate", "--users", "300", "--out", str(tmp_path / "w2"), "--json"])
    assert "simulate: done in" in loud.stderr  # the same run without --quiet reports


def test_a_command_on_a_terminal_shows_a_moving_display(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    command = subprocess.Popen([SHARERANK, "simulate", "--users", "2000", "--out", str(tmp_path / "w"), "--json"],
                               stdout=subprocess.PIPE, stderr=follower,
                               env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "140"})
    os.close(follower)
    screen = b""
    while chunk := _read(leader):
        screen += chunk
    os.close(leader)
    stdout = command.stdout.read()
    assert command.wait(timeout=120) == 0, screen[-2000:]
    assert json.loads(stdout)["users"] == 2000
    drawn = {frame for frame in frames(screen.decode(errors="replace")) if frame.startswith("simulate")}
    assert len(drawn) >= 3, drawn  # the bar and its counts moved while the world was drawn
    assert b"\x1b[" in screen


def _read(fd: int) -> bytes:
    """The next output on a pty; b"" once the other side has closed (Linux raises EIO then)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def test_a_fit_reports_each_epoch_in_a_file_while_it_runs(tiny_world: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr, (tmp_path / "stdout.json").open("w+") as stdout:
        command = subprocess.Popen(
            [SHARERANK, "train", "--data", str(tiny_world), "--model", "lightgcn", "--budget", "4",
             "--set", "lightgcn.epochs=1000", "--set", "lightgcn.patience=1000", "--set", "lightgcn.embedding_dim=16",
             "--json"], stdout=stdout, stderr=stderr, env={**os.environ, "SHARERANK_HOME": str(tmp_path / "home")})
        try:
            epoch = re.compile(r"train > lightgcn epochs: 2/1,000 loss \d\.\d{4} val_recall@20 \d\.\d{4}")
            deadline = time.monotonic() + 120
            while not epoch.search(log.read_text()):
                assert command.poll() is None, log.read_text()[-2000:]  # the line came while the fit ran
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.01)
            assert command.poll() is None
            assert command.wait(timeout=180) == 0, log.read_text()[-2000:]
        finally:
            command.kill()
        stdout.seek(0)
        assert json.loads(stdout.read())["model"] == "lightgcn"
    lines = log.read_text()
    assert "\x1b" not in lines and "\r" not in lines
    assert "train > lightgcn refit on train + validation > lightgcn epochs: done in" in lines
