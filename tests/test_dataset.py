"""The dataset-folder reader: encodes ids once, and names file, line and column of every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharerank.dataset.reader import DatasetError, fingerprint, load_dataset


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "products.csv", "product_id,category,price,seller_id,in_stock\n"
          "p1,Beauty,9.5,s1,1\np2,Home,20,s2,0\np3,Beauty,1,s1,true\n")
    write(tmp_path, "purchases.csv", "user_id,product_id,ts,share_id\nu1,p1,10,\nu2,p1,20,s1\nu2,p3,30,\n")
    write(tmp_path, "shares.csv", "share_id,sharer_id,recipient_id,product_id,ts\ns1,u1,u2,p1,15\n")
    write(tmp_path, "social.csv", "src_id,dst_id\nu1,u2\nu2,u1\nu3,u1\n")
    return tmp_path


def test_reads_and_encodes(folder: Path) -> None:
    data = load_dataset(folder)
    assert list(data.products) == ["p1", "p2", "p3"]
    assert data.num_users == 3  # u3 appears only in social.csv and is still a user
    assert list(data.category) == ["Beauty", "Home", "Beauty"]
    assert data.in_stock.tolist() == [True, False, True]
    users = [data.users[u] for u in data.purchases.user]
    assert users == ["u1", "u2", "u2"]
    assert data.purchases.share.tolist() == [-1, 0, -1]
    assert data.shares is not None and data.shares.id.tolist() == ["s1"]
    np.testing.assert_array_equal(data.purchases.ts, [10, 20, 30])
    assert data.summary()["social_edges"] == 3
    assert data.fingerprint == fingerprint(folder)


def test_fingerprint_changes_with_content(folder: Path) -> None:
    before = fingerprint(folder)
    write(folder, "purchases.csv", "user_id,product_id,ts,share_id\nu1,p1,11,\n")
    assert fingerprint(folder) != before


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("purchases.csv", "user_id,product_id,ts\nu1,p1,10\nu1,p1,ten\n", "purchases.csv, line 3, column 'ts'"),
        ("purchases.csv", "user_id,product_id,ts\nu1,p9,10\n", "purchases.csv, line 2, column 'product_id'"),
        ("purchases.csv", "user_id,product_id,ts\nu1,p1,10\n,p1,3\n", "purchases.csv, line 3, column 'user_id'"),
        ("purchases.csv", "user_id,product_id,ts\nu1,p1,-5\n", "purchases.csv, line 2, column 'ts'"),
        ("purchases.csv", "user_id,product_id,ts\nu1,p1\n", "purchases.csv, line 2"),
        ("purchases.csv", "user_id,product_id,ts,colour\nu1,p1,1,red\n", "purchases.csv, line 1, column 'colour'"),
        ("purchases.csv", "user_id,ts\nu1,1\n", "purchases.csv, line 1, column 'product_id'"),
        ("purchases.csv", "user_id,product_id,ts,share_id\nu1,p1,1,s9\n", "purchases.csv, line 2, column 'share_id'"),
        ("products.csv", "product_id,category\np1,A\np1,B\n", "products.csv, line 3, column 'product_id'"),
        ("products.csv", "product_id,category,in_stock\np1,A,maybe\n", "products.csv, line 2, column 'in_stock'"),
        ("shares.csv", "share_id,sharer_id,recipient_id,product_id,ts\ns1,u1,u1,p1,3\n",
         "shares.csv, line 2, column 'recipient_id'"),
        ("influence.csv", "src_id,dst_id,p\nu1,u2,0.5\nu2,u1,1.5\n", "influence.csv, line 3, column 'p'"),
        ("social.csv", "src_id,dst_id\nu1,u1\n", "social.csv, line 2, column 'dst_id'"),
    ],
)
def test_errors_name_file_line_and_column(folder: Path, name: str, text: str, where: str) -> None:
    write(folder, "shares.csv", "share_id,sharer_id,recipient_id,product_id,ts\ns1,u1,u2,p1,15\n")
    write(folder, name, text)
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    assert str(err.value).startswith(where), str(err.value)


def test_ts_required_without_test_file(tmp_path: Path) -> None:
    write(tmp_path, "purchases.csv", "user_id,product_id\nu1,p1\n")
    with pytest.raises(DatasetError, match="'ts' is required"):
        load_dataset(tmp_path)
    write(tmp_path, "test.csv", "user_id,product_id\nu1,p2\n")
    data = load_dataset(tmp_path)
    assert np.isnan(data.purchases.ts).all()
    assert data.test is not None and list(data.products) == ["p1", "p2"]  # no products.csv: ids seen


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such directory"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no dataset files"):
        load_dataset(tmp_path)


def test_influence_only_is_valid(tmp_path: Path) -> None:
    write(tmp_path, "influence.csv", "src_id,dst_id,p\na,b,0.1\nb,c,0.2\n")
    data = load_dataset(tmp_path)
    assert data.num_users == 3 and len(data.purchases) == 0
    assert data.influence is not None and data.influence.value.tolist() == [0.1, 0.2]


def test_parquet_equals_csv(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("parquet")
    for name in ("products", "purchases", "shares", "social"):
        table = pa.csv.read_csv(folder / f"{name}.csv", convert_options=pa.csv.ConvertOptions(
            strings_can_be_null=False, column_types={}))
        pq.write_table(table, other / f"{name}.parquet")
    a, b = load_dataset(folder), load_dataset(other)
    assert a.users.tolist() == b.users.tolist() and a.products.tolist() == b.products.tolist()
    np.testing.assert_array_equal(a.purchases.product, b.purchases.product)
    np.testing.assert_array_equal(a.purchases.share, b.purchases.share)


def test_a_folder_of_parquet_parts_reads_as_one_file_and_skips_parts_in_flight(tmp_path: Path) -> None:
    """As `sharerank ingest` writes: parts under day=... folders (not a column), a writer's hidden temporary file
    skipped, and a file whose folder holds no visible part yet read as absent."""
    parts = tmp_path / "purchases.parquet"
    for day, users in (("2026-12-06", ["u1", "u2"]), ("2026-12-07", ["u3"])):
        (parts / f"day={day}").mkdir(parents=True)
        pq.write_table(pa.table({"user_id": users, "product_id": ["p1"] * len(users), "ts": [1.0] * len(users)}),
                       parts / f"day={day}" / "part-1.parquet")
    pq.write_table(pa.table({"user_id": ["in-flight"], "product_id": ["p9"], "ts": [2.0]}),
                   parts / "day=2026-12-07" / ".part-2.parquet.tmp")
    (tmp_path / "shares.parquet" / "day=2026-12-07").mkdir(parents=True)  # first part not renamed in yet
    data = load_dataset(tmp_path)
    assert sorted(data.users.tolist()) == ["u1", "u2", "u3"] and data.shares is None


def test_parquet_row_errors_name_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "product_id": ["p1", "p2"], "ts": ["1", "x"]}),
                   tmp_path / "purchases.parquet")
    with pytest.raises(DatasetError, match=r"purchases.parquet, line 2, column 'ts'"):
        load_dataset(tmp_path)


def test_event_ids_and_views_are_read(folder: Path) -> None:
    write(folder, "purchases.csv", "user_id,product_id,ts,share_id,event_id\nu1,p1,10,,e1\nu2,p1,20,s1,e2\n")
    write(folder, "views.csv", "user_id,product_id,ts,event_id\nu9,p2,5,e3\n")
    data = load_dataset(folder)
    assert data.views is not None and len(data.views) == 1 and "u9" in data.users.tolist()
    write(folder, "views.csv", "user_id,product_id,ts\nu9,p7,5\n")
    with pytest.raises(DatasetError, match=r"views.csv, line 2, column 'product_id'"):
        load_dataset(folder)
