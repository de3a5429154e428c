"""What the pages show, as rows of strings: the HTML tables and the CSV / JSON exports are written from the same
rows, so an export is exactly what is on the screen."""

from __future__ import annotations

import csv
import io
from typing import Any

from sharerank.models.rings import DEFAULT_THRESHOLD as RING_THRESHOLD

SEED_COLUMNS = ("rank", "user_id", "community", "marginal_reach", "cumulative_reach", "ci95_low", "ci95_high",
                "spammer_score", "audience_fatigue", "ring", "reasons")
AUDIENCE_COLUMNS = ("rank", "user_id", "score", "reasons")


def seed_rows(response) -> list[dict[str, str]]:
    return [{"rank": str(i), "user_id": s.user_id, "community": s.community,
             "marginal_reach": f"{s.marginal_reach:.2f}", "cumulative_reach": f"{s.cumulative_reach:.2f}",
             "ci95_low": f"{s.cumulative_reach_ci_low:.2f}", "ci95_high": f"{s.cumulative_reach_ci_high:.2f}",
             "spammer_score": f"{s.spammer_score:.2f} [{s.spammer_score_ci_low:.2f}–{s.spammer_score_ci_high:.2f}]",
             "audience_fatigue": f"{s.audience_fatigue:.2f}", "ring": ring_flag(s.ring_score),
             "reasons": "; ".join(r.text for r in s.reasons)} for i, s in enumerate(response.seeds, start=1)]


def ring_flag(score: float) -> str:
    """What the ring column says: ``ring 0.82`` for a member of a collusive ring (a score at or above the
    detector's threshold; such seeds appear only when the request discounts or ignores rings), else nothing."""
    return f"ring {score:.2f}" if score >= RING_THRESHOLD else ""


def audience_rows(response) -> list[dict[str, str]]:
    return [{"rank": str(i), "user_id": m.user_id, "score": f"{m.score:.3f}",
             "reasons": "; ".join(r.text for r in m.reasons)} for i, m in enumerate(response.members, start=1)]


def to_csv(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def parse_user_ids(text: str, upload: bytes | None) -> tuple[str, ...]:
    """User ids pasted (comma, space or newline separated) and from an uploaded CSV (its first column; a header
    named user_id is skipped), in order, each once."""
    ids = [part for chunk in text.replace(",", " ").split() for part in [chunk.strip()] if part]
    if upload:
        for row in csv.reader(io.StringIO(upload.decode("utf-8-sig", errors="replace"))):
            if row and row[0].strip() and row[0].strip().lower() != "user_id":
                ids.append(row[0].strip())
    return tuple(dict.fromkeys(ids))


def summary(response, request: dict[str, Any]) -> dict[str, Any]:
    """The plan's header as shown: request, expected reach with its interval, regime, warnings, version."""
    return {"request": request, "expected_reach": f"{response.expected_reach:.2f}",
            "ci95": [f"{response.expected_reach_ci_low:.2f}", f"{response.expected_reach_ci_high:.2f}"],
            "influence_regime": response.influence_regime, "warnings": list(response.warnings),
            "model_version": response.model_version}
