"""Feed page tokens: the served-so-far state of a feed, signed so that only this service's tokens come back.

A token is the base64url of an ``internal.FeedPageToken``, signed with HMAC-SHA256 (itsdangerous) under the
configured key (``Settings.page_token_key``). A forged or altered token is refused before it is parsed,
and one longer than :data:`MAX_PAGE_TOKEN_CHARS` before it is even checked, so a client can neither make
the server parse megabytes nor have it echo them back. Without a configured key each process signs with a
random key of its own: tokens then stop working after a restart and across processes (the client starts
again from the first page), so set one for a fleet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets

from google.protobuf.message import DecodeError
from itsdangerous import BadSignature, Signer

from sharerank.serving.errors import invalid_argument
from sharerank.v1 import internal_pb2

log = logging.getLogger(__name__)

MAX_PAGE_TOKEN_CHARS = 64 * 1024
"""Longest token issued or accepted. A feed whose next token would be longer ends there (no next page):
with catalogue ids of ~20 characters that is far past :data:`~sharerank.serving.api.feed.MAX_SERVED`."""

_SALT = b"sharerank.v1.FeedPageToken"


class PageTokenCodec:
    """Signs and checks page tokens under one key; ``key`` None: a random key for this process only."""

    def __init__(self, key: str | None):
        if key is None:
            log.info("page tokens are signed with a per-process key: set SHARERANK_PAGE_TOKEN_KEY so they work "
                     "across restarts and processes")
        secret = key.encode() if key is not None else secrets.token_bytes(32)
        self._signer = Signer(secret, salt=_SALT, digest_method=hashlib.sha256)

    def encode(self, token: internal_pb2.FeedPageToken) -> str:
        """The signed token, or ``""`` when it would be longer than :data:`MAX_PAGE_TOKEN_CHARS`."""
        text = self._signer.sign(base64.urlsafe_b64encode(token.SerializeToString())).decode()
        return text if len(text) <= MAX_PAGE_TOKEN_CHARS else ""

    def decode(self, text: str) -> internal_pb2.FeedPageToken:
        """The token's content.

        Raises:
            ServiceError: INVALID_PAGE_TOKEN for anything this codec did not sign (or too long to have).
        """
        if len(text) > MAX_PAGE_TOKEN_CHARS:
            raise _invalid()
        try:
            payload = self._signer.unsign(text.encode())
            return internal_pb2.FeedPageToken.FromString(base64.urlsafe_b64decode(payload))
        except (BadSignature, binascii.Error, DecodeError, ValueError, UnicodeEncodeError):
            raise _invalid() from None


def _invalid():
    return invalid_argument("page_token is not a token this service issued (or it was issued under another key); "
                            "start from the first page", "INVALID_PAGE_TOKEN")
