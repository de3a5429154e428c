"""The suite's own isolation, checked by running pieces of it in a nested pytest: the caller's settings are never
read, no real home folder is written, and under ``CI=true`` a missing Redis fails instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

TESTS = Path(__file__).resolve().parent


def nested_pytest(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "TEST_REDIS_URL")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(TESTS.parent), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env={**base, **env})


def test_caller_settings_are_ignored_and_no_home_is_written(tmp_path: Path) -> None:
    home = tmp_path / "real-home"
    home.mkdir()
    caller = {"HOME": str(home), "SHARERANK_HOME": str(home / ".sharerank"), "SHARERANK_MODEL_NAME": "not-ours",
              "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "MLFLOW_TRACKING_URI": f"file://{home}/mlruns"}
    # These tests train, register and promote through Settings() and load an MLflow registry.
    result = nested_pytest(str(TESTS / "test_cli.py::test_promote_with_an_empty_registry_exits_2"),
                           str(TESTS / "training/test_tracking.py::test_promote_without_any_version_says_what_to_do"),
                           str(TESTS / "test_cli.py::test_train_registers_a_version_and_prints_it"),
                           env=caller, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout
    assert list(home.iterdir()) == [], sorted(p.name for p in home.rglob("*"))[:20]
    assert not (tmp_path / ".sharerank").exists()


def test_under_ci_a_missing_redis_fails_instead_of_skipping(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    test = str(TESTS / "serving" / "test_online_store.py::test_redis_layout_matches_keys_md")
    outside_ci = nested_pytest(test, "-rs", env={"TEST_REDIS_URL": dead}, cwd=tmp_path)
    assert outside_ci.returncode == 0 and "1 skipped" in outside_ci.stdout, outside_ci.stdout[-2000:]
    assert "does not answer" in outside_ci.stdout
    in_ci = nested_pytest(test, env={"TEST_REDIS_URL": dead, "CI": "true"}, cwd=tmp_path)
    assert in_ci.returncode == 1 and "1 error" in in_ci.stdout, in_ci.stdout[-2000:]
    assert "CI=true: a missing dependency fails the run" in in_ci.stdout
