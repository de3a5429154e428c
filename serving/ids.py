"""The one id rule of every RPC, and how errors quote what a caller sent.

Every id a request carries (user, product, event, share, category, model version) is checked by
:func:`id_problem` before any work: an unbounded id would otherwise be copied into error messages and
ErrorInfo metadata and break the client's metadata limit, or reach the event log and the online store.
Errors quote at most :data:`QUOTE_CHARS` characters of what was sent (:func:`quote`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from sharerank.serving.errors import invalid_argument

MAX_ID_LENGTH = 512
"""Longest id any RPC takes, in characters (the event log keeps ids up to this length too)."""

QUOTE_CHARS = 64
"""Most characters of caller input an error message or ErrorInfo metadata repeats."""


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id, or None when it can.

    Ids are non-blank (the dataset reader treats whitespace-only ids as empty), at most
    :data:`MAX_ID_LENGTH` characters, and free of control characters (a newline would break the event log's
    CSV lines, and a NUL or an escape sequence the logs that quote it).
    """
    if not value.strip():
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "contains a control character"
    return None


def quote(value: str) -> str:
    """``value`` as an error may repeat it: its first :data:`QUOTE_CHARS` characters, control characters
    escaped, and how long it was when cut (``'abc…' (9000 chars)``)."""
    if len(value) <= QUOTE_CHARS:
        return repr(value)
    return f"{value[:QUOTE_CHARS]!r}… ({len(value)} chars)"


def check_id(value: str, field: str, empty_reason: str = "EMPTY_ID", invalid_reason: str = "INVALID_ID") -> str:
    """``value`` when it is a valid id, else INVALID_ARGUMENT naming ``field`` (``field`` in metadata).

    Raises:
        ServiceError: ``empty_reason`` for a blank id, ``invalid_reason`` for one too long or with control
            characters.
    """
    problem = id_problem(value)
    if problem is None:
        return value
    if problem == "is empty":
        raise invalid_argument(f"{field} must be a non-empty string", empty_reason, field=field)
    raise invalid_argument(f"{field} {problem}: {quote(value)}", invalid_reason, field=field)


def check_ids(values: Sequence[str], field: str, max_count: int) -> tuple[str, ...]:
    """Each of ``values`` checked by :func:`check_id`, and at most ``max_count`` of them.

    Raises:
        ServiceError: TOO_MANY_IDS, or :func:`check_id`'s reasons for the first bad one (``field[i]``).
    """
    if len(values) > max_count:
        raise invalid_argument(f"{field}: give at most {max_count}, got {len(values)}", "TOO_MANY_IDS",
                               field=field, count=str(len(values)))
    return tuple(check_id(value, f"{field}[{i}]") for i, value in enumerate(values))
