"""Converters from the public datasets in ../shared/data into the dataset folder.

Each importer reads the files as published, keeps every row it can represent, and writes the folder format;
ids are written as strings exactly as they appear in the source. A row the folder format cannot hold (a
self-loop in a social graph, a share to oneself) is dropped explicitly and counted in the result, never
silently. Every importer returns the rows written per file (``products``, ``purchases``, ``shares``,
``social``, ``test``) plus such counts of what was dropped or noticed.

A malformed source file raises :class:`~sharerank.dataset.reader.DatasetError` naming the file, the line and
the column (a field's 1-based position on its line, or its name), like the dataset reader does.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sharerank import progress
from sharerank.dataset.reader import DatasetError
from sharerank.dataset.schema import FILES
from sharerank.dataset.writer import write_rows

CIAO_TRUST_FILES = {"trust_timestamp_version.mat": "trust", "trustnetwork.mat": "trustnetwork"}
BEIBEI_SPLITS = ("tune", "invalid", "test")  # file order = time order of the synthetic ts


def import_lastfm(src: str | Path, out: str | Path) -> dict[str, int]:
    """Last.fm hetrec-2011 as split 80/20 by SocialLGN: listens become purchases without times, the given
    test split becomes ``test.csv`` and friend links (already in both directions) ``social.csv``."""
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "purchases": _write(out, "purchases", _pairs(src / "train_set.txt")),
        "test": _write(out, "test", _pairs(src / "test_set.txt")),
        "social": _write(out, "social", _pairs(src / "trust.txt")),
    }
    return counts


def import_ciao(src: str | Path, out: str | Path, trust_file: str = "trustnetwork.mat") -> dict[str, int]:
    """Ciao (Tang et al.): every rating is a purchase at its unix time; trust is the directed social graph.

    Writes ``products.csv`` (product_id, category *name* from ``catalog_ciao.txt``), ``purchases.csv``
    (user_id, product_id, ts) and ``social.csv`` (src_id = truster, dst_id = trustee); no ``test.csv``, so
    evaluation holds out each user's last 20% by time.

    - Every rating row is kept, in file order (the file is sorted by time), ratings of 0 included. A user
      who rated a product several times gives several purchase rows; ``purchases_repeated_pairs`` counts
      the rows whose (user, product) appeared on an earlier row.
    - A product rated under several categories gets its most frequent one, ties going to the smallest
      category id; ``products_multi_category`` counts such products.
    - Category names are written as in the catalogue (id 10 reads ``Ciao Caf?`` there).
    - Self-trust rows cannot be written (the reader rejects self-loops): dropped and counted in
      ``social_self_loops_dropped``. Repeated trust rows are kept (``social_repeated`` counts them).
    - ``trust_file`` picks the trust matrix: the original release's ``trustnetwork.mat`` (default, 111,781
      rows) or ``trust_timestamp_version.mat`` (57,544 rows). The default is the original because the
      timestamped file's users are ids 1..2,378 only and its arcs show no homophily with the ratings
      (co-rated products and category overlap per arc equal those of shuffled arcs: 0.35 vs 0.39 co-rated
      products), while ``trustnetwork.mat`` arcs do (2.02 vs 1.21): its ids are the ratings' ids.
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if trust_file not in CIAO_TRUST_FILES:
        raise ValueError(f"trust_file must be one of {sorted(CIAO_TRUST_FILES)}, not {trust_file!r}")
    names = _ciao_catalog(src / "catalog_ciao.txt")
    rating_path = src / "rating_with_timestamp.mat"
    rating = _mat_matrix(rating_path, "rating", 6)
    trust = _mat_matrix(src / trust_file, CIAO_TRUST_FILES[trust_file], 2)
    user, product, category, ts = rating[:, 0], rating[:, 1], rating[:, 2], rating[:, 5]
    for column, values, low in ((1, user, 1), (2, product, 1), (6, ts, 0)):
        if (values < low).any():
            row = int(np.argmax(values < low))
            raise DatasetError(str(rating_path), f"matrix 'rating': value {values[row]} must be >= {low} "
                               "(ids start at 1, times at 0)", line=row + 1, column=column)
    unknown = ~np.isin(category, np.array(sorted(names), dtype=np.int64))
    if unknown.any():
        row = int(np.argmax(unknown))
        raise DatasetError(str(rating_path), f"matrix 'rating': category id {category[row]} has no name in "
                           "catalog_ciao.txt", line=row + 1, column=3)

    # Most frequent category per product (ties: smallest id): sort (product, -count, category), take firsts.
    pairs, pair_counts = np.unique(np.stack([product, category], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -pair_counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    products = pairs[first]
    n_products = _write(out, "products", ((str(p), names[c]) for p, c in products.tolist()))

    n_purchases = _write(out, "purchases", zip(user.tolist(), product.tolist(), ts.tolist(), strict=True), "ts")
    user_product = user * (int(product.max()) + 1) + product
    repeated = len(user_product) - len(np.unique(user_product))

    self_loop = trust[:, 0] == trust[:, 1]
    kept = trust[~self_loop]
    n_social = _write(out, "social", kept.tolist())
    arcs = kept[:, 0] * (int(trust.max()) + 1) + kept[:, 1]
    return {
        "products": n_products,
        "purchases": n_purchases,
        "social": n_social,
        "social_self_loops_dropped": int(self_loop.sum()),
        "social_repeated": len(arcs) - len(np.unique(arcs)),
        "purchases_repeated_pairs": int(repeated),
        "products_multi_category": len(np.unique(pairs[~first, 0])),
    }


def import_gowalla(src: str | Path, out: str | Path) -> dict[str, int]:
    """Gowalla check-ins as split by LightGCN: ``train.txt`` → ``purchases.csv`` (user_id, product_id; no
    times), ``test.txt`` → ``test.csv``, ids as published (0-based remapped ids; ``user_list.txt`` and
    ``item_list.txt`` hold the originals and are not needed). No ``products.csv``: the reader takes the
    catalogue from the ids seen, with an empty category.

    A line with a user and no items cannot be written (the format has no list of bare users): it is
    skipped and counted in ``train_users_without_items`` / ``test_users_without_items``. Such a user stays
    known where the other file has items for them (a train-less user is a cold-start test user).
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, empty_train = _write_adjacency(src / "train.txt", out, "purchases")
    n_test, empty_test = _write_adjacency(src / "test.txt", out, "test")
    return {"purchases": n_train, "test": n_test, "train_users_without_items": empty_train,
            "test_users_without_items": empty_test}


def import_beibei(src: str | Path, out: str | Path) -> dict[str, int]:
    """BeiBei group buying (Zhang et al., ICDE'21): each line ``initiator<TAB>item<TAB>participant...`` is a
    group launch. Writes ``purchases.csv`` (user_id, product_id, ts, share_id), ``shares.csv`` and
    ``products.csv`` (every item seen, category ""), no ``test.csv``.

    - A launch is the initiator's own purchase of the item (organic: empty share_id) and one share from
      the initiator to each participant, whose purchase is attributed to that share. Share ids are
      ``<split>-<line>-<k>`` (line 1-based in the file, k the 1-based position of the participant), so the
      split of every share and join can be read off its id.
    - ``invalid.txt`` holds launches nobody joined: the initiator's purchase only, no share (there is no
      recipient to record). Had such a line participants, it would be read like any other.
    - There are no times. Groups get a synthetic ordinal g over the files in the order tune, invalid, test
      (``BEIBEI_SPLITS``), line by line; the initiator's purchase and the shares get ``ts = 2g``, the joins
      ``ts = 2g + 1`` (after the share they came through). So file order and split order are kept, and a
      time-ordered hold-out puts ``test.txt`` last.
    - A participant equal to the initiator cannot be a share (the reader rejects self-shares): that share
      and its join are dropped (the initiator's purchase is already written) and counted in
      ``self_shares_dropped``.
    - ``groups_<split>`` counts the lines read per file, ``groups_without_participants`` those with none.
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"products": 0, "purchases": 0, "shares": 0}
    self_shares = no_participants = 0
    items: set[str] = set()
    g = 0
    buy: list[tuple] = []
    share: list[tuple] = []
    for split in BEIBEI_SPLITS:
        path = src / f"{split}.txt"
        n_lines = 0
        with _read(path) as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("\t")
                _check_fields(path, line_no, fields, "initiator<TAB>item<TAB>participant...", minimum=2)
                initiator, item = fields[0], fields[1]
                items.add(item)
                launch, join = 2 * g, 2 * g + 1
                buy.append((initiator, item, launch, ""))
                if len(fields) == 2:
                    no_participants += 1
                for k, participant in enumerate(fields[2:], start=1):
                    if participant == initiator:
                        self_shares += 1
                        continue
                    share_id = f"{split}-{line_no}-{k}"
                    share.append((share_id, initiator, participant, item, launch))
                    buy.append((participant, item, join, share_id))
                g += 1
                n_lines += 1
        counts[f"groups_{split}"] = n_lines
    counts["shares"] = _write(out, "shares", share)
    counts["purchases"] = _write(out, "purchases", buy, "ts", "share_id")
    counts["products"] = _write(out, "products", ((item, "") for item in sorted(items, key=_id_order)))
    counts["groups_without_participants"] = no_participants
    counts["self_shares_dropped"] = self_shares
    return counts


def import_nethept(src: str | Path, out: str | Path) -> dict[str, int]:
    """NetHEPT with IC probabilities (``NetHEPT.txt``: a ``nodes arcs`` line, then ``u v p`` per directed
    arc) → ``influence.csv`` (src_id, dst_id, p as written in the file) only: valid input for seeding.

    - Self-loops cannot be written (the reader rejects them; an arc to oneself never changes a cascade):
      dropped and counted in ``influence_self_loops_dropped`` (22 in the published file).
    - Repeated arcs are kept (``influence_repeated`` counts them); the IC graph merges them as independent
      chances.
    - ``nodes_without_arcs`` counts the declared nodes that no written arc touches (only in a self-loop, or
      in none): the folder format has no list of bare users, so they are not in the dataset.
    - A file whose arc count differs from its first line's is rejected.
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = src / "NetHEPT.txt"
    rows: list[str] = []
    self_loops = 0
    arcs: set[tuple[str, str]] = set()
    repeated = 0
    with _read(path) as f:
        header = f.readline().split()
        _check_fields(path, 1, header, "nodes arcs", minimum=2, maximum=2)
        for column, value in enumerate(header, start=1):
            if not value.isdigit():
                raise DatasetError(str(path), f"expected a count, found {value!r}", line=1, column=column)
        num_nodes, num_arcs = int(header[0]), int(header[1])
        n_lines = 0
        for line_no, line in enumerate(f, start=2):
            fields = line.split()
            if not fields:
                continue
            _check_fields(path, line_no, fields, "u v p", minimum=3, maximum=3)
            n_lines += 1
            u, v, p = fields
            if not 0.0 < _number(path, line_no, 3, p) <= 1.0:
                raise DatasetError(str(path), f"probability {p} must lie in (0, 1]", line=line_no, column=3)
            if u == v:
                self_loops += 1
                continue
            repeated += (u, v) in arcs
            arcs.add((u, v))
            rows.append((u, v, p))
    if n_lines != num_arcs:
        raise DatasetError(str(path), f"declares {num_arcs} arcs, the file holds {n_lines}", line=1, column=2)
    _write(out, "influence", rows)
    touched = {u for u, _ in arcs} | {v for _, v in arcs}
    return {"influence": len(rows), "influence_self_loops_dropped": self_loops, "influence_repeated": repeated,
            "nodes_without_arcs": num_nodes - len(touched)}


SPLIT_FRACTIONS = (0.8, 0.1)
"""Train and validation shares of a cascade log's cascades, sorted by first time (the rest is test): the split of
the diffusion-prediction papers that use these files."""


def import_cascade_log(src: str | Path, out: str | Path) -> dict[str, int]:
    """A diffusion cascade log (``cascades.txt`` + ``edges.txt``, as christianity's; see
    ../shared/data/README.md): each line one cascade of comma-separated ``user ts`` steps, the first one
    ``root user ts`` (the root posted, the user adopted at ts); ``edges.txt`` the social graph, ``u,v`` lines.

    - Every cascade is a product (``c<line>``, category ""), every first appearance of a user in it a
      purchase at its time (the root at the first step's time, before its first adopter); a user's later
      appearances in the same cascade are not purchases (``repeated_adoptions``).
    - An adopter's purchase is attributed to a share from the *latest earlier adopter among their friends*
      (either direction of an edge), sent at that adopter's time; an adopter with no earlier friend in the
      cascade buys organically (``adoptions_without_earlier_friend``). Only successes are in such a log, so
      there is no failed share: learning infers those from exposure.
    - Edges are written in both directions (the direction is not documented, and co-adopters show only a mild
      asymmetry); self-loops are dropped and counted, repeated edges kept once (``social_given`` counts the
      file's lines, ``social_mutual_given`` the arcs whose reverse is also in the file).
    - ``cascades.csv`` splits whole cascades by first time, :data:`SPLIT_FRACTIONS` (ties by line order).
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    edges_path, cascades_path = src / "edges.txt", src / "cascades.txt"
    given: list[tuple[str, str]] = []
    with _read(edges_path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.strip().split(",")
            _check_fields(edges_path, line_no, [x.strip() for x in fields], "u,v", minimum=2, maximum=2)
            given.append((fields[0].strip(), fields[1].strip()))
    arcs = {(u, v) for u, v in given if u != v}
    friends: dict[str, set[str]] = {}
    for u, v in arcs:
        friends.setdefault(u, set()).add(v)
        friends.setdefault(v, set()).add(u)
    social = sorted({(u, v) for u, v in arcs} | {(v, u) for u, v in arcs}, key=lambda a: (_id_order(a[0]),
                                                                                          _id_order(a[1])))
    counts = {"social_given": len(given), "social_self_loops_dropped": sum(u == v for u, v in given),
              "social_mutual_given": sum((v, u) in arcs for u, v in arcs)}
    counts["social"] = _write(out, "social", social)

    cascades: list[tuple[float, int, str, list[tuple[str, float]]]] = []
    repeated = 0
    with _read(cascades_path) as f:
        for line_no, line in enumerate(f, start=1):
            steps = [step.strip() for step in line.strip().split(",") if step.strip()]
            if not steps:
                continue
            adopters: list[tuple[str, float]] = []
            seen: set[str] = set()
            for column, step in enumerate(steps, start=1):
                fields = step.split()
                expected = "root user ts" if column == 1 else "user ts"
                _check_fields(cascades_path, line_no, fields, expected, minimum=len(expected.split()),
                              maximum=len(expected.split()))
                ts = _number(cascades_path, line_no, column, fields[-1])
                if adopters and ts < adopters[-1][1]:
                    raise DatasetError(str(cascades_path), f"time {fields[-1]} is before the previous step's",
                                       line=line_no, column=column)
                for user in (fields[0], fields[1]) if column == 1 else (fields[0],):
                    if user in seen:
                        repeated += not (column == 1 and user == fields[0])  # a root adopting its own post is no repeat
                        continue
                    seen.add(user)
                    adopters.append((user, ts))
            cascades.append((adopters[0][1], line_no, f"c{line_no}", adopters))
    purchases: list[tuple] = []
    shares: list[tuple] = []
    organic = 0
    for _, _, product, adopters in cascades:
        for k, (user, ts) in enumerate(adopters):
            mine = friends.get(user, set())
            sharer = next(((u, t) for u, t in reversed(adopters[:k]) if u in mine), None)
            if sharer is None:
                organic += k > 0
                purchases.append((user, product, _ts(ts), ""))
                continue
            share_id = f"{product}-{k}"
            shares.append((share_id, sharer[0], user, product, _ts(sharer[1])))
            purchases.append((user, product, _ts(ts), share_id))
    order = sorted(range(len(cascades)), key=lambda i: (cascades[i][0], cascades[i][1]))
    n_train = int(SPLIT_FRACTIONS[0] * len(order))
    n_valid = int(sum(SPLIT_FRACTIONS) * len(order)) - n_train
    split = {cascades[i][2]: "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
             for rank, i in enumerate(order)}
    counts["products"] = _write(out, "products", ((c[2], "") for c in cascades))
    counts["shares"] = _write(out, "shares", shares)
    counts["purchases"] = _write(out, "purchases", purchases, "ts", "share_id")
    counts["cascades"] = _write(out, "cascades", ((c[2], split[c[2]]) for c in cascades))
    counts.update(repeated_adoptions=repeated, adoptions_without_earlier_friend=organic,
                  cascades_train=n_train, cascades_valid=n_valid, cascades_test=len(order) - n_train - n_valid)
    return counts


def _ts(value: float) -> str:
    """A time as the file wrote it when it is an integer (the usual case), else the shortest exact decimal."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


IMPORTERS: dict[str, Callable[[str | Path, str | Path], dict[str, int]]] = {
    "ciao": import_ciao,
    "lastfm": import_lastfm,
    "gowalla": import_gowalla,
    "beibei": import_beibei,
    "nethept": import_nethept,
    "christianity": import_cascade_log,
}


def _id_order(value: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order, anything else after them in text order."""
    return (0, int(value)) if value.isdigit() else (1, value)


def _check_fields(path: Path, line_no: int, fields: list[str], expected: str, *, minimum: int,
                  maximum: int | None = None) -> None:
    """A source line must have ``minimum``..``maximum`` non-empty fields without commas (the folder is CSV)."""
    if len(fields) < minimum:
        raise DatasetError(str(path), f"expected {expected}, found {len(fields)} field(s)", line=line_no,
                           column=len(fields) + 1)
    if maximum is not None and len(fields) > maximum:
        raise DatasetError(str(path), f"expected {expected}, found {len(fields)} fields", line=line_no,
                           column=maximum + 1)
    for column, value in enumerate(fields, start=1):
        if not value.strip() or "," in value or '"' in value:
            raise DatasetError(str(path), f"expected {expected}; field {value!r} is empty or holds a comma or "
                               "quote", line=line_no, column=column)


def _number(path: Path, line_no: int, column: int, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DatasetError(str(path), f"not a number: {text!r}", line=line_no, column=column) from None


def _ciao_catalog(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    with _read(path, encoding="latin-1") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            key, _, name = line.partition(" ")
            if not key.isdigit():
                raise DatasetError(str(path), f"expected '<category id> <name>', found {line!r}", line=line_no,
                                   column=1)
            if not name.strip():
                raise DatasetError(str(path), f"category {key} has no name", line=line_no, column=2)
            names[int(key)] = name.strip()
    return names


def _mat_matrix(path: Path, key: str, min_columns: int) -> np.ndarray:
    """Matrix ``key`` of a MATLAB file as int64; errors name the file, the row (as the line) and the column."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with progress.stage(f"read {path.name}"):
            mat = loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError) as exc:
        raise DatasetError(str(path), f"not a readable MATLAB file: {exc}") from None
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(str(path), f"no matrix {key!r} (found {found})")
    matrix = np.asarray(mat[key])
    if matrix.ndim != 2 or matrix.shape[1] < min_columns:
        raise DatasetError(str(path), f"matrix {key!r} has shape {matrix.shape}, expected >= {min_columns} columns")
    if not np.issubdtype(matrix.dtype, np.number):
        raise DatasetError(str(path), f"matrix {key!r} holds {matrix.dtype} values, expected integers")
    with np.errstate(invalid="ignore"):
        as_int = matrix.astype(np.int64)  # uint16 / double in the files: widen before any arithmetic
    fractional = as_int != matrix
    if fractional.any():
        row, column = (int(i) for i in np.argwhere(fractional)[0])
        raise DatasetError(str(path), f"matrix {key!r}: {matrix[row, column]!r} is not an integer", line=row + 1,
                           column=column + 1)
    return as_int


PROGRESS_LINES = 1 << 14
"""Lines read between two updates of a file's progress (cheap next to parsing them)."""


class _Lines:
    """A text file's lines, counted into a progress stage over the file's size."""

    def __init__(self, file: TextIO, shown: progress.Stage) -> None:
        self.file, self.shown, self.read = file, shown, 0

    def readline(self) -> str:
        line = self.file.readline()
        self.read += len(line)
        return line

    def __iter__(self) -> Iterator[str]:
        for count, line in enumerate(self.file, start=1):
            self.read += len(line)
            if count % PROGRESS_LINES == 0:
                self.shown.update(completed=self.read)
            yield line


@contextmanager
def _read(path: Path, **open_args: Any) -> Iterator[_Lines]:
    """``path`` opened for reading as a progress stage ("read FILE", counted in characters of its size)."""
    with path.open(**open_args) as file, progress.stage(f"read {path.name}", path.stat().st_size,
                                                                 unit="characters") as shown:
        yield _Lines(file, shown)
        shown.update(completed=shown.total)


def _write(out: Path, name: str, rows: Iterable[Sequence], *optional: str) -> int:
    """Writes file ``name`` of the folder from rows holding its required columns and then ``optional``."""
    spec = FILES[name]
    return write_rows(out, spec, spec.columns(*optional), rows)


def _write_adjacency(src: Path, out: Path, name: str) -> tuple[int, int]:
    """``user item item ...`` lines → (user, product) rows of file ``name``; returns (rows, lines without items)."""
    empty = 0

    def pairs() -> Iterator[tuple[str, str]]:
        nonlocal empty
        with _read(src) as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                for column, value in enumerate(fields, start=1):
                    if not value.isdigit():  # the LightGCN files hold 0-based integer ids only
                        raise DatasetError(str(src), f"expected an integer id, found {value!r}", line=line_no,
                                           column=column)
                user, items = fields[0], fields[1:]
                if not items:
                    empty += 1
                yield from ((user, item) for item in items)

    return _write(out, name, pairs()), empty


def _pairs(path: Path) -> Iterator[tuple[str, str]]:
    with _read(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        if len(header) != 2:
            raise DatasetError(str(path), f"expected a two-column header, found {header}", line=1,
                               column=min(len(header), 2) + 1)
        for line, row in enumerate(rows, start=2):
            if len(row) != 2:
                raise DatasetError(str(path), f"expected 2 fields, found {len(row)}", line=line,
                                   column=min(len(row), 2) + 1)
            for column, value in enumerate(row, start=1):
                if not value.strip():
                    raise DatasetError(str(path), "empty id", line=line, column=header[column - 1])
            yield row[0], row[1]

