"""TLS for the gRPC listener: server credentials from the settings' PEM files, and the rule that bearer tokens
never travel in plaintext beyond loopback.

With ``tls_cert_file`` and ``tls_key_file`` set the server listens with :func:`grpc.ssl_server_credentials`;
``tls_client_ca_file`` also makes clients present a certificate that CA signed (mutual TLS). The files are read
and checked (PEM parses, the key matches the certificate) before the server starts, with the standard library's
``ssl`` module, so a bad file is one :class:`TLSSettingsError` naming it, not gRPC's failed bind.

With ``auth_tokens`` set and no TLS, :func:`check_transport` refuses any address but a loopback one
(127.0.0.0/8, ::1, ``localhost``): a token sent in plaintext over a network can be read and replayed by anyone
on the path.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import grpc

from sharerank.config import Settings

__all__ = ["TLSSettingsError", "check_transport", "is_loopback", "server_credentials"]


class TLSSettingsError(OSError):
    """The TLS files cannot be used, or tokens would be sent in plaintext beyond loopback: the server does not
    start."""


def is_loopback(address: str) -> bool:
    """Whether a gRPC listen address (``host:port``, ``[v6]:port``) names only this machine. Hostnames other than
    ``localhost`` are not resolved: they count as not loopback."""
    host, colon, _ = address.rpartition(":")
    if not colon:
        return False
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(settings: Settings, address: str) -> None:
    """Refuses bearer tokens over plaintext on a non-loopback ``address``.

    Raises:
        TLSSettingsError: ``auth_tokens`` are set, TLS is not, and ``address`` is not loopback.
    """
    if settings.auth_tokens and settings.tls_cert_file is None and not is_loopback(address):
        raise TLSSettingsError(
            f"refusing to listen on {address} without TLS while auth tokens are set: bearer tokens would cross the "
            "network in plaintext; set SHARERANK_TLS_CERT_FILE and SHARERANK_TLS_KEY_FILE, or bind to a loopback "
            "address (127.0.0.1, ::1, localhost)")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSSettingsError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _Encrypted  # OpenSSL would otherwise prompt on the terminal for an encrypted key's passphrase


def _why(exc: ssl.SSLError) -> str:
    return f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The listener's credentials, or None when TLS is off (neither certificate nor key set).

    Raises:
        TLSSettingsError: only one of certificate and key set, a client CA without them, a file missing or
            unreadable or not PEM, an encrypted key, or a key that does not match the certificate.
    """
    cert_file, key_file, client_ca_file = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TLSSettingsError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return None
    if cert_file is None or key_file is None:  # Settings refuses this, but a model_copy skips validation
        raise TLSSettingsError("set tls_cert_file and tls_key_file together, or neither")
    chain, key = _read(cert_file, "certificate file"), _read(key_file, "key file")
    client_ca = _read(client_ca_file, "client CA file") if client_ca_file is not None else None
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        raise TLSSettingsError(f"the TLS key file {key_file} is encrypted; gRPC needs an unencrypted PEM key") \
            from None
    except ssl.SSLError as exc:
        raise TLSSettingsError(f"the TLS certificate {cert_file} and key {key_file} are not a PEM certificate chain "
                               f"and its private key{_why(exc)}") from None
    if client_ca_file is not None:
        try:
            check.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise TLSSettingsError(f"the TLS client CA file {client_ca_file} holds no PEM certificate{_why(exc)}") \
                from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
