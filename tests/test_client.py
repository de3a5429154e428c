"""sharerank.client against real servers on loopback: pages, typed errors with their reasons, the token, a read
retried across a server restart, deadlines that expire, and the asyncio clients."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sharerank.client import (
    DEADLINES_S,
    AdminClient,
    AsyncEventClient,
    AsyncFeedClient,
    DeadlineExceeded,
    EventClient,
    FeedClient,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RetryPolicy,
    SeedingClient,
    SharerankError,
    Unauthenticated,
    Unavailable,
    view_event,
)
from sharerank.config import Settings
from sharerank.serving.model_holder import ModelHolder
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import Server, create_server

TOKENS = {"storefront-client-0123": "storefront", "growth-client-4567": "growth"}
STOREFRONT, GROWTH = TOKENS


def start(registry, address: str = "127.0.0.1:0", holder: ModelHolder | None = None, **update) -> Server:
    settings, _ = registry
    # Each server its own event log: a log has one writer, and the module's server is up meanwhile.
    event_log_dir = settings.home / f"events-client-{uuid.uuid4().hex[:8]}"
    return create_server(settings.model_copy(update={"metrics_port": 0, "event_log_dir": event_log_dir, **update}),
                         InMemoryOnlineStore(), holder=holder, address=address)


@pytest.fixture(scope="module")
def server(registry) -> Iterator[Server]:
    server = start(registry, auth_tokens=TOKENS)
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def target(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def settings(registry) -> Settings:
    """The test settings: no target, no token of their own."""
    return registry[0]


@pytest.fixture
def feed(target: str, settings: Settings) -> Iterator[FeedClient]:
    with FeedClient(target, token=STOREFRONT, settings=settings) as client:
        yield client


def known_user(server: Server) -> str:
    bundle = server.holder.current.bundle
    return str(bundle.users[bundle.history.getnnz(axis=1).argmax()])


def test_pages_follow_the_page_token_to_the_end_without_repeats(server: Server, feed: FeedClient) -> None:
    pages = list(feed.pages(known_user(server), page_size=50))
    ids = [item.product_id for page in pages for item in page.items]
    assert len(pages) > 1 and all(page.next_page_token for page in pages[:-1])
    assert not pages[-1].next_page_token
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("call", "kind", "reason", "metadata"), [
    (lambda feed: feed.get_feed("  "), InvalidArgument, "EMPTY_USER_ID", {"field": "user_id"}),
    (lambda feed: feed.get_feed("u1", page_size=0), InvalidArgument, "PAGE_SIZE_OUT_OF_RANGE", {"page_size": "0"}),
    (lambda feed: feed.get_feed("u1", page_token="forged"), InvalidArgument, "INVALID_PAGE_TOKEN", {}),
    (lambda feed: feed.similar_products("no-such-product"), NotFound, "UNKNOWN_PRODUCT",
     {"product_id": "no-such-product"}),
])
def test_refusals_raise_typed_errors_with_the_servers_reason(feed: FeedClient, call, kind: type[SharerankError],
                                                             reason: str, metadata: dict[str, str]) -> None:
    with pytest.raises(kind) as err:
        call(feed)
    assert err.value.reason == reason and err.value.domain == "sharerank.v1"
    assert err.value.metadata == metadata and err.value.retry_after is None
    assert reason in str(err.value)


def test_the_token_comes_from_the_settings_or_an_argument(target: str, settings: Settings) -> None:
    from_settings = settings.model_copy(update={"grpc_target": target, "console_token": STOREFRONT})
    with FeedClient(settings=from_settings) as client:
        assert len(client.get_feed("anyone", page_size=3).items) == 3
    with FeedClient(target, settings=settings) as client, pytest.raises(Unauthenticated) as err:
        client.get_feed("anyone")
    assert err.value.reason == "MISSING_TOKEN"
    with FeedClient(target, token=GROWTH, settings=settings) as client, pytest.raises(PermissionDenied) as err:
        client.get_feed("anyone")
    assert err.value.reason == "ROLE_NOT_ALLOWED" and err.value.metadata["role"] == "growth"
    # The client's own token wins over the console's.
    both = from_settings.model_copy(update={"console_token": GROWTH, "client_token": STOREFRONT})
    with FeedClient(settings=both) as client:
        assert len(client.get_feed("anyone", page_size=3).items) == 3


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sharerank client test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_and_the_token_from_the_settings(registry, settings: Settings, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server = start(registry, auth_tokens=TOKENS, tls_cert_file=cert_file, tls_key_file=key_file)
    configured = settings.model_copy(update={"grpc_target": f"127.0.0.1:{server.port}", "grpc_ca_file": cert_file,
                                             "console_token": STOREFRONT})
    try:
        with FeedClient(settings=configured) as client:
            assert len(client.get_feed("anyone", page_size=3).items) == 3
    finally:
        server.stop(grace=None)


def test_a_seeding_call_past_its_default_deadline_raises_deadline_exceeded(target: str, settings: Settings) -> None:
    with SeedingClient(target, token=GROWTH, deadlines={"GetSeedTargets": 0.02}, settings=settings) as client:
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.seed_targets(5, category="Beauty")  # a worker process starts, the model loads: seconds
        assert time.monotonic() - began < 1.0


def test_a_read_is_retried_across_a_server_restart(registry, settings: Settings) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = start(registry, address)
    with FeedClient(address, settings=settings) as client, ThreadPoolExecutor(1) as pool:
        assert len(client.get_feed("anyone", page_size=3).items) == 3
        down = threading.Event()
        client.channel.subscribe(lambda state: down.set() if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE
                                 else None)
        first.stop(grace=None)
        call = pool.submit(client.get_feed, "anyone", page_size=3, timeout=30)
        # The call's first attempt found nobody listening (an idle channel does not connect by itself).
        assert down.wait(10), "the channel never saw the server gone"
        assert not call.done(), "the call ended while the server was down instead of retrying"
        # The model stays loaded: the restart takes well under the retry budget (about 3.75 s) on a busy machine.
        second = start(registry, address, holder=first.holder)
        try:
            assert len(call.result(timeout=30).items) == 3
        finally:
            second.stop(grace=None)


def test_a_server_that_stays_down_is_unavailable_after_the_retries(settings: Settings) -> None:
    with FeedClient(f"127.0.0.1:{free_port()}", settings=settings) as client:
        began = time.monotonic()
        with pytest.raises(Unavailable) as err:
            client.get_feed("anyone")
        waited = time.monotonic() - began
    # Four backoffs of 0.1 + 0.2 + 0.4 + 0.5 s (±20%): retried, and ended inside GetFeed's 2 s deadline.
    assert 0.9 < waited < DEADLINES_S["GetFeed"], waited
    assert err.value.reason == ""  # gRPC's own error: no server sent an ErrorInfo


def test_unavailable_carries_the_servers_retry_hint(registry, settings: Settings) -> None:
    server = start(registry, model_name=f"absent-{uuid.uuid4().hex}")  # no model to load: NO_MODEL
    quick = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01)
    try:
        with FeedClient(f"127.0.0.1:{server.port}", retry=quick, settings=settings) as client:
            with pytest.raises(Unavailable) as err:
                client.get_feed("anyone")
    finally:
        server.stop(grace=None)
    assert err.value.reason == "NO_MODEL" and err.value.retry_after == 1.0


def test_a_status_that_contradicts_the_call_keeps_the_calls_code() -> None:
    from grpc_status import rpc_status

    from sharerank.client.errors import from_rpc_error

    class Failed(grpc.RpcError):
        def __init__(self, status: grpc.Status, code: grpc.StatusCode):
            self._status, self._code = status, code

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._status.details

        def trailing_metadata(self):
            return self._status.trailing_metadata

    detail = status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone")
    info = detail.details.add()
    info.Pack(error_details_pb2.ErrorInfo(reason="UNKNOWN_PRODUCT"))
    assert from_rpc_error(Failed(rpc_status.to_status(detail), grpc.StatusCode.NOT_FOUND)).reason == "UNKNOWN_PRODUCT"
    error = from_rpc_error(Failed(rpc_status.to_status(detail), grpc.StatusCode.INTERNAL))
    assert type(error) is SharerankError and error.code is grpc.StatusCode.INTERNAL and error.reason == ""


def test_the_async_clients_page_record_and_raise(server: Server, target: str, settings: Settings) -> None:
    user = known_user(server)

    async def main() -> None:
        async with AsyncFeedClient(target, token=STOREFRONT, settings=settings) as feed, \
                AsyncEventClient(target, token=STOREFRONT, settings=settings) as events:
            ids = []
            async for page in feed.pages(user, page_size=5):
                ids += [item.product_id for item in page.items]
                if len(ids) >= 15:
                    break
            assert len(ids) == len(set(ids)) == 15
            with pytest.raises(NotFound) as err:
                await feed.similar_products("no-such-product")
            assert err.value.reason == "UNKNOWN_PRODUCT"
            batch = [view_event(f"client-view-{uuid.uuid4().hex}", user, ids[0])]
            assert (await events.record_events(batch)).accepted_count == 1
            assert (await events.record_events(batch)).duplicate_count == 1  # a resend counts once

    asyncio.run(main())


def test_a_bad_event_batch_names_the_event(target: str, settings: Settings) -> None:
    bad = view_event("client-bad", "u1", "p1")
    bad.view.user_id = ""
    with EventClient(target, token=STOREFRONT, settings=settings) as events, pytest.raises(InvalidArgument) as err:
        events.record_events([view_event(f"client-ok-{uuid.uuid4().hex}", "u1", "p1"), bad])
    assert err.value.reason == "EMPTY_ID" and err.value.metadata["index"] == "1"


def test_the_admin_client_reads_the_model_and_pins_a_version(registry, target: str, settings: Settings) -> None:
    server = start(registry)  # auth off: any caller may reload
    try:
        with AdminClient(f"127.0.0.1:{server.port}", settings=settings) as admin:
            info = admin.model_info()
            assert info.model_version == server.holder.current.version and not info.pinned
            pinned = admin.reload_model(info.model_version)
            assert (pinned.model_version, pinned.pinned, pinned.changed) == (info.model_version, True, False)
            assert admin.model_info().pinned
            assert not admin.reload_model().pinned  # no version: unpinned, following the alias again
    finally:
        server.stop(grace=None)
    with AdminClient(target, token=GROWTH, settings=settings) as admin, pytest.raises(PermissionDenied) as refused:
        admin.model_info()
    assert refused.value.reason == "ROLE_NOT_ALLOWED"


def test_the_readme_example_runs_against_sharerank_serve(registry, tmp_path: Path) -> None:
    """The README's "Calling sharerank from Python" example, as written there, against a `sharerank serve`."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import wait_for

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("## Calling sharerank from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    settings, _ = registry
    port = free_port()
    env = {**os.environ, "SHARERANK_HOME": str(settings.home), "SHARERANK_REDIS_URL": "memory://",
           "SHARERANK_EVENT_LOG_DIR": str(tmp_path / "events"), "SHARERANK_METRICS_PORT": "0",
           "SHARERANK_GRPC_TARGET": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--port", str(port)], env=env,
                            stderr=subprocess.DEVNULL)
    try:
        def serving() -> bool:
            with FeedClient(f"127.0.0.1:{port}", settings=settings) as client:
                try:
                    return bool(client.get_feed("u001", page_size=1).items)
                except SharerankError:
                    return proc.poll() is not None

        wait_for(serving, "sharerank serve answers a feed", timeout_s=120)
        assert proc.poll() is None, "sharerank serve exited"
        result = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True,
                                timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert result.returncode == 0, result.stderr
    *items, refused, recorded = result.stdout.splitlines()
    assert [line.split()[0] for line in items] == ["1"] * 5 + ["2"] * 5
    assert len({line.split()[1] for line in items}) == 10  # two pages, no product twice
    assert (refused, recorded) == ("EMPTY_USER_ID {'field': 'user_id'}", "1 0")
