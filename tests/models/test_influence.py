"""The learned influence model: calibration against a smoothed baseline and the simulator's truth, KOCs above
spammers, given tables used as is, storage, hand-counted sender statistics and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pytest

from sharerank.dataset.reader import Dataset, load_dataset
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.influence import InfluenceModel, calibration_report, truth_report
from sharerank.training.sources.simulate import simulate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("influence_world")
    simulate_world(out, users=4000, seed=0)
    return out


@pytest.fixture(scope="module")
def dataset(world: Path) -> Dataset:
    return load_dataset(world)


@pytest.fixture(scope="module")
def model(dataset: Dataset) -> InfluenceModel:
    return InfluenceModel.fit(dataset)


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text.strip() + "\n")
    return root


def tiny(tmp_path: Path, **extra: str) -> Dataset:
    """Users a..d, two Beauty products and one Food product. ``a`` sends four trials (two convert); s6 is
    no trial since d owned p1 already; ``b`` sends one."""
    return load_dataset(write(tmp_path / "tiny", {
        "products.csv": "product_id,category\np1,Beauty\np2,Beauty\np3,Food",
        "shares.csv": """share_id,sharer_id,recipient_id,product_id,ts
s1,a,b,p1,10
s2,a,c,p1,11
s3,a,d,p2,12
s4,a,b,p3,13
s5,b,c,p1,25
s6,a,d,p1,50""",
        "purchases.csv": """user_id,product_id,ts,share_id
a,p1,1,
d,p1,5,
c,p2,2,
b,p1,20,s1
b,p3,30,s4""",
        "social.csv": "src_id,dst_id\na,b\nb,a\nc,d",
        **extra,
    }))


def index(dataset: Dataset, ids: pa.ChunkedArray) -> np.ndarray:
    found = pc.index_in(ids, value_set=pa.array(dataset.users.astype(str).tolist()))
    return pc.fill_null(found, -1).to_numpy().astype(np.int64)


def test_beats_the_smoothed_baseline_on_held_out_shares(dataset: Dataset) -> None:
    report = calibration_report(dataset, holdout_fraction=0.2)

    assert report["model"]["log_loss"] < report["baseline"]["log_loss"]
    assert report["model"]["brier"] < report["baseline"]["brier"]
    observed = report["test_conversions"] / report["test_trials"]
    assert abs(report["model"]["mean_predicted"] - observed) < 0.25 * observed
    for table in report["reliability"].values():
        assert len(table) == 10 and sum(row["count"] for row in table) == report["test_trials"]
    top, bottom = report["reliability"]["model"][-1], report["reliability"]["model"][0]
    assert top["observed"] > 10 * max(bottom["observed"], 1e-3)  # it separates, not just averages


def test_learned_arcs_track_the_true_probabilities(dataset: Dataset, world: Path, model: InfluenceModel) -> None:
    report = truth_report(dataset, world / "truth", model)

    assert set(report["by_category"]) == set(model.categories)
    overall = report["overall"]
    assert overall["correlation"] > 0.45
    assert overall["mae"] < overall["mean_true"]
    assert abs(overall["mean_predicted"] - overall["mean_true"]) < 0.2 * overall["mean_true"]


def test_kocs_rank_above_ordinary_users_above_spammers(dataset: Dataset, world: Path, model: InfluenceModel) -> None:
    roles = pcsv.read_csv(world / "truth" / "users.csv")
    role = np.full(dataset.num_users, "", dtype=object)
    known = index(dataset, roles.column("user_id"))
    role[known[known >= 0]] = roles.column("role").to_numpy(zero_copy_only=False)[known >= 0]
    graph = model.ic_graph(None)
    sender = np.repeat(np.arange(graph.num_nodes), graph.out_degree())
    mean_out = np.bincount(sender, graph.out_prob, graph.num_nodes) / np.maximum(graph.out_degree(), 1)
    has_arcs = graph.out_degree() > 0

    koc, normal, spammer = (mean_out[has_arcs & (role == r)].mean() for r in ("koc", "normal", "spammer"))
    assert koc > 1.4 * normal > 1.4 * 2 * spammer


def test_graph_covers_social_and_share_arcs_with_probabilities(dataset: Dataset, model: InfluenceModel) -> None:
    n = dataset.num_users
    arcs = np.union1d(dataset.social.src * n + dataset.social.dst, dataset.shares.sharer * n + dataset.shares.recipient)
    for category in (None, *model.categories):
        graph = model.ic_graph(category)
        assert isinstance(graph, ICGraph) and graph.num_nodes == n
        assert np.isfinite(graph.out_prob).all() and graph.out_prob.min() > 0 and graph.out_prob.max() <= 1
        assert graph.num_arcs == len(arcs)
    src, dst = arcs[:500] // n, arcs[:500] % n
    pooled = model.probability(src, dst, None)
    per_category = np.stack([model.probability(src, dst, c) for c in model.categories])
    assert np.all((pooled >= per_category.min(axis=0) - 1e-12) & (pooled <= per_category.max(axis=0) + 1e-12))


def test_given_influence_is_used_exactly(tmp_path: Path) -> None:
    given = tiny(tmp_path, **{"influence.csv": "src_id,dst_id,p\na,b,0.25\nb,c,0.5\nc,d,0.125\nd,a,1"})
    src, dst, p = given.influence.src, given.influence.dst, given.influence.value

    model = InfluenceModel.fit(given)

    for category in (None, "Beauty", "Food"):
        assert model.probability(src, dst, category).tolist() == p.tolist()
        graph = model.ic_graph(category)
        expected = ICGraph.from_arcs(src, dst, p, given.num_users)
        assert graph.num_arcs == 4
        assert np.array_equal(graph.out_indices, expected.out_indices)
        assert np.array_equal(graph.out_prob, expected.out_prob)
    a, c = index(given, pa.chunked_array([["a", "c"]]))
    assert model.probability([a], [c], None).tolist() == [0.0]  # not in the table


def test_save_load_round_trip(tmp_path: Path, dataset: Dataset) -> None:
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(dataset.num_users, 8)).astype(np.float32)
    fitted = InfluenceModel.fit(dataset, user_embedding=embedding)
    fitted.save(tmp_path / "influence")

    loaded = InfluenceModel.load(tmp_path / "influence")

    assert loaded.categories == fitted.categories and loaded.num_users == fitted.num_users
    src, dst = rng.integers(0, dataset.num_users, (2, 1000))
    for category in (None, fitted.categories[0]):
        assert np.array_equal(loaded.probability(src, dst, category), fitted.probability(src, dst, category))
    busiest = int(np.argmax(np.bincount(dataset.shares.sharer)))
    assert loaded.sender_stats(busiest, None) == fitted.sender_stats(busiest, None)
    with np.load(tmp_path / "influence" / "arrays.npz", allow_pickle=False) as npz:  # no object arrays
        assert "embedding" in npz.files


def test_given_table_round_trip(tmp_path: Path) -> None:
    model = InfluenceModel.fit(tiny(tmp_path, **{"influence.csv": "src_id,dst_id,p\na,b,0.25\nb,c,0.5"}))
    model.save(tmp_path / "given")
    loaded = InfluenceModel.load(tmp_path / "given")
    assert loaded.probability(model.arrays["arc_src"], model.arrays["arc_dst"], None).tolist() == [0.25, 0.5]
    assert loaded.ic_graph(None).out_prob.tolist() == pytest.approx([0.25, 0.5], abs=1e-15)


def test_sender_stats_match_hand_counts(tmp_path: Path) -> None:
    data = tiny(tmp_path)
    a, b, c = index(data, pa.chunked_array([["a", "b", "c"]]))

    model = InfluenceModel.fit(data)

    assert model.sender_stats(a, "Beauty") == (3, 1)  # s1 converted, s2 and s3 did not; s6 is no trial
    assert model.sender_stats(a, "Food") == (1, 1)
    assert model.sender_stats(a, None) == (4, 2)
    assert model.sender_stats(b, None) == (1, 0)
    assert model.sender_stats(c, None) == (0, 0)
    probs = model.ic_graph(None).out_prob
    assert np.all((probs > 0) & (probs <= 1))
    early = data.shares.ts <= 11
    assert InfluenceModel.fit(data, train_mask=early).sender_stats(a, None) == (2, 1)


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    data = tiny(tmp_path)
    model = InfluenceModel.fit(data)
    with pytest.raises(ValueError, match="unknown category 'Garden'; known categories: Beauty, Food"):
        model.ic_graph("Garden")
    with pytest.raises(ValueError, match="unknown category"):
        model.probability([0], [1], "Garden")
    with pytest.raises(ValueError, match="unknown category"):
        model.sender_stats(0, "Garden")
    with pytest.raises(ValueError, match="user indices"):
        model.probability([0], [99], None)
    with pytest.raises(ValueError, match="outside"):
        model.sender_stats(-1, None)
    with pytest.raises(ValueError, match="train_mask"):
        InfluenceModel.fit(data, train_mask=np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="user_embedding"):
        InfluenceModel.fit(data, user_embedding=np.ones((2, 3)))
    no_shares = load_dataset(write(tmp_path / "no_shares", {"purchases.csv": "user_id,product_id,ts\na,p1,1"}))
    with pytest.raises(ValueError, match="no shares.csv"):
        InfluenceModel.fit(no_shares)
