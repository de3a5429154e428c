"""TLS on the real server over loopback: a throwaway CA (made here with ``cryptography``) signs the server's
certificate; clients that trust it get answers, everyone else fails the handshake; bearer tokens over plaintext
are refused beyond loopback; a TLS file that cannot be used stops the server, and `sharerank serve` with it,
in one line."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from sharerank.client import AdminClient, Unavailable
from sharerank.config import Settings
from sharerank.serving.events.log import EventLog
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import Server, create_server
from sharerank.serving.tls import TLSSettingsError, is_loopback
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

TOKENS = {"storefront-token-0123": "storefront", "admin-token-89ab": "admin"}
STOREFRONT, ADMIN = TOKENS
CALL_TIMEOUT_S = 10.0
"""Deadline of every call: a handshake that fails does so well within it, one that works answers well within it."""


# A throwaway PKI -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(common_name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(common_name, _name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issuer(key, cert)


def issue(ca: Issuer, common_name: str, usage: x509.ObjectIdentifier) -> Issuer:
    """A leaf certificate for 127.0.0.1, ::1 and localhost, signed by ``ca``, for server or client auth."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (_builder(common_name, ca.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Issuer(key, cert)


def key_pem(issuer: Issuer, passphrase: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return issuer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Issuer
    other_ca: Issuer
    server: Issuer
    client: Issuer
    stranger: Issuer  # a client certificate the other CA signed

    @property
    def cert_file(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.folder / "server.key"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("sharerank test CA"), make_ca("someone else's CA")
    pki = Pki(folder, ca, other_ca, issue(ca, "sharerank server", ExtendedKeyUsageOID.SERVER_AUTH),
              issue(ca, "storefront client", ExtendedKeyUsageOID.CLIENT_AUTH),
              issue(other_ca, "stranger", ExtendedKeyUsageOID.CLIENT_AUTH))
    # The chain file holds the server's certificate then its CA's, as a deployment's usually does.
    pki.cert_file.write_bytes(pki.server.pem + ca.pem)
    pki.key_file.write_bytes(key_pem(pki.server))
    pki.ca_file.write_bytes(ca.pem)
    return pki


# Servers and clients ---------------------------------------------------------------------------------------------

def start(registry, address: str = "127.0.0.1:0", **update) -> Server:
    settings, _ = registry
    event_log_dir = settings.home / f"events-{uuid.uuid4().hex[:8]}"  # a log has one writer
    return create_server(settings.model_copy(update={"metrics_port": 0, "event_log_dir": event_log_dir, **update}),
                         InMemoryOnlineStore(), address=address)


@pytest.fixture(scope="module")
def server(registry, pki: Pki) -> Iterator[Server]:
    """TLS and auth together: the configuration a server reachable over a network needs."""
    server = start(registry, auth_tokens=TOKENS, tls_cert_file=pki.cert_file, tls_key_file=pki.key_file)
    yield server
    server.stop(grace=None)


def tls_channel(port: int, trusted: bytes, client: Issuer | None = None, host: str = "127.0.0.1") -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trusted, private_key=key_pem(client) if client else None,
        certificate_chain=client.pem if client else None)
    return grpc.secure_channel(f"{host}:{port}", credentials)


def health_status(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S).status


def get_feed(channel: grpc.Channel, token: str | None = None) -> feed_service_pb2.GetFeedResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    return feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
        feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3), metadata=metadata, timeout=CALL_TIMEOUT_S)


def handshake_fails(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        health_status(channel)
    # UNAVAILABLE: no connection was made; the same call over a trusted channel answers (the tests below).
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()


# The tests -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_client_trusting_the_ca_gets_answers_with_a_token(server: Server, pki: Pki, host: str) -> None:
    with tls_channel(server.port, pki.ca.pem, host=host) as channel:
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert len(get_feed(channel, STOREFRONT).items) == 3
        with pytest.raises(grpc.RpcError) as err:  # TLS does not switch auth off
            get_feed(channel)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_plaintext_client_fails(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        handshake_fails(channel)


def test_a_client_trusting_another_ca_fails(server: Server, pki: Pki) -> None:
    with tls_channel(server.port, pki.other_ca.pem) as channel:
        handshake_fails(channel)


def test_the_console_connects_over_tls_when_given_the_ca(server: Server, pki: Pki) -> None:
    """The console's clients as it opens them: the console token, target and CA from its settings."""
    settings = Settings(grpc_target=f"127.0.0.1:{server.port}", console_token=ADMIN, grpc_ca_file=pki.ca_file)
    with AdminClient(token=settings.console_token, settings=settings) as client:
        assert client.model_info().model_version == server.holder.current.version
    plaintext = settings.model_copy(update={"grpc_ca_file": None})
    with AdminClient(token=plaintext.console_token, settings=plaintext) as client, pytest.raises(Unavailable):
        client.model_info()


def test_mutual_tls_admits_only_clients_the_ca_signed(registry, pki: Pki) -> None:
    server = start(registry, tls_cert_file=pki.cert_file, tls_key_file=pki.key_file, tls_client_ca_file=pki.ca_file)
    try:
        with tls_channel(server.port, pki.ca.pem, client=pki.client) as channel:
            assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        with tls_channel(server.port, pki.ca.pem) as channel:  # no client certificate
            handshake_fails(channel)
        with tls_channel(server.port, pki.ca.pem, client=pki.stranger) as channel:
            handshake_fails(channel)
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"])
def test_tokens_without_tls_are_refused_beyond_loopback(registry, address: str) -> None:
    settings, _ = registry
    events = settings.home / f"events-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TLSSettingsError, match="without TLS while auth tokens are set"):
        create_server(settings.model_copy(update={"metrics_port": 0, "event_log_dir": events, "auth_tokens": TOKENS}),
                      InMemoryOnlineStore(), address=address)
    with EventLog(events):  # refused before anything started: the log is free
        pass


def test_tokens_without_tls_are_served_on_loopback_and_tls_beyond_it(registry, pki: Pki) -> None:
    for update, address in (({}, "[::1]:0"),
                            ({"tls_cert_file": pki.cert_file, "tls_key_file": pki.key_file}, "0.0.0.0:0")):
        server = start(registry, address, auth_tokens=TOKENS, **update)
        try:
            channel = (grpc.insecure_channel(f"[::1]:{server.port}") if not update
                       else tls_channel(server.port, pki.ca.pem))
            with channel:
                assert len(get_feed(channel, STOREFRONT).items) == 3
        finally:
            server.stop(grace=None)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:50051", True), ("127.9.8.7:0", True), ("[::1]:0", True), ("localhost:0", True),
     ("LOCALHOST:1", True), ("0.0.0.0:0", False), ("[::]:0", False), ("10.0.0.1:50051", False),
     ("localhost.example.com:0", False), ("localhost", False), ("[::ffff:10.0.0.1]:0", False)],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def _unusable(pki: Pki, tmp_path: Path) -> dict[str, tuple[dict, str, Path | None]]:
    """Case → (TLS settings over the good pair, what the error says, the file it names)."""
    garbage, encrypted, other_key = tmp_path / "garbage.pem", tmp_path / "encrypted.key", tmp_path / "client.key"
    garbage.write_text("not a certificate\n")
    encrypted.write_bytes(key_pem(pki.server, passphrase=b"s3cret"))
    other_key.write_bytes(key_pem(pki.client))
    missing_key, missing_cert = tmp_path / "nowhere.key", tmp_path / "nowhere.pem"
    return {
        "missing key": ({"tls_key_file": missing_key}, "cannot read the TLS key file", missing_key),
        "missing cert": ({"tls_cert_file": missing_cert}, "cannot read the TLS certificate file", missing_cert),
        "cert is a folder": ({"tls_cert_file": tmp_path}, "cannot read the TLS certificate file", tmp_path),
        "garbage cert": ({"tls_cert_file": garbage}, "are not a PEM certificate chain", garbage),
        "garbage key": ({"tls_key_file": garbage}, "are not a PEM certificate chain", garbage),
        "another certificate's key": ({"tls_key_file": other_key}, "are not a PEM certificate chain", other_key),
        "encrypted key": ({"tls_key_file": encrypted}, "is encrypted", encrypted),
        "client CA not PEM": ({"tls_client_ca_file": garbage}, "holds no PEM certificate", garbage),
        "key without cert": ({"tls_cert_file": None}, "together", None),
        "client CA without TLS": ({"tls_cert_file": None, "tls_key_file": None, "tls_client_ca_file": pki.ca_file},
                                  "needs tls_cert_file", None),
    }


@pytest.mark.parametrize("case", ["missing key", "missing cert", "cert is a folder", "garbage cert", "garbage key",
                                  "another certificate's key", "encrypted key", "client CA not PEM",
                                  "key without cert", "client CA without TLS"])
def test_unusable_tls_settings_stop_the_server_before_it_starts(registry, pki: Pki, tmp_path: Path,
                                                                case: str) -> None:
    update, message, named = _unusable(pki, tmp_path)[case]
    settings, _ = registry
    events = tmp_path / "events"
    tls = {"tls_cert_file": pki.cert_file, "tls_key_file": pki.key_file, **update}
    with pytest.raises(TLSSettingsError, match=message) as err:
        create_server(settings.model_copy(update={"metrics_port": 0, "event_log_dir": events, **tls}),
                      InMemoryOnlineStore(), address="127.0.0.1:0")
    if named is not None:
        assert str(named) in str(err.value)  # the message names the file to fix
    with EventLog(events):  # nothing was started
        pass


def test_settings_refuse_half_a_tls_pair(pki: Pki) -> None:
    with pytest.raises(ValidationError, match="together"):
        Settings(tls_cert_file=pki.cert_file)
    with pytest.raises(ValidationError, match="together"):
        Settings(tls_key_file=pki.key_file)
    with pytest.raises(ValidationError, match="needs tls_cert_file"):
        Settings(tls_client_ca_file=pki.ca_file)
    assert Settings(tls_cert_file=pki.cert_file, tls_key_file=pki.key_file).tls_client_ca_file is None


def sharerank_serve(home: Path, **env: str) -> subprocess.CompletedProcess:
    """``sharerank serve --port 0`` as a user runs it; a refusal exits at once, a server would hit the timeout."""
    script = Path(sys.executable).with_name("sharerank")
    return subprocess.run([str(script), "serve", "--port", "0"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "SHARERANK_HOME": str(home), "SHARERANK_REDIS_URL": "memory://",
                               "SHARERANK_METRICS_PORT": "0", **env})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_serve_exits_2_in_one_line_for_a_missing_key_file(pki: Pki, tmp_path: Path) -> None:
    line = one_line_error(sharerank_serve(tmp_path / "home", SHARERANK_TLS_CERT_FILE=str(pki.cert_file),
                                          SHARERANK_TLS_KEY_FILE=str(tmp_path / "nowhere.key")))
    assert "cannot read the TLS key file" in line and "nowhere.key" in line


def test_serve_exits_2_in_one_line_for_tokens_without_tls_beyond_loopback(tmp_path: Path) -> None:
    line = one_line_error(sharerank_serve(tmp_path / "home", SHARERANK_HOST="0.0.0.0",
                                          SHARERANK_AUTH_TOKENS='{"storefront-token-0123": "storefront"}'))
    assert "without TLS while auth tokens are set" in line and "storefront-token-0123" not in line
