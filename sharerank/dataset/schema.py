"""The dataset folder's files, columns and column kinds: the one declaration of the format.

A dataset folder holds CSV files with a header (or the same names with ``.parquet``: a file, or a folder of
Parquet parts in any sub-folders, as ``sharerank ingest`` writes); ids are strings::

    products.csv   product_id,category[,price,seller_id,in_stock]
    purchases.csv  user_id,product_id[,ts][,share_id][,event_id]   (ts may be absent only with test.csv)
    shares.csv     share_id,sharer_id,recipient_id,product_id,ts          (optional)
    social.csv     src_id,dst_id[,weight]                                 (optional; directed)
    influence.csv  src_id,dst_id,p                                        (optional; IC probabilities)
    test.csv       user_id,product_id                                     (optional; fixed hold-out)
    views.csv      user_id,product_id,ts[,event_id]                       (optional; weak signals)
    cascades.csv   product_id,split                                       (optional; a cascade log)

``event_id`` is the idempotency key of events recorded through the RecordEvents RPC (a share's is its
``share_id``); files written by other means may leave it out. ``cascades.csv`` marks a cascade log (each
listed product is one cascade, e.g. one post and its adopters) and fixes its split of whole cascades:
``split`` is ``train``, ``valid`` or ``test`` (:data:`CASCADE_SPLITS`). A simulated world adds ``truth/`` (the
simulator's ground truth, :data:`TRUTH`), which readers of the folder format ignore.

The reader (:mod:`.reader`) validates against these declarations and the writer (:mod:`.writer`) writes
columns in the declared order; every producer of a folder (simulator, importers, event log) names columns
through :meth:`FileSpec.columns`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["id", "optional_id", "number", "boolean", "text"]
"""``id``: a non-empty string; ``optional_id``: an id or empty (a purchase's ``share_id``: empty = organic);
``number``: a decimal number; ``boolean``: 1/0, true/false or yes/no; ``text``: any string."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True)
class FileSpec:
    """One file of the folder: its name (without extension), required and optional columns, in file order."""

    name: str
    required: tuple[Column, ...]
    optional: tuple[Column, ...] = ()
    folder: str = ""  # a subfolder of the dataset folder ("truth" for the simulator's ground truth)

    @property
    def names(self) -> tuple[str, ...]:
        """Every column this file may have, in order."""
        return tuple(c.name for c in self.required + self.optional)

    def columns(self, *optional: str) -> tuple[str, ...]:
        """The required columns followed by the named optional ones, in declared order.

        Raises:
            ValueError: a name that is not an optional column of this file.
        """
        known = {c.name for c in self.optional}
        unknown = [name for name in optional if name not in known]
        if unknown:
            raise ValueError(f"{self.name}: no optional column {unknown}; optional: {', '.join(sorted(known))}")
        return tuple(c.name for c in self.required) + tuple(c.name for c in self.optional if c.name in optional)

    def kind(self, column: str) -> Kind:
        return next(c.kind for c in self.required + self.optional if c.name == column)

    def describe(self) -> str:
        """``a,b[,c]``: the header, optional columns in brackets (for error messages)."""
        return ",".join(c.name for c in self.required) + "".join(f"[,{c.name}]" for c in self.optional)

    def path(self, root: str | Path, suffix: str = ".csv") -> Path:
        return Path(root) / self.folder / f"{self.name}{suffix}"


def _id(name: str) -> Column:
    return Column(name, "id")


FILES: dict[str, FileSpec] = {spec.name: spec for spec in (
    FileSpec("products", (_id("product_id"), Column("category", "text")),
             (Column("price", "number"), Column("seller_id", "text"), Column("in_stock", "boolean"))),
    FileSpec("purchases", (_id("user_id"), _id("product_id")),
             (Column("ts", "number"), Column("share_id", "optional_id"), Column("event_id", "text"))),
    FileSpec("shares", (_id("share_id"), _id("sharer_id"), _id("recipient_id"), _id("product_id"),
                        Column("ts", "number"))),
    FileSpec("social", (_id("src_id"), _id("dst_id")), (Column("weight", "number"),)),
    FileSpec("influence", (_id("src_id"), _id("dst_id"), Column("p", "number"))),
    FileSpec("test", (_id("user_id"), _id("product_id"))),
    FileSpec("views", (_id("user_id"), _id("product_id"), Column("ts", "number")), (Column("event_id", "text"),)),
    FileSpec("cascades", (_id("product_id"), Column("split", "text"))),
)}
"""The dataset folder's files by name."""

CASCADE_SPLITS = ("train", "valid", "test")
"""The values of ``cascades.split``, in time order."""

TRUTH: dict[str, FileSpec] = {spec.name: spec for spec in (
    FileSpec("influence", (_id("src_id"), _id("dst_id"), Column("p", "number")), folder="truth"),
    FileSpec("interests", (_id("user_id"), Column("category", "text"), Column("weight", "number")), folder="truth"),
    FileSpec("users", (_id("user_id"), Column("community", "number"), Column("role", "text")), folder="truth"),
    FileSpec("fatigue", (_id("user_id"), Column("tolerance", "number"), Column("mute_after", "number"),
                         Column("window_s", "number")), folder="truth"),
    FileSpec("mutes", (_id("src_id"), _id("dst_id"), Column("ts", "number")), folder="truth"),
    FileSpec("rings", (_id("user_id"), Column("ring", "number")), folder="truth"),
    FileSpec("ring_products", (Column("ring", "number"), _id("product_id")), folder="truth"),
)}
"""A simulated world's ground truth under ``truth/``: true IC probabilities ``p_uv`` per social arc, each user's
interest weight per category, each user's community and role (koc, normal, spammer). Worlds simulated with
recipient fatigue add ``fatigue`` (each user's tolerance, the shares from one sender after which they mute
them, and the window of recent shares in seconds) and ``mutes`` (who, ``dst_id``, muted whom, ``src_id``, and
when); worlds with collusive rings add ``rings`` (each ring member and their ring) and ``ring_products`` (the
products each ring pushes). Those four files exist only in worlds with the feature on."""

RECOMMENDATIONS = FileSpec("recommendations", (_id("user_id"), _id("product_id"), Column("rank", "number"),
                                               Column("score", "number")))
"""What `sharerank recommend` writes and the registered model's ``predict`` returns: each user's top-k list."""
