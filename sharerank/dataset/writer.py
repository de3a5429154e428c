"""The one writer of dataset-folder files: columns in the declared order, plain CSV the reader reads back.

Three shapes, one format: :func:`write_columns` for whole columns at once (the simulator: millions of rows
through pyarrow), :func:`write_rows` for rows streamed from a source (the importers), and :func:`csv_text` for
the lines an appender adds to an existing file (the event log, which owns its own durability).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from sharerank.dataset.schema import FileSpec


def check_columns(spec: FileSpec, columns: Sequence[str]) -> tuple[str, ...]:
    """``columns`` in the file's declared order.

    Raises:
        ValueError: a required column is missing, or a column is not the file's.
    """
    unknown = [c for c in columns if c not in spec.names]
    missing = [c.name for c in spec.required if c.name not in columns]
    if unknown or missing:
        raise ValueError(f"{spec.name}: columns must be {spec.describe()}; unknown {unknown}, missing {missing}")
    return tuple(c for c in spec.names if c in columns)


def write_columns(root: str | Path, spec: FileSpec, columns: Mapping[str, Any]) -> Path:
    """Writes ``spec``'s file under ``root`` from whole columns (arrays or pyarrow arrays, nulls as empty
    fields); values must not hold commas, quotes or newlines (ids and numbers never do). Returns the path."""
    order = check_columns(spec, list(columns))
    path = spec.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16)
    with open(path, "wb") as f:
        f.write((",".join(order) + "\n").encode())
        pa_csv.write_csv(pa.table({name: columns[name] for name in order}), f, options)
    return path


def write_rows(root: str | Path, spec: FileSpec, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
               path: str | Path | None = None) -> int:
    """Writes ``spec``'s file under ``root`` (or at ``path``) from rows whose values follow ``columns`` (which
    must already be in declared order, as :meth:`FileSpec.columns` gives them); returns the rows written."""
    if tuple(columns) != check_columns(spec, columns):
        raise ValueError(f"{spec.name}: give columns in file order ({spec.describe()}), got {list(columns)}")
    path = spec.path(root) if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, header: bool) -> str:
    """CSV lines for ``rows`` (and the header first when ``header``), quoted where a value needs it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()
