"""What every benchmark script shares: progress on stderr, the result as JSON on stdout (and in --out-json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(result: dict[str, Any], out_json: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out_json:
        out_json.write_text(text + "\n")
