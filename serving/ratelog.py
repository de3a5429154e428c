"""Warnings that repeat during an outage, logged once per interval with a count of the rest.

Without this a Redis outage logs one line per degraded feed (over a thousand lines in 15 s); with it, one
line per :data:`INTERVAL_S` per kind of problem, saying how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

INTERVAL_S = 10.0
"""Default seconds between two lines of the same kind."""


class RateLimitedLog:
    """Logs each key's message at most once per ``interval_s``; the next line says how many were dropped.

    Args:
        logger: where lines go.
        interval_s: seconds between two lines of one key. (default: :data:`INTERVAL_S`)
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Logs ``message % args`` at WARNING unless ``key`` logged within the interval; True when it did."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, held, self.interval_s)
        self.logger.warning(message, *args)
        return True
