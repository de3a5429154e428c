"""`sharerank ingest`: the shared stream (a real private nats-server) drained into a dataset folder, each event
id exactly once, through crashes between the write and the ack, a real kill -9, and resends the stream stored
twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.dataset.reader import load_dataset
from sharerank.serving.events.ingest import IngestError, ingest, logged_ids
from sharerank.serving.events.log import PurchaseRecord, ShareRecord, ViewRecord
from sharerank.serving.events.stream import JetStreamJournal

DAY = 86_400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def world(count: int) -> list:
    """``count`` shares each bought through, an organic purchase and a view per share, over three days."""
    records: list = []
    for i in range(count):
        ts = T0 + i * (3 * DAY / count)
        records += [ShareRecord(f"s{i}", f"u{i % 7}", f"u{i % 7 + 10}", f"p{i % 13}", ts),
                    PurchaseRecord(f"b{i}", f"u{i % 7 + 10}", f"p{i % 13}", ts + 60, f"s{i}"),
                    PurchaseRecord(f"o{i}", f"u{i % 5}", f"p{i % 11}", ts + 90),
                    ViewRecord(f"v{i}", f"u{i % 5}", f"p{i % 3}", ts + 30)]
    return records


@pytest.fixture
def journal(nats_url: str, event_stream: str, tmp_path: Path):
    handle = JetStreamJournal(nats_url, event_stream, tmp_path / "checkpoint.json")
    yield handle
    handle.close()


def test_ingest_logs_every_event_once_in_day_partitions_that_train_reads(journal, nats_url, event_stream,
                                                                         tmp_path: Path) -> None:
    records = world(60)
    journal.append(records)
    out = tmp_path / "log"
    report = ingest(nats_url, event_stream, out, batch=50)
    assert (report.read, report.written, report.duplicates, report.pending) == (240, 240, 0, 0)
    assert sorted(logged_ids(out)) == sorted(r.event_id for r in records)
    days = sorted(p.name for p in (out / "purchases.parquet").iterdir())
    assert days == ["day=2023-11-14", "day=2023-11-15", "day=2023-11-16", "day=2023-11-17"]
    dataset = load_dataset(out)
    assert len(dataset.purchases.user) == 120 and len(dataset.shares.id) == 60
    assert (dataset.purchases.share >= 0).sum() == 60  # purchases through a share keep their share
    again = ingest(nats_url, event_stream, out)
    assert (again.read, again.written) == (0, 0)  # the durable consumer remembers where the folder is


def test_a_crash_between_write_and_ack_logs_nothing_twice(journal, nats_url, event_stream, tmp_path: Path) -> None:
    """The batch is written, then the run dies before acking it: the next run gets those messages again (after
    ack_wait) and skips them by event id."""
    records = world(30)
    journal.append(records)
    out = tmp_path / "log"

    def crash() -> None:
        raise RuntimeError("injected crash after the write")

    with pytest.raises(RuntimeError, match="injected"):
        ingest(nats_url, event_stream, out, batch=40, ack_wait_s=1.0, after_write=crash)
    assert len(logged_ids(out)) == 40  # the first batch is in the folder, never acked
    report = ingest(nats_url, event_stream, out, batch=40, ack_wait_s=1.0)
    assert report.duplicates == 40 and report.written == 80
    ids = logged_ids(out)
    assert len(ids) == len(set(ids)) == 120


def test_a_resend_the_stream_stored_twice_is_logged_once(nats_url, event_stream, tmp_path: Path) -> None:
    """Past the stream's duplicate window a resent event is stored again; the folder still holds it once."""
    short = JetStreamJournal(nats_url, event_stream, tmp_path / "c.json", duplicate_window_s=0.2)
    try:
        assert len(short.append([ShareRecord("s1", "a", "b", "p", T0)])) == 1
        wait_for(lambda: bool(short.append([ShareRecord("s1", "a", "b", "p", T0)])),
                 "the stream stores the resend once its duplicate window has passed")
    finally:
        short.close()
    report = ingest(nats_url, event_stream, tmp_path / "log")
    assert (report.read, report.written, report.duplicates) == (2, 1, 1)
    assert logged_ids(tmp_path / "log") == ["s1"]


def test_kill_9_mid_run_then_resume_logs_each_event_exactly_once(journal, nats_url, event_stream,
                                                                 tmp_path: Path) -> None:
    records = world(500)
    journal.append(records)
    out = tmp_path / "log"
    env = {**os.environ, "SHARERANK_EVENT_STREAM_URL": nats_url, "SHARERANK_EVENT_STREAM_NAME": event_stream}
    command = [sys.executable, "-m", "sharerank.cli", "ingest", "--out", str(out), "--batch", "20", "--ack-wait", "1",
               "--json"]
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(out.glob("*.parquet/day=*/part-*.parquet"))) >= 5 or victim.poll() is not None,
                 "the first run has written a few parts", timeout_s=60)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = logged_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == {r.event_id for r in records}
    load_dataset(out)


def test_cli_refuses_without_a_stream_or_into_a_file_log(tmp_path: Path, nats_url: str, event_stream: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "log")])
    assert result.exit_code == 2 and "SHARERANK_EVENT_STREAM_URL" in result.output
    (tmp_path / "csvlog").mkdir()
    (tmp_path / "csvlog" / "purchases.csv").write_text("user_id,product_id,ts,share_id,event_id\n")
    monkeypatch.setenv("SHARERANK_EVENT_STREAM_URL", nats_url)
    monkeypatch.setenv("SHARERANK_EVENT_STREAM_NAME", event_stream)
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "csvlog")])
    assert result.exit_code == 2 and "file event log" in result.output
    with pytest.raises(IngestError, match="no event stream"):
        ingest(nats_url, "NEVER_CREATED", tmp_path / "log")


def test_follow_keeps_draining_until_sigterm_then_reports(journal, nats_url, event_stream, tmp_path: Path) -> None:
    import json

    out = tmp_path / "log"
    env = {**os.environ, "SHARERANK_EVENT_STREAM_URL": nats_url, "SHARERANK_EVENT_STREAM_NAME": event_stream}
    journal.append(world(10))
    follower = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "ingest", "--out", str(out), "--follow",
                                 "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(logged_ids(out)) == 40, "the follower logged the first events", timeout_s=60)
        later = [ShareRecord(f"late{i}", "a", "b", "p", T0) for i in range(5)]
        journal.append(later)
        wait_for(lambda: len(logged_ids(out)) == 45, "the follower logged events published after it started")
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, stderr
    report = json.loads(stdout)
    assert (report["read"], report["written"], report["pending"]) == (45, 45, 0)
