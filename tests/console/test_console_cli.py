"""`sharerank console` refuses bad input in one line (exit code 2) before it starts serving."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from sharerank.cli import app

runner = CliRunner()


def test_a_taken_port_exits_2_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = runner.invoke(app, ["console", "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1:" in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_demand_file_that_is_not_json_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "demand.json"
    bad.write_text("periods: 3")
    result = runner.invoke(app, ["console", "--demand", str(bad)])
    assert result.exit_code == 2
    assert "not a demand report" in " ".join(result.output.split())
