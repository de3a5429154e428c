"""Importers of the real datasets in ../shared/data: row counts match ../shared/data/README.md, or counts the
test derives itself from the raw files with plain Python (never the importer's own arithmetic), and every
output passes the dataset-folder reader. Each real import runs once per module; tiny hand-made sources cover
the rows the format cannot hold (self-loops, self-shares, users without items) and malformed files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from sharerank.dataset.reader import Dataset, DatasetError, load_dataset
from sharerank.training.sources.importers import (
    IMPORTERS,
    import_beibei,
    import_cascade_log,
    import_ciao,
    import_gowalla,
    import_lastfm,
    import_nethept,
)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _import(name: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Dataset]:
    out = tmp_path_factory.mktemp(name)
    counts = IMPORTERS[name](shared_data / name, out)
    return out, counts, load_dataset(out)


@pytest.fixture(scope="module")
def ciao(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Dataset]:
    return _import("ciao", shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def gowalla(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Dataset]:
    return _import("gowalla", shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def beibei(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Dataset]:
    return _import("beibei", shared_data, tmp_path_factory)


def test_registry_names_every_dataset() -> None:
    assert set(IMPORTERS) == {"ciao", "lastfm", "gowalla", "beibei", "nethept", "christianity"}


# --- Ciao -------------------------------------------------------------------------------------------------


def test_ciao_counts_match_the_readme(ciao: tuple[Path, dict, Dataset], shared_data: Path) -> None:
    from scipy.io import loadmat

    _, counts, dataset = ciao
    assert counts["purchases"] == 284_086
    assert counts["products"] == 105_114
    # Derived here from the raw matrices, row by row.
    trust = loadmat(shared_data / "ciao" / "trustnetwork.mat")["trustnetwork"].tolist()
    assert len(trust) == 111_781
    self_trust = sum(1 for truster, trustee in trust if truster == trustee)
    assert counts["social_self_loops_dropped"] == self_trust
    assert counts["social"] == 111_781 - self_trust
    seen_pairs: set[tuple[int, int]] = set()
    repeated = 0
    categories: dict[int, set[int]] = {}
    for user, product, category, *_ in loadmat(shared_data / "ciao" / "rating_with_timestamp.mat")["rating"].tolist():
        repeated += (user, product) in seen_pairs
        seen_pairs.add((user, product))
        categories.setdefault(product, set()).add(category)
    assert counts["purchases_repeated_pairs"] == repeated > 0  # rows repeating an earlier (user, product); kept
    assert counts["products_multi_category"] == sum(len(c) > 1 for c in categories.values()) > 0
    assert (dataset.num_users, dataset.num_products, len(dataset.purchases)) == (7_375, 105_114, 284_086)
    assert dataset.social is not None and len(dataset.social.src) == counts["social"]
    assert dataset.test is None and dataset.shares is None


def test_ciao_times_are_unix_seconds_in_file_order(ciao: tuple[Path, dict, Dataset]) -> None:
    _, _, dataset = ciao
    ts = dataset.purchases.ts
    assert np.isfinite(ts).all() and (ts == np.round(ts)).all()
    assert (np.diff(ts) >= 0).all()  # the published file is sorted by time; file order is kept
    assert 957_139_200 <= ts.min() and ts.max() < 1_304_208_000  # 2000-05-01 .. 2011-05-01 UTC


def test_ciao_categories_are_catalogue_names(ciao: tuple[Path, dict, Dataset], shared_data: Path) -> None:
    out, _, dataset = ciao
    catalogue = {}
    for line in (shared_data / "ciao" / "catalog_ciao.txt").read_text(encoding="latin-1").splitlines():
        key, _, name = line.strip().partition(" ")
        catalogue[int(key)] = name.strip()
    assert len(catalogue) == 28
    assert set(dataset.category) <= set(catalogue.values())
    assert {"Books", "DVDs", "Food & Drink"} <= set(dataset.category)
    # product 636 is rated 16 times under category 8 and 3 times under 6: the most frequent wins
    category = dict(zip(dataset.products.tolist(), dataset.category.tolist(), strict=True))
    assert category["636"] == catalogue[8] == "Entertainment"
    assert _read(out / "products.csv")[0] == {"product_id": "1", "category": "DVDs"}


def test_ciao_timestamped_trust_file_can_be_chosen(shared_data: Path, tmp_path: Path) -> None:
    counts = import_ciao(shared_data / "ciao", tmp_path, trust_file="trust_timestamp_version.mat")
    assert counts["social"] == 57_544 and counts["social_self_loops_dropped"] == 0
    assert load_dataset(tmp_path).num_users == 7_375
    with pytest.raises(ValueError, match="trust_file"):
        import_ciao(shared_data / "ciao", tmp_path, trust_file="nope.mat")


def test_ciao_self_trust_is_dropped_and_counted(shared_data: Path, tmp_path: Path) -> None:
    from scipy.io import savemat

    src = tmp_path / "src"
    src.mkdir()
    (src / "catalog_ciao.txt").write_bytes(b"1 DVDs\r\n2 Books\r\n")
    rating = np.array([[1, 10, 1, 5, 1, 100], [2, 10, 2, 4, 1, 200], [2, 11, 2, 3, 1, 300], [2, 10, 2, 1, 1, 400]])
    savemat(src / "rating_with_timestamp.mat", {"rating": rating.astype(np.int32)})
    savemat(src / "trustnetwork.mat", {"trustnetwork": np.array([[1, 2], [2, 2], [2, 1]], dtype=np.uint16)})
    counts = import_ciao(src, tmp_path / "out")
    assert counts == {"products": 2, "purchases": 4, "social": 2, "social_self_loops_dropped": 1,
                      "social_repeated": 0, "purchases_repeated_pairs": 1, "products_multi_category": 1}
    dataset = load_dataset(tmp_path / "out")
    category = dict(zip(dataset.products.tolist(), dataset.category.tolist(), strict=True))
    assert category == {"10": "Books", "11": "Books"}  # 10: Books twice, DVDs once


# --- LastFM -----------------------------------------------------------------------------------------------


def test_lastfm_counts_match_the_readme(shared_data: Path, tmp_path: Path) -> None:
    counts = import_lastfm(shared_data / "lastfm", tmp_path)
    assert counts == {"purchases": 74_267, "test": 18_567, "social": 25_434}
    dataset = load_dataset(tmp_path)
    assert (dataset.num_users, dataset.num_products) == (1_892, 17_632)


# --- Gowalla ----------------------------------------------------------------------------------------------


def test_gowalla_counts_match_the_readme(gowalla: tuple[Path, dict, Dataset], shared_data: Path) -> None:
    out, counts, dataset = gowalla
    bare = {name: sum(1 for line in (shared_data / "gowalla" / f"{name}.txt").read_text().splitlines()
                      if len(line.split()) == 1) for name in ("train", "test")}  # a user and no items
    assert counts == {"purchases": 810_128, "test": 217_242, "train_users_without_items": bare["train"],
                      "test_users_without_items": bare["test"]}
    assert (dataset.num_users, dataset.num_products) == (29_858, 40_981)
    assert len(dataset.purchases) == 810_128 and dataset.test is not None and len(dataset.test) == 217_242
    assert np.isnan(dataset.purchases.ts).all()  # no times: the given test.csv is the hold-out
    assert not (out / "products.csv").exists()
    assert len(np.unique(dataset.test.user)) == 29_858


def test_gowalla_user_without_items_is_counted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.txt").write_text("0 1 2 3\n1\n2 3  \n")
    (src / "test.txt").write_text("0 4\n1 2\n2\n")
    counts = import_gowalla(src, tmp_path / "out")
    assert counts == {"purchases": 4, "test": 2, "train_users_without_items": 1, "test_users_without_items": 1}
    dataset = load_dataset(tmp_path / "out")
    assert sorted(dataset.users.tolist()) == ["0", "1", "2"]  # user 1 stays known through test.csv


# --- BeiBei -----------------------------------------------------------------------------------------------


def test_beibei_counts_match_the_readme(beibei: tuple[Path, dict, Dataset], shared_data: Path) -> None:
    _, counts, dataset = beibei
    assert (counts["groups_tune"], counts["groups_invalid"], counts["groups_test"]) == (154_184, 211_291, 178_642)
    participants = self_shares = empty = 0
    for split in ("tune", "invalid", "test"):  # derived here from the raw lines
        for line in (shared_data / "beibei" / f"{split}.txt").read_text().splitlines():
            initiator, _, *joined = line.split("\t")
            participants += sum(1 for p in joined if p != initiator)
            self_shares += sum(1 for p in joined if p == initiator)
            empty += not joined
    assert counts["groups_without_participants"] == empty == 211_291  # exactly the invalid launches
    assert counts["self_shares_dropped"] == self_shares
    assert counts["shares"] == participants
    groups = 154_184 + 211_291 + 178_642
    assert counts["purchases"] == groups + participants  # one launch purchase per group, one per join
    assert dataset.num_users <= 190_080 and dataset.num_products <= 30_782  # data_size.txt
    assert dataset.shares is not None and len(dataset.shares.id) == counts["shares"]
    assert len(dataset.purchases) == counts["purchases"] and counts["products"] == dataset.num_products
    assert set(dataset.category) == {""}
    prefixes = np.array([s.split("-", 1)[0] for s in dataset.shares.id])
    assert set(prefixes) == {"tune", "test"}  # nobody joined an invalid launch


def test_beibei_joins_point_to_shares_received_by_the_buyer(beibei: tuple[Path, dict, Dataset]) -> None:
    _, counts, dataset = beibei
    purchases, shares = dataset.purchases, dataset.shares
    assert shares is not None
    joined = purchases.share >= 0
    assert joined.sum() == counts["shares"]  # every share converted (participants joined through it)
    via = purchases.share[joined]
    assert (shares.recipient[via] == purchases.user[joined]).all()
    assert (shares.product[via] == purchases.product[joined]).all()
    assert (purchases.ts[joined] == shares.ts[via] + 1).all()  # the join comes just after the share
    assert len(np.unique(via)) == len(via)
    # every sharer also bought the item at the launch time (an organic purchase)
    organic = ~joined
    launches = set(zip(purchases.user[organic].tolist(), purchases.product[organic].tolist(),
                       purchases.ts[organic].tolist(), strict=True))
    assert all(t in launches for t in zip(shares.sharer.tolist(), shares.product.tolist(), shares.ts.tolist(),
                                          strict=True))


def test_beibei_time_keeps_file_and_split_order(beibei: tuple[Path, dict, Dataset]) -> None:
    out, _, dataset = beibei
    ts = dataset.purchases.ts
    assert (np.diff(ts) >= 0).all()  # rows written in time order
    shares = dataset.shares
    assert shares is not None
    is_test = np.char.startswith(shares.id.astype(str), "test-")
    tune_invalid_groups = 154_184 + 211_291
    assert shares.ts[is_test].min() >= 2 * tune_invalid_groups > shares.ts[~is_test].max()
    first = _read(out / "shares.csv")[0]
    assert first == {"share_id": "tune-1-1", "sharer_id": "26985", "recipient_id": "46622", "product_id": "5267",
                     "ts": "0"}


def test_beibei_self_share_is_dropped_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tune.txt").write_text("1\t7\t2\t1\t3\n")
    (src / "invalid.txt").write_text("4\t8\n")
    (src / "test.txt").write_text("2\t7\t1\n")
    counts = import_beibei(src, tmp_path / "out")
    assert counts == {"products": 2, "purchases": 6, "shares": 3, "groups_tune": 1, "groups_invalid": 1,
                      "groups_test": 1, "groups_without_participants": 1, "self_shares_dropped": 1}
    assert [r["share_id"] for r in _read(tmp_path / "out" / "shares.csv")] == ["tune-1-1", "tune-1-3", "test-1-1"]
    assert [r["ts"] for r in _read(tmp_path / "out" / "purchases.csv")] == ["0", "1", "1", "2", "4", "5"]
    load_dataset(tmp_path / "out")


def test_beibei_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    for name, text in (("tune.txt", "1\t2\n"), ("invalid.txt", "1\t2\n3\n"), ("test.txt", "")):
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=r"invalid\.txt, line 2, column 2: expected initiator<TAB>item"):
        import_beibei(tmp_path, tmp_path / "out")


# --- NetHEPT ----------------------------------------------------------------------------------------------


def test_nethept_counts_match_the_readme(shared_data: Path, tmp_path: Path) -> None:
    counts = import_nethept(shared_data / "nethept", tmp_path)
    arcs = [line.split()[:2] for line in (shared_data / "nethept" / "NetHEPT.txt").read_text().splitlines()[1:]]
    assert len(arcs) == 32_235  # the README's count
    loops = sum(1 for u, v in arcs if u == v)
    kept = [(u, v) for u, v in arcs if u != v]
    touched = {u for u, _ in kept} | {v for _, v in kept}
    assert counts == {"influence": 32_235 - loops, "influence_self_loops_dropped": loops,
                      "influence_repeated": len(kept) - len(set(kept)), "nodes_without_arcs": 15_233 - len(touched)}
    assert loops > 0  # NetHEPT has self-loops: the case `sharerank seed` must drop with a warning
    dataset = load_dataset(tmp_path)
    assert dataset.influence is not None and len(dataset.influence.src) == 32_235 - loops
    assert dataset.num_users == len(touched) and len(dataset.purchases) == 0
    assert _read(tmp_path / "influence.csv")[0] == {"src_id": "0", "dst_id": "184", "p": "0.200000"}
    assert 0.0 < dataset.influence.value.min() and dataset.influence.value.max() <= 1.0


def test_nethept_self_loop_dropped_and_arc_count_checked(tmp_path: Path) -> None:
    (tmp_path / "NetHEPT.txt").write_text("4 4\n0 1 0.5\n1 1 0.2\n1 0 0.25\n0 1 0.5\n")
    counts = import_nethept(tmp_path, tmp_path / "out")
    assert counts == {"influence": 3, "influence_self_loops_dropped": 1, "influence_repeated": 1,
                      "nodes_without_arcs": 2}
    assert [r["p"] for r in _read(tmp_path / "out" / "influence.csv")] == ["0.5", "0.25", "0.5"]
    assert load_dataset(tmp_path / "out").num_users == 2


@pytest.mark.parametrize(("text", "where"), [
    ("2 3\n0 1 0.5\n", "line 1, column 2: declares 3 arcs"),
    ("2 1\n0 1\n", "line 2, column 3: expected u v p"),
    ("2 1\n0 1 0.5 9\n", "line 2, column 4: expected u v p"),
    ("2 1\n0 1 1.5\n", "line 2, column 3: probability 1.5"),
    ("2 x\n0 1 0.5\n", "line 1, column 2: expected a count"),
    ("2 1\n0,1 1 0.5\n", "line 2, column 1: expected u v p"),
])
def test_nethept_malformed_lines_name_the_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "NetHEPT.txt").write_text(text)
    with pytest.raises(DatasetError, match="NetHEPT.txt, " + re.escape(where)):
        import_nethept(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(("name", "text", "where"), [
    ("train_set.txt", "user,item\n1,2\n3,4,5\n", "train_set.txt, line 3, column 3: expected 2 fields"),
    ("train_set.txt", "user,item\n1, \n", "train_set.txt, line 2, column 'item': empty id"),
])
def test_lastfm_malformed_lines_name_the_line_and_column(tmp_path: Path, name: str, text: str, where: str) -> None:
    for file in ("train_set.txt", "test_set.txt", "trust.txt"):
        (tmp_path / file).write_text("a,b\n1,2\n")
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=re.escape(where)):
        import_lastfm(tmp_path, tmp_path / "out")


def test_gowalla_and_ciao_malformed_files_name_the_place(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "train.txt").write_text("0 1 2\n1 3 x4\n")
    (tmp_path / "test.txt").write_text("0 4\n")
    with pytest.raises(DatasetError, match=re.escape("train.txt, line 2, column 3: expected an integer id")):
        import_gowalla(tmp_path, tmp_path / "out")
    (tmp_path / "catalog_ciao.txt").write_text("1 DVDs\n")
    rating = np.array([[1, 10, 1, 5, 1, 100], [2, 10, 2, 4, 1, 200]])
    savemat(tmp_path / "rating_with_timestamp.mat", {"rating": rating})
    savemat(tmp_path / "trustnetwork.mat", {"trustnetwork": np.array([[1, 2]])})
    with pytest.raises(DatasetError, match=re.escape("rating_with_timestamp.mat, line 2, column 3: matrix 'rating': "
                                                     "category id 2 has no name")):
        import_ciao(tmp_path, tmp_path / "out")
    (tmp_path / "trustnetwork.mat").write_bytes(b"not a matlab file")
    (tmp_path / "catalog_ciao.txt").write_text("1 DVDs\n2 Books\n")
    with pytest.raises(DatasetError, match="trustnetwork.mat: not a readable MATLAB file"):
        import_ciao(tmp_path, tmp_path / "out")


# --- christianity (a cascade log) --------------------------------------------------------------------------


def test_christianity_counts_match_the_readme_and_the_raw_file(shared_data: Path, tmp_path: Path) -> None:
    counts = import_cascade_log(shared_data / "christianity", tmp_path)
    cascades = []
    for line in (shared_data / "christianity" / "cascades.txt").read_text().splitlines():  # plain Python
        steps = [s.split() for s in line.split(",") if s.strip()]
        order = [steps[0][0]] + [s[-2] for s in steps]
        cascades.append((float(steps[0][-1]), list(dict.fromkeys(order)), [float(s[-1]) for s in steps]))
    edges = [tuple(line.split(",")) for line in (shared_data / "christianity" / "edges.txt").read_text().split()]
    assert len(cascades) == 589 and sum(len(c[1]) for c in cascades) == 15_327  # the README's counts
    assert len({u for c in cascades for u in c[1]}) == 1_651
    assert len(edges) == 35_624
    friends: dict[str, set[str]] = {}
    for u, v in edges:
        friends.setdefault(u, set()).add(v)
        friends.setdefault(v, set()).add(u)
    credited = sum(1 for _, adopters, _ in cascades for k, user in enumerate(adopters)
                   if k and any(u in friends.get(user, ()) for u in adopters[:k]))
    assert counts["purchases"] == 15_327 and counts["products"] == counts["cascades"] == 589
    assert counts["shares"] == credited and counts["adoptions_without_earlier_friend"] == 15_327 - 589 - credited
    assert counts["social"] == len({(u, v) for u, v in edges} | {(v, u) for u, v in edges})
    assert (counts["cascades_train"], counts["cascades_valid"], counts["cascades_test"]) == (471, 59, 59)  # 80/10/10
    dataset = load_dataset(tmp_path)
    assert dataset.num_users == 2_897 and dataset.cascade_split is not None
    first_times = sorted((c[0], i) for i, c in enumerate(cascades))
    test_lines = {i + 1 for _, i in first_times[530:]}  # the latest tenth by first time
    split = dict(zip(dataset.products.tolist(), dataset.cascade_split.tolist(), strict=True))
    assert {int(p[1:]) for p, s in split.items() if s == "test"} == test_lines
    assert all(all(a <= b for a, b in zip(times, times[1:], strict=False)) for _, _, times in cascades)


def test_a_cascade_log_credits_the_latest_earlier_friend(tmp_path: Path) -> None:
    (tmp_path / "edges.txt").write_text("r,x\nx,y\nr,y\n")
    (tmp_path / "cascades.txt").write_text("r x 1,z 2,y 3,x 4,\n")  # x again at 4: a repeat, not a purchase
    counts = import_cascade_log(tmp_path, tmp_path / "out")
    assert counts["repeated_adoptions"] == 1 and counts["adoptions_without_earlier_friend"] == 1  # z: no friend
    shares = {(r["sharer_id"], r["recipient_id"]) for r in _read(tmp_path / "out" / "shares.csv")}
    assert shares == {("r", "x"), ("x", "y")}  # y's earlier friends are r and x: x is the latest
    (tmp_path / "cascades.txt").write_text("r x 5,y 3,\n")
    with pytest.raises(DatasetError, match=r"cascades\.txt, line 1, column 2: time 3 is before"):
        import_cascade_log(tmp_path, tmp_path / "out")
