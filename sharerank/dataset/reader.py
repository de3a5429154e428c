"""The one reader and validator of the dataset folder (files and columns: :mod:`.schema`).

Nothing is dropped silently: a malformed file raises :class:`DatasetError` naming the file, the line
(the header is line 1) and the column. Ids are strings everywhere; the reader encodes them to dense
integer indices once, so every later stage works on numpy arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sharerank.dataset.schema import CASCADE_SPLITS, FILES, TRUTH

_NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent; the message says where."""

    def __init__(self, file: str, message: str, line: int | None = None, column: str | None = None):
        self.file, self.line, self.column = file, line, column
        where = file + (f", line {line}" if line is not None else "") + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Interactions:
    """User–product pairs with optional times (NaN where unknown) and share attribution (-1: organic)."""

    user: np.ndarray
    product: np.ndarray
    ts: np.ndarray
    share: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, mask_or_index: np.ndarray) -> Interactions:
        return Interactions(*(a[mask_or_index] for a in (self.user, self.product, self.ts, self.share)))


@dataclass(frozen=True)
class Shares:
    """Share events as dense indices; ``id`` keeps the external share ids."""

    id: np.ndarray
    sharer: np.ndarray
    recipient: np.ndarray
    product: np.ndarray
    ts: np.ndarray


@dataclass(frozen=True)
class Edges:
    """Directed user–user arcs with one float per arc (a weight or a probability)."""

    src: np.ndarray
    dst: np.ndarray
    value: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A validated dataset folder with ids encoded to dense indices.

    ``users`` and ``products`` are the id vocabularies (numpy arrays of str); every index array in
    the other fields points into them.
    """

    root: Path
    users: np.ndarray
    products: np.ndarray
    category: np.ndarray
    price: np.ndarray | None
    seller: np.ndarray | None
    in_stock: np.ndarray
    purchases: Interactions
    shares: Shares | None
    social: Edges | None
    influence: Edges | None
    test: Interactions | None
    views: Interactions | None
    fingerprint: str
    dropped: dict[str, int] = field(default_factory=dict)
    cascade_split: np.ndarray | None = None
    """Per product, its split in a cascade log (``cascades.csv``: "train", "valid", "test"; "" when not listed);
    None when the folder is no cascade log."""
    """Rows left out on request (``load_dataset(drop_self_loops=True)``), e.g. ``{"influence_self_loops": 22}``."""

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_products(self) -> int:
        return len(self.products)

    def network_arcs(self) -> tuple[np.ndarray, np.ndarray]:
        """Directed user → user arcs of who can reach whom: the social links, then sharer → recipient of
        every share (int64 ``(src, dst)``; empty when the folder has neither)."""
        src, dst = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
        if self.social is not None:
            src.append(self.social.src)
            dst.append(self.social.dst)
        if self.shares is not None:
            src.append(self.shares.sharer)
            dst.append(self.shares.recipient)
        return np.concatenate(src), np.concatenate(dst)

    def summary(self) -> dict[str, int | str]:
        return {
            "users": self.num_users,
            "products": self.num_products,
            "purchases": len(self.purchases),
            "shares": 0 if self.shares is None else len(self.shares.id),
            "social_edges": 0 if self.social is None else len(self.social.src),
            "influence_edges": 0 if self.influence is None else len(self.influence.src),
            "test_pairs": 0 if self.test is None else len(self.test),
            "views": 0 if self.views is None else len(self.views),
            "cascades": 0 if self.cascade_split is None else int((self.cascade_split != "").sum()),
            "fingerprint": self.fingerprint,
        }


def load_dataset(root: str | Path, *, drop_self_loops: bool = False, with_test: bool = True) -> Dataset:
    """Reads and validates the dataset folder at ``root``.

    Args:
        with_test: Read ``test.csv``. Training passes False: the held-out set is never opened, so a model
            cannot have seen it (:attr:`Dataset.test` is None and the fingerprint leaves the file out).
        drop_self_loops: Leave out rows of ``social`` and ``influence`` whose two ends are the same user
            (counted in :attr:`Dataset.dropped`) instead of refusing the file. For seeding: an arc to oneself
            never changes a cascade, and published graphs (NetHEPT) hold some.

    Raises:
        DatasetError: a file is malformed or refers to an id it may not (the message says where).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(str(root), "not a dataset folder (no such directory)")
    names = [name for name in FILES if with_test or name != "test"]
    tables = {name: _read(root, name) for name in names}
    tables.setdefault("test", None)
    if all(t is None for t in tables.values()):
        raise DatasetError(str(root), "no dataset files found; expected purchases.csv or influence.csv")
    if tables["purchases"] is None and tables["influence"] is None:
        raise DatasetError(str(root), "purchases.csv is required unless influence.csv is given")

    products_t, purchases_t, shares_t = tables["products"], tables["purchases"], tables["shares"]
    test_t = tables["test"]
    # Without times the test split cannot be "each user's latest"; training alone validates on a random part.
    if purchases_t is not None and "ts" not in purchases_t.table.column_names and test_t is None and with_test:
        raise DatasetError(purchases_t.name, "column 'ts' is required unless test.csv is given", line=1)

    views_t = tables["views"]
    cascades_t = tables["cascades"]
    products, category, price, seller, in_stock = _catalogue(products_t, [purchases_t, shares_t, test_t, views_t,
                                                                          cascades_t])
    users = _vocabulary(
        [
            (tables["purchases"], "user_id"),
            (tables["shares"], "sharer_id"),
            (tables["shares"], "recipient_id"),
            (tables["social"], "src_id"),
            (tables["social"], "dst_id"),
            (tables["influence"], "src_id"),
            (tables["influence"], "dst_id"),
            (tables["test"], "user_id"),
            (views_t, "user_id"),
        ]
    )
    shares = _shares(shares_t, users, products) if shares_t is not None else None
    purchases = (
        _interactions(purchases_t, users, products, shares_t)
        if purchases_t is not None
        else Interactions(*(np.empty(0, dtype=d) for d in (np.int64, np.int64, np.float64, np.int64)))
    )
    dropped: dict[str, int] = {}
    social = _edges(tables["social"], users, "weight", default=1.0, low=0.0, low_open=True,
                    self_loops=dropped if drop_self_loops else None)
    influence = _edges(tables["influence"], users, "p", default=None, low=0.0, high=1.0,
                       self_loops=dropped if drop_self_loops else None)
    return Dataset(
        root=root,
        users=users.to_numpy(zero_copy_only=False),
        products=products.to_numpy(zero_copy_only=False),
        category=category,
        price=price,
        seller=seller,
        in_stock=in_stock,
        purchases=purchases,
        shares=shares,
        social=social,
        influence=influence,
        test=_interactions(test_t, users, products, None) if test_t is not None else None,
        views=_interactions(views_t, users, products, None) if views_t is not None else None,
        fingerprint=fingerprint(root, skip=() if with_test else ("test",)),
        dropped=dropped,
        cascade_split=_cascade_split(cascades_t, products) if cascades_t is not None else None,
    )


def read_products(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A catalogue on its own, as ``(product_id, category, seller, in_stock)`` arrays, one entry per product.

    ``path`` is a ``products.csv`` / ``products.parquet``, or a dataset folder holding one; it is validated as
    :func:`load_dataset` validates it (sellers default to "").

    Raises:
        DatasetError: the file is missing or malformed (the message names the file, line and column).
    """
    path = Path(path)
    root = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name not in ("products.csv", "products.parquet"):
        raise DatasetError(str(path), "a catalogue is a products.csv or products.parquet, or a folder holding one")
    table = _read(root, "products")
    if table is None:
        raise DatasetError(str(path), "no products.csv or products.parquet here")
    products, category, _, seller, in_stock = _catalogue(table, [])
    products = products.to_numpy(zero_copy_only=False).astype(object)
    seller = np.full(len(products), "", dtype=object) if seller is None else np.asarray(seller, dtype=object)
    return products, np.asarray(category, dtype=object), seller, in_stock


def read_table(root: str | Path, name: str) -> pa.Table | None:
    """File ``name`` of the folder as read, every column a string (None when the folder has no such file);
    columns checked against the declaration, rows not (:func:`load_dataset` checks those)."""
    table = _read(Path(root), name)
    return None if table is None else table.table


def has_truth(root: str | Path) -> bool:
    """Whether the folder is a simulated world with its ground truth (``truth/``)."""
    return TRUTH["influence"].path(root).exists()


def read_truth(root: str | Path, name: str) -> pa.Table:
    """A ``truth/`` file of a simulated world (:data:`~sharerank.dataset.schema.TRUTH`): ids and text as
    strings, numbers as float64.

    Raises:
        DatasetError: the file is missing, or its header is not the declared one.
    """
    spec = TRUTH[name]
    path = spec.path(root)
    if not path.exists():
        raise DatasetError(str(path), "no such file (not a simulated world?)")
    types = {c.name: pa.float64() if c.kind == "number" else pa.string() for c in spec.required}
    table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    if tuple(table.column_names) != spec.names:
        raise DatasetError(f"truth/{path.name}", f"expected columns {spec.describe()}", line=1)
    return table


def fingerprint(root: str | Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the dataset files' names and bytes (but those in ``skip``): the same data gives the same
    fingerprint."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).iterdir() if p.is_file() and p.stem in FILES and p.stem not in skip):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Table:
    name: str
    table: pa.Table
    first_line: int  # line of the first data row (2 for CSV with a header, 1 for parquet rows)

    def column(self, name: str) -> pa.Array:
        return self.table.column(name).combine_chunks()

    def line(self, row: int) -> int:
        return row + self.first_line

    def error(self, message: str, row: int | None = None, column: str | None = None) -> DatasetError:
        return DatasetError(self.name, message, None if row is None else self.line(row), column)


def parquet_exists(path: Path) -> bool:
    """A Parquet file, or a folder holding at least one Parquet part readers see (names starting with ``.`` or
    ``_`` are hidden: a writer's temporary files). A folder of none yet (a writer's first part still in flight)
    is absent, not an empty table without columns."""
    if path.is_file():
        return True
    return path.is_dir() and any(not any(piece.startswith((".", "_")) for piece in part.relative_to(path).parts)
                                 for part in path.rglob("*.parquet"))


def _read(root: Path, name: str) -> _Table | None:
    csv_path, parquet_path = FILES[name].path(root), FILES[name].path(root, ".parquet")
    if csv_path.exists():
        t = _Table(csv_path.name, _read_csv(csv_path), 2)
    elif parquet_exists(parquet_path):
        # A folder of parts (`sharerank ingest` partitions by day): its day=... folder names are not a column.
        table = pq.read_table(parquet_path, partitioning=None)
        table = pa.table({c: pc.cast(table.column(c), pa.string()) for c in table.column_names})
        t = _Table(parquet_path.name, table, 1)
    else:
        return None
    spec = FILES[name]
    columns = t.table.column_names
    for column in columns:
        if column not in spec.names:
            raise DatasetError(t.name, f"unknown column {column!r}; expected {spec.describe()}", 1, column)
    for column in spec.required:
        if column.name not in columns:
            raise DatasetError(t.name, "missing required column", 1, column.name)
    for column in columns:
        if spec.kind(column) == "id":
            _require_non_empty(t, column)
    return t


def _read_csv(path: Path) -> pa.Table:
    """Reads every column as a string; numbers are parsed later so errors can name the line."""
    bad_rows: list[pcsv.InvalidRow] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    header = path.open(encoding="utf-8", errors="replace").readline().strip().split(",")
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=False)
    parse = pcsv.ParseOptions(invalid_row_handler=on_invalid)
    try:
        return pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if bad_rows and bad_rows[0].number is None:  # line numbers are only known to a serial parse
            bad_rows.clear()
            try:
                pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False), parse_options=parse,
                              convert_options=convert)
            except pa.ArrowInvalid:
                pass
        if bad_rows:
            row = bad_rows[0]
            raise DatasetError(path.name, f"expected {row.expected_columns} fields, found {row.actual_columns}",
                               row.number) from None
        raise DatasetError(path.name, str(exc)) from None


def _require_non_empty(t: _Table, column: str) -> None:
    values = t.column(column)
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
    if pc.any(empty).as_py():
        raise t.error("empty id", int(pc.index(empty, True).as_py()), column)


def _require_unique(t: _Table, column: str) -> None:
    values = t.column(column)
    if len(pc.unique(values)) == len(values):
        return
    _, first = np.unique(values.to_numpy(zero_copy_only=False), return_index=True)
    repeated = np.ones(len(values), dtype=bool)
    repeated[first] = False
    row = int(np.argmax(repeated))  # the first row whose id appeared on an earlier line
    raise t.error(f"duplicate {column} {values[row].as_py()!r}", row, column)


def _numbers(t: _Table, column: str, *, low: float | None = None, high: float | None = None,
             low_open: bool = False) -> np.ndarray:
    values = t.column(column)
    bad = pc.invert(pc.match_substring_regex(values, _NUMBER))
    if pc.any(bad).as_py():
        row = int(pc.index(bad, True).as_py())
        raise t.error(f"not a number: {values[row].as_py()!r}", row, column)
    numbers = pc.cast(pc.utf8_trim_whitespace(values), pa.float64()).to_numpy()
    if low is not None:
        below = numbers <= low if low_open else numbers < low
        if below.any():
            row = int(np.argmax(below))
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise t.error(f"value {numbers[row]:g} must be {bound}", row, column)
    if high is not None and (numbers > high).any():
        row = int(np.argmax(numbers > high))
        raise t.error(f"value {numbers[row]:g} must be <= {high:g}", row, column)
    return numbers


def _vocabulary(columns: list[tuple[_Table | None, str]]) -> pa.Array:
    arrays = [t.column(c) for t, c in columns if t is not None]
    if not arrays:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(arrays).combine_chunks())


def _encode(t: _Table, column: str, vocabulary: pa.Array, what: str) -> np.ndarray:
    index = pc.index_in(t.column(column), value_set=vocabulary)
    if index.null_count:
        row = int(pc.index(pc.is_null(index), True).as_py())
        raise t.error(f"unknown {what} {t.column(column)[row].as_py()!r}", row, column)
    return index.to_numpy().astype(np.int64)


def _catalogue(products_t: _Table | None, referrers: list[_Table | None]):
    """The product vocabulary: products.csv when given (then every reference must be in it), else the ids
    seen in purchases, shares and test.csv, with an empty category."""
    if products_t is None:
        products = _vocabulary([(t, "product_id") for t in referrers])
        n = len(products)
        return products, np.full(n, "", dtype=object), None, None, np.ones(n, dtype=bool)
    products = products_t.column("product_id")
    _require_unique(products_t, "product_id")
    columns = products_t.table.column_names
    category = products_t.column("category").to_numpy(zero_copy_only=False).astype(object)
    price = _numbers(products_t, "price", low=0.0) if "price" in columns else None
    seller = products_t.column("seller_id").to_numpy(zero_copy_only=False) if "seller_id" in columns else None
    in_stock = np.ones(len(products), dtype=bool)
    if "in_stock" in columns:
        flags = pc.utf8_lower(pc.utf8_trim_whitespace(products_t.column("in_stock"))).to_pylist()
        for row, flag in enumerate(flags):
            if flag not in _BOOLEANS:
                raise products_t.error(f"not a boolean: {flag!r} (use 1/0 or true/false)", row, "in_stock")
            in_stock[row] = _BOOLEANS[flag]
    return products, category, price, seller, in_stock


def _interactions(t: _Table, users: pa.Array, products: pa.Array, shares_t: _Table | None) -> Interactions:
    n = t.table.num_rows
    columns = t.table.column_names
    ts = _numbers(t, "ts", low=0.0) if "ts" in columns else np.full(n, np.nan)
    share = np.full(n, -1, dtype=np.int64)
    if "share_id" in columns:
        ids = t.column("share_id")
        attributed = pc.greater(pc.utf8_length(ids), 0)
        if pc.any(attributed).as_py():
            if shares_t is None:
                row = int(pc.index(attributed, True).as_py())
                raise t.error("share_id given but there is no shares.csv", row, "share_id")
            index = pc.index_in(ids, value_set=shares_t.column("share_id"))
            unknown = pc.and_(attributed, pc.is_null(index))
            if pc.any(unknown).as_py():
                row = int(pc.index(unknown, True).as_py())
                raise t.error(f"unknown share {ids[row].as_py()!r}", row, "share_id")
            share = pc.fill_null(index, -1).to_numpy().astype(np.int64)
    return Interactions(
        user=_encode(t, "user_id", users, "user"),
        product=_encode(t, "product_id", products, "product"),
        ts=ts,
        share=share,
    )


def _shares(t: _Table, users: pa.Array, products: pa.Array) -> Shares:
    ids = t.column("share_id")
    _require_unique(t, "share_id")
    sharer = _encode(t, "sharer_id", users, "user")
    recipient = _encode(t, "recipient_id", users, "user")
    if (sharer == recipient).any():
        row = int(np.argmax(sharer == recipient))
        raise t.error("a user cannot share to themselves", row, "recipient_id")
    return Shares(
        id=ids.to_numpy(zero_copy_only=False),
        sharer=sharer,
        recipient=recipient,
        product=_encode(t, "product_id", products, "product"),
        ts=_numbers(t, "ts", low=0.0),
    )


def _cascade_split(t: _Table, products: pa.Array) -> np.ndarray:
    _require_unique(t, "product_id")
    rows = _encode(t, "product_id", products, "product")
    split = t.column("split").to_numpy(zero_copy_only=False).astype(object)
    bad = ~np.isin(split, CASCADE_SPLITS)
    if bad.any():
        row = int(np.argmax(bad))
        raise t.error(f"split must be one of {', '.join(CASCADE_SPLITS)}, got {split[row]!r}", row, "split")
    out = np.full(len(products), "", dtype=object)
    out[rows] = split
    return out


def _edges(t: _Table | None, users: pa.Array, column: str, *, default: float | None, low: float,
           high: float | None = None, low_open: bool = False, self_loops: dict[str, int] | None = None
           ) -> Edges | None:
    """The arcs of ``t``; self-loops are an error, or, with a ``self_loops`` dict, dropped and counted in it."""
    if t is None:
        return None
    src, dst = _encode(t, "src_id", users, "user"), _encode(t, "dst_id", users, "user")
    if column in t.table.column_names:
        value = _numbers(t, column, low=low, high=high, low_open=low_open)
    else:
        value = np.full(len(src), default, dtype=np.float64)
    loop = src == dst
    if loop.any():
        if self_loops is None:
            raise t.error("self-loop: src_id equals dst_id", int(np.argmax(loop)), "dst_id")
        self_loops[f"{t.name.partition('.')[0]}_self_loops"] = int(loop.sum())
        src, dst, value = src[~loop], dst[~loop], value[~loop]
    return Edges(src=src, dst=dst, value=value)
