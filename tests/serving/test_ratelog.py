"""Rate-limited warnings: one line per interval and kind, the next one saying how many were held back."""

from __future__ import annotations

import logging

from sharerank.serving.ratelog import RateLimitedLog


def test_one_line_per_interval_with_a_count_of_the_rest(caplog) -> None:
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("ratelog-test"), interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="ratelog-test")
    logged = [limited.warning("down", "store down: %s", "timeout") for _ in range(500)]
    assert logged.count(True) == 1
    assert limited.warning("other", "another kind") is True  # kinds are limited apart
    now[0] += 10.0
    assert limited.warning("down", "store down: %s", "refused") is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["store down: timeout", "another kind",
                     "store down: refused (and 499 more like it in the last 10 s)"]
