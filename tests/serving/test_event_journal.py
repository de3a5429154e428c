"""The event journal's contract, held by both backends: the file log and the JetStream stream (a real private
nats-server); then what only a shared stream does (several writers, a broker that dies)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sharerank.config import Settings
from sharerank.serving.events.healer import LiveStateHealer
from sharerank.serving.events.journal import EventJournal, open_event_journal
from sharerank.serving.events.log import EventLog, EventLogError, PurchaseRecord, ShareRecord, ViewRecord
from sharerank.serving.events.stream import JetStreamJournal
from sharerank.serving.online_store import InMemoryOnlineStore

Opener = Callable[[], EventJournal]


@pytest.fixture(params=["file", "jetstream"])
def opener(request, tmp_path: Path) -> Iterator[Opener]:
    """Opens the journal under test; each call a new handle on the same journal (the previous one closed for the
    file log, which has one writer at a time)."""
    handles: list[EventJournal] = []
    if request.param == "file":
        def open_journal() -> EventJournal:
            for handle in handles:
                handle.close()
            handles.append(EventLog(tmp_path / "events"))
            return handles[-1]
    else:
        url, stream = request.getfixturevalue("nats_url"), request.getfixturevalue("event_stream")

        def open_journal() -> EventJournal:
            handles.append(JetStreamJournal(url, stream, tmp_path / "checkpoint.json"))
            return handles[-1]
    yield open_journal
    for handle in handles:
        handle.close()


def share(i: int, ts: float = 1_700_000_000.0) -> ShareRecord:
    return ShareRecord(f"s{i}", f"sharer{i}", f"friend{i}", f"p{i}", ts + i)


def purchase(i: int, share_id: str = "") -> PurchaseRecord:
    return PurchaseRecord(f"b{i}", f"friend{i}", f"p{i}", 1_700_000_100.0 + i, share_id)


def test_append_returns_only_events_it_had_not_stored(opener: Opener) -> None:
    journal = opener()
    batch = [share(1), purchase(1, "s1"), ViewRecord("v1", "friend1", "p1", 1_700_000_000.0)]
    assert [r.event_id for r in journal.append(batch)] == ["s1", "b1", "v1"]
    again = journal.append([*batch, share(2)])
    assert [r.event_id for r in again] == ["s2"]


def test_stored_event_ids_survive_reopening(opener: Opener) -> None:
    opener().append([share(1)])
    reopened = opener()
    assert reopened.append([share(1)]) == []
    assert reopened.is_share("s1")


def test_is_share_knows_shares_only(opener: Opener) -> None:
    journal = opener()
    journal.append([share(1), purchase(1, "s1")])
    assert journal.is_share("s1")
    assert not journal.is_share("b1")  # a purchase's id is no share
    assert not journal.is_share("never-recorded")


def test_shares_are_stored_before_the_purchases_of_their_batch(opener: Opener) -> None:
    journal = opener()
    start = journal.offsets()
    journal.append([purchase(1, "s1"), share(1)])  # a purchase citing a share later in the same batch
    records = [r for batch in journal.read(start, journal.offsets()) for r in batch]
    assert [r.event_id for r in records] == ["s1", "b1"]


def test_read_gives_shares_and_purchases_between_two_offsets_not_views(opener: Opener) -> None:
    journal = opener()
    journal.append([share(1), purchase(1, "s1")])
    middle = journal.offsets()
    journal.append([share(2), ViewRecord("v2", "friend2", "p2", 1_700_000_000.0), purchase(2)])
    end = journal.offsets()
    later = [r.event_id for batch in journal.read(middle, end) for r in batch]
    everything = [r.event_id for batch in journal.read({}, end) for r in batch]
    assert sorted(later) == ["b2", "s2"]
    assert sorted(everything) == ["b1", "b2", "s1", "s2"]
    assert list(journal.read(end, end)) == []


def test_healer_replays_the_journal_into_an_empty_store(opener: Opener) -> None:
    """The healer reads any journal: a store that lost its state gets every share and purchase back."""
    journal = opener()
    journal.append([share(1), purchase(1, "s1"), purchase(2)])
    store = InMemoryOnlineStore()
    healer = LiveStateHealer(journal, store, lambda: None, interval_s=60)
    assert healer.heal_once() == 3
    state = store.get_live_state("friend1")
    assert set(state.purchases) == {"p1"}
    assert [s.product_id for s in state.shares_received] == ["p1"]
    assert set(store.get_live_state("friend2").purchases) == {"p2"}


def test_open_event_journal_picks_the_backend_from_settings(tmp_path: Path, nats_url: str, event_stream: str) -> None:
    file_journal = open_event_journal(Settings(home=tmp_path))
    stream_journal = open_event_journal(Settings(home=tmp_path, event_stream_url=nats_url,
                                                 event_stream_name=event_stream), replica=1)
    try:
        assert isinstance(file_journal, EventLog) and file_journal.root == tmp_path / "events"
        assert isinstance(stream_journal, JetStreamJournal) and stream_journal.stream == event_stream
        assert stream_journal.checkpoint_path.parent == tmp_path / "live-state"
        assert stream_journal.checkpoint_path.name.endswith("-1.json")  # one checkpoint per replica
    finally:
        file_journal.close()
        stream_journal.close()
    with pytest.raises(ValueError, match="nats://"):
        open_event_journal(Settings(home=tmp_path, event_stream_url="kafka://127.0.0.1:9092"))


# Only a shared stream: several writers, and a broker that is down.


def test_two_replicas_share_event_ids_and_shares(nats_url: str, event_stream: str, tmp_path: Path) -> None:
    a = JetStreamJournal(nats_url, event_stream, tmp_path / "a.json")
    b = JetStreamJournal(nats_url, event_stream, tmp_path / "b.json")
    try:
        assert len(a.append([share(1)])) == 1
        assert b.is_share("s1")  # recorded through the other replica, found by asking the stream
        assert b.append([share(1), purchase(1, "s1")]) == [purchase(1, "s1")]  # s1 a duplicate across replicas
        assert a.append([purchase(1, "s1")]) == []
    finally:
        a.close()
        b.close()


def test_an_unreachable_stream_is_a_clear_error(tmp_path: Path) -> None:
    from conftest import free_port

    with pytest.raises(EventLogError, match="cannot use the event stream .* at nats://127.0.0.1"):
        JetStreamJournal(f"nats://127.0.0.1:{free_port()}", "SHARERANK_EVENTS", tmp_path / "c.json")


def test_a_dead_broker_refuses_appends_and_keeps_what_it_acknowledged(nats_process_factory, tmp_path: Path) -> None:
    """Killed NATS: an append raises (nothing is acknowledged); after its restart on the same storage, the events
    acknowledged before are still there and a resend of them is a duplicate."""
    server = nats_process_factory()
    journal = JetStreamJournal(server.url, "FAULTS", tmp_path / "d.json")
    try:
        journal.append([share(1)])
        server.kill()
        with pytest.raises(EventLogError, match="did not store the batch"):
            journal.append([share(2)])
        server.start()
        from conftest import wait_for

        wait_for(lambda: _appends(journal, [share(3)]), "the journal appends again after NATS restarted")
        assert journal.append([share(1)]) == []
        assert journal.is_share("s1")
    finally:
        journal.close()


def _appends(journal: EventJournal, records: list) -> bool:
    try:
        journal.append(records)
        return True
    except EventLogError:
        return False
