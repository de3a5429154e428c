"""The event log on a real folder: format, dedupe across restarts, fsync before returning, crash repair, lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.serving.events.log import (
    EventLog,
    EventLogError,
    PurchaseRecord,
    ShareRecord,
    ViewRecord,
    id_problem,
)

SHARE = ShareRecord("s1", "alice", "bob", "p1", 1718000000.0)
BUY = PurchaseRecord("b1", "bob", "p1", 1718000100.25, share_id="s1")
ORGANIC = PurchaseRecord("b2", "carol", "p2", 1718000200.0)
VIEW = ViewRecord("v1", "carol", "p3", 1718000300.5)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "events"


def test_append_writes_the_dataset_folder_format(root: Path) -> None:
    with EventLog(root) as log:
        assert log.append([BUY, SHARE, ORGANIC, VIEW]) == [BUY, SHARE, ORGANIC, VIEW]
    assert (root / "purchases.csv").read_text() == (
        "user_id,product_id,ts,share_id,event_id\n"
        "bob,p1,1718000100.25,s1,b1\n"
        "carol,p2,1718000200.0,,b2\n")
    assert (root / "shares.csv").read_text() == (
        "share_id,sharer_id,recipient_id,product_id,ts\ns1,alice,bob,p1,1718000000.0\n")
    assert (root / "views.csv").read_text() == "user_id,product_id,ts,event_id\ncarol,p3,1718000300.5,v1\n"


def test_files_are_created_with_the_first_event_of_their_kind(root: Path) -> None:
    with EventLog(root) as log:
        assert sorted(p.name for p in root.iterdir()) == [".lock"]
        log.append([ORGANIC])
        assert sorted(p.name for p in root.iterdir()) == [".lock", "purchases.csv"]
        log.append([PurchaseRecord("b3", "dave", "p2", 5.0)])
    assert (root / "purchases.csv").read_text().count("user_id,product_id") == 1  # one header


def test_the_log_loads_as_a_dataset(root: Path) -> None:
    odd = PurchaseRecord('b,"4"', 'user, "quoted"', "p\u00e9,x", 7.5)  # commas, quotes, non-ASCII survive CSV
    with EventLog(root) as log:
        log.append([SHARE, BUY, ORGANIC, VIEW, odd])
    data = load_dataset(root)
    assert data.summary()["purchases"] == 3 and data.summary()["shares"] == 1 and data.summary()["views"] == 1
    users = data.users[data.purchases.user].tolist()
    assert users == ["bob", "carol", 'user, "quoted"']
    assert data.products[data.purchases.product].tolist() == ["p1", "p2", "p\u00e9,x"]
    np.testing.assert_array_equal(data.purchases.ts, [1718000100.25, 1718000200.0, 7.5])
    assert data.purchases.share.tolist() == [0, -1, -1]  # bob's purchase came through share s1
    assert data.shares.id.tolist() == ["s1"]


def test_replayed_ids_are_skipped_within_a_call_and_across_restarts(root: Path) -> None:
    with EventLog(root) as log:
        assert log.append([SHARE, BUY]) == [SHARE, BUY]
        assert log.append([BUY, ORGANIC, ORGANIC]) == [ORGANIC]
        assert len(log) == 3 and "b1" in log and log.is_share("s1") and not log.is_share("b1")
    with EventLog(root) as log:  # a restart reads the ids back
        assert len(log) == 3 and log.is_share("s1")
        assert log.append([SHARE, BUY, ORGANIC, VIEW]) == [VIEW]
    assert (root / "purchases.csv").read_text().count("\n") == 3  # header + b1 + b2, nothing twice


def test_event_ids_are_unique_across_kinds(root: Path) -> None:
    with EventLog(root) as log:
        log.append([ORGANIC])
        assert log.append([ViewRecord("b2", "carol", "p9", 1.0)]) == []


def test_a_purchase_may_cite_only_a_logged_share(root: Path) -> None:
    with EventLog(root) as log:
        with pytest.raises(ValueError, match="not logged"):
            log.append([ORGANIC, PurchaseRecord("b9", "bob", "p1", 1.0, share_id="nope")])
        assert len(log) == 0 and not (root / "purchases.csv").exists()  # nothing written
        with pytest.raises(ValueError):
            log.append([PurchaseRecord("b9", "bob", "p1", 1.0, share_id="b2")])  # an id, but not a share's
        assert log.append([BUY, SHARE]) == [BUY, SHARE]  # a share of the same call is fine, in any order


def test_append_fsyncs_every_file_it_wrote_before_returning(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((Path(target).name, os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with EventLog(root) as log:
        synced.clear()
        log.append([SHARE, BUY, VIEW])
        names = [name for name, _ in synced]
        # Every file, at its full size (all bytes of this call covered); new files' directory entry too.
        for name in ("shares.csv", "purchases.csv", "views.csv"):
            assert (name, (root / name).stat().st_size) in synced
        assert names.index("shares.csv") < names.index("purchases.csv")  # shares first: a crash leaves no dangling
        assert "events" in names
        synced.clear()
        log.append([ORGANIC])
        assert synced == [("purchases.csv", (root / "purchases.csv").stat().st_size)]


def test_a_failed_fsync_rolls_the_file_back_and_the_retry_succeeds(root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with EventLog(root) as log:
        log.append([ORGANIC])
        size = (root / "purchases.csv").stat().st_size
        real_fsync, calls = os.fsync, []

        def failing_fsync(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(EventLogError, match="cannot append"):
            log.append([PurchaseRecord("b3", "dave", "p2", 5.0)])
        assert (root / "purchases.csv").stat().st_size == size and "b3" not in log
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert log.append([PurchaseRecord("b3", "dave", "p2", 5.0)]) != []
    assert load_dataset(root).summary()["purchases"] == 2


def test_files_written_before_a_failure_count_as_logged(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync, failed = os.fsync, []

    def fail_on_purchases(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("purchases.csv") and not failed:
            failed.append(fd)
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    with EventLog(root) as log:
        monkeypatch.setattr(os, "fsync", fail_on_purchases)
        with pytest.raises(EventLogError):
            log.append([SHARE, BUY])
        monkeypatch.setattr(os, "fsync", real_fsync)
        # The share reached the disk: a resend must not write it twice (share ids are unique in shares.csv).
        assert log.append([SHARE, BUY]) == [BUY]
    assert load_dataset(root).summary()["shares"] == 1


def test_a_log_that_cannot_roll_back_refuses_appends_until_reopened(root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_disk(fd: int) -> None:
        raise OSError(5, "Input/output error")

    log = EventLog(root)
    monkeypatch.setattr(os, "fsync", broken_disk)
    with pytest.raises(EventLogError, match="cannot append"):
        log.append([ORGANIC])
    with pytest.raises(EventLogError, match="refuses appends until it is reopened"):
        log.append([VIEW])
    monkeypatch.undo()
    log.close()
    with EventLog(root) as reopened:  # what is on disk now counts (never acknowledged; a resend dedupes)
        reopened.append([ORGANIC, VIEW])
    assert load_dataset(root).summary()["purchases"] == 1


def test_opening_cuts_a_torn_last_line(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with EventLog(root) as log:
        log.append([ORGANIC])
    with (root / "purchases.csv").open("a") as f:
        f.write("dave,p9,12")  # a crash in the middle of an append: never acknowledged
    with EventLog(root) as log:
        assert len(log) == 1
        log.append([PurchaseRecord("b3", "dave", "p2", 5.0)])
    assert "torn last line" in caplog.text
    assert load_dataset(root).summary()["purchases"] == 2


def test_a_torn_header_is_rewritten(root: Path) -> None:
    root.mkdir()
    (root / "views.csv").write_text("user_id,prod")
    with EventLog(root) as log:
        log.append([VIEW])
    assert (root / "views.csv").read_text().startswith("user_id,product_id,ts,event_id\ncarol,")


def test_a_folder_of_other_files_is_refused(root: Path) -> None:
    root.mkdir()
    (root / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,1\n")  # e.g. `sharerank simulate` output
    with pytest.raises(EventLogError, match="not an event-log file"):
        EventLog(root)
    EventLog(root.parent / "elsewhere").close()  # the failed open released its lock


def test_one_writer_per_folder_in_this_process_and_others(root: Path) -> None:
    log = EventLog(root)
    with pytest.raises(EventLogError, match="already open for writing"):
        EventLog(root)
    script = "import sys; from sharerank.serving.events.log import EventLog; EventLog(sys.argv[1])"
    other = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=60)
    assert other.returncode != 0
    assert "already open for writing" in other.stderr and f"pid {os.getpid()}" in other.stderr
    log.close()
    log.close()  # idempotent
    with EventLog(root):  # released
        pass


def test_a_closed_log_refuses_appends(root: Path) -> None:
    log = EventLog(root)
    log.close()
    with pytest.raises(EventLogError, match="closed"):
        log.append([ORGANIC])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: PurchaseRecord("", "u", "p", 1.0), "event_id is empty"),
        (lambda: PurchaseRecord("e", " ", "p", 1.0), "user_id is empty"),
        (lambda: PurchaseRecord("e", "u", "p\n", 1.0), "control character"),
        (lambda: PurchaseRecord("e", "u", "p", -1.0), "ts"),
        (lambda: PurchaseRecord("e", "u", "p", float("nan")), "ts"),
        (lambda: ViewRecord("e", "u", "x" * 513, 1.0), "longer than 512"),
        (lambda: ShareRecord("e", "u", "u", "p", 1.0), "oneself"),
    ],
)
def test_records_reject_what_would_break_the_log(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(("value", "problem"), [("u1", None), (" u1 ", None), ("", "is empty"), ("\t", "is empty"),
                                                ("a\x00b", "contains a control character")])
def test_id_problem(value: str, problem: str | None) -> None:
    assert id_problem(value) == problem
