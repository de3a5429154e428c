"""Converters from the public datasets in ../shared/data into the dataset folder (DESIGN §8).

Each importer reads the files as published, keeps every row, and writes the folder format; ids are
written as strings exactly as they appear in the source.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path


def import_lastfm(src: str | Path, out: str | Path) -> dict[str, int]:
    """Last.fm hetrec-2011 as split 80/20 by SocialLGN: listens become purchases without times, the given
    test split becomes ``test.csv`` and friend links (already in both directions) ``social.csv``."""
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "purchases": _copy_pairs(src / "train_set.txt", out / "purchases.csv", ("user_id", "product_id")),
        "test": _copy_pairs(src / "test_set.txt", out / "test.csv", ("user_id", "product_id")),
        "social": _copy_pairs(src / "trust.txt", out / "social.csv", ("src_id", "dst_id")),
    }
    return counts


IMPORTERS: dict[str, Callable[[str | Path, str | Path], dict[str, int]]] = {
    "lastfm": import_lastfm,
}


def _pairs(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        if len(header) != 2:
            raise ValueError(f"{path}: expected a two-column header, found {header}")
        for line, row in enumerate(rows, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}, line {line}: expected 2 fields, found {len(row)}")
            yield row[0], row[1]


def _copy_pairs(src: Path, dst: Path, header: tuple[str, str]) -> int:
    n = 0
    with dst.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for pair in _pairs(src):
            writer.writerow(pair)
            n += 1
    return n
