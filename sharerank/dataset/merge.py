"""Several dataset folders as one: the base data and the event logs RecordEvents wrote, merged by event id.

Events (purchases, views) that carry an ``event_id`` appear once, at their first occurrence in folder order;
shares appear once per ``share_id``; social links once per pair. The catalogue is the newest folder's (the
last one that has a ``products.csv``), with the products only older catalogues list added after it. A fixed
test set is never merged: training does not read one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sharerank.dataset.reader import read_table
from sharerank.dataset.schema import FILES
from sharerank.dataset.writer import write_columns

MERGED = ("products", "purchases", "shares", "social", "influence", "views")
_KEYS = {"products": ("product_id",), "shares": ("share_id",), "social": ("src_id", "dst_id"),
         "influence": ("src_id", "dst_id")}


def merge_folders(folders: Sequence[str | Path], out: str | Path) -> dict[str, int]:
    """Writes the merge of ``folders`` (oldest first) into ``out``; returns the rows written per file and the
    events dropped as repeats (``<file>_repeated``)."""
    folders = [Path(f) for f in folders]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in MERGED:
        tables = [t for t in (read_table(f, name) for f in folders) if t is not None]
        if name == "products":
            tables = tables[::-1]  # the newest catalogue first: its rows win
        if not tables:
            continue
        columns = [c for c in FILES[name].names if any(c in t.column_names for t in tables)]
        table = pa.concat_tables([_with_columns(t, columns) for t in tables])
        keep = _first_of_each(table, name)
        counts[f"{name}_repeated"] = int(len(keep) - keep.sum())
        table = table.filter(pa.array(keep))
        write_columns(out, FILES[name], {c: table.column(c) for c in columns})
        counts[name] = table.num_rows
    return counts


def _with_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` with every one of ``columns``, in order, the ones it lacks empty."""
    return pa.table({c: table.column(c) if c in table.column_names else pa.array([""] * table.num_rows, pa.string())
                     for c in columns})


def _first_of_each(table: pa.Table, name: str) -> np.ndarray:
    """True for the first row of each key (event id, share id, product, pair); rows without a key all stay."""
    if name in _KEYS:
        key = pc.binary_join_element_wise(*(table.column(c) for c in _KEYS[name]), "\x1f")
        has_key = np.ones(table.num_rows, dtype=bool)
    elif "event_id" in table.column_names:
        key = table.column("event_id")
        has_key = pc.greater(pc.utf8_length(key), 0).to_numpy(zero_copy_only=False)
    else:
        return np.ones(table.num_rows, dtype=bool)
    values = np.asarray(key.to_pylist() if isinstance(key, pa.ChunkedArray) else key.to_pylist(), dtype=object)
    _, first = np.unique(values, return_index=True)
    keep = np.zeros(table.num_rows, dtype=bool)
    keep[first] = True
    return keep | ~has_key
