"""`sharerank train --data base --data events...`: the base folder and event logs RecordEvents wrote, merged by
event id with the newest catalogue, read as one dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharerank.dataset.merge import merge_folders
from sharerank.dataset.reader import load_dataset
from sharerank.serving.events.log import EventLog, PurchaseRecord, ShareRecord
from sharerank.training.jobs import training_data


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    """A base folder (catalogue, organic purchases, friends), an event log, and a later log that repeats one
    event of the first (a replayed batch) and comes with a newer catalogue."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "products.csv").write_text("product_id,category\np1,Food\np2,Toys\n")
    (base / "purchases.csv").write_text("user_id,product_id,ts\nu1,p1,10\nu2,p2,11\nu1,p2,12\n")
    (base / "social.csv").write_text("src_id,dst_id\nu1,u2\nu2,u1\n")
    first, second = tmp_path / "events-1", tmp_path / "events-2"
    with EventLog(first) as log:
        log.append([ShareRecord("s1", "u1", "u3", "p1", 20.0), PurchaseRecord("e1", "u3", "p1", 21.0, "s1"),
                    PurchaseRecord("e2", "u2", "p1", 22.0)])
    with EventLog(second) as log:
        log.append([PurchaseRecord("e2", "u2", "p1", 22.0), PurchaseRecord("e3", "u3", "p3", 30.0)])
    (second / "products.csv").write_text("product_id,category\np1,Drinks\np3,Food\n")
    return [base, first, second]


def test_events_appear_once_and_the_newest_catalogue_wins(folders: list[Path], tmp_path: Path) -> None:
    counts = merge_folders(folders, tmp_path / "merged")
    assert counts["purchases"] == 3 + 3 and counts["purchases_repeated"] == 1  # e2 twice: kept once
    assert counts["shares"] == 1 and counts["social"] == 2
    dataset = load_dataset(tmp_path / "merged")
    pairs = sorted(zip(dataset.users[dataset.purchases.user], dataset.products[dataset.purchases.product],
                       strict=True))
    assert pairs == [("u1", "p1"), ("u1", "p2"), ("u2", "p1"), ("u2", "p2"), ("u3", "p1"), ("u3", "p3")]
    category = dict(zip(dataset.products.tolist(), dataset.category.tolist(), strict=True))
    assert category == {"p1": "Drinks", "p3": "Food", "p2": "Toys"}  # p2 only in the older catalogue
    via_share = dataset.purchases.share >= 0
    assert via_share.sum() == 1 and dataset.users[dataset.purchases.user[via_share]].tolist() == ["u3"]


def test_training_reads_the_merge_of_several_folders_and_one_folder_as_it_is(folders: list[Path],
                                                                            tmp_path: Path) -> None:
    merged = training_data(folders, tmp_path / "scratch")
    assert len(merged.purchases) == 6 and merged.num_users == 3
    alone = training_data(folders[:1], tmp_path / "unused")
    assert len(alone.purchases) == 3 and alone.root == folders[0]
    assert merged.fingerprint != alone.fingerprint


def test_a_missing_folder_is_named(folders: list[Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope: not a dataset folder"):
        training_data([*folders, tmp_path / "nope"], tmp_path / "scratch")


def test_purchases_without_times_train_on_a_random_validation_part_but_cannot_carve_a_test(tmp_path: Path) -> None:
    """Gowalla's purchases.csv has no times: `train` needs none (validation is a random part of each user's
    purchases), while a test split of "each user's latest" cannot be carved from it."""
    from sharerank.dataset.reader import DatasetError
    from sharerank.training.jobs import training_split

    folder = tmp_path / "untimed"
    folder.mkdir()
    (folder / "purchases.csv").write_text("user_id,product_id\n" + "".join(
        f"u{u},p{(u * 7 + k) % 40}\n" for u in range(30) for k in range(10)))
    split = training_split(training_data([folder], tmp_path / "scratch"))
    assert len(split.valid) == 30 and len(split.train) == 270  # one of each user's ten
    with pytest.raises(DatasetError, match="'ts' is required unless test.csv"):
        load_dataset(folder)
