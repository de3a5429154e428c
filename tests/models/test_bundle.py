"""The served bundle: sellers saved and loaded (older bundles without them too), serving look-ups, and
products appended with a category prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.artifact.index import ProductIndex


def make_bundle(n: int = 60, *, exact_below: int = 100_000, seller: bool = True) -> ModelBundle:
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((n, 8)).astype(np.float32)
    history = sp.csr_matrix((np.ones(3), ([0, 0, 2], [1, 2, 3])), shape=(3, n))
    return ModelBundle(
        users=np.array(["u0", "u1", "u2"], dtype=object),
        products=np.array([f"p{i}" for i in range(n)], dtype=object),
        category=np.array([["A", "B", ""][i % 3] for i in range(n)], dtype=object),
        in_stock=np.ones(n, dtype=bool),
        user_embedding=rng.standard_normal((3, 8)).astype(np.float32),
        product_embedding=embedding,
        history=history,
        friends=sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(3, 3)),
        popularity=np.arange(n)[::-1].copy(),
        index=ProductIndex.build(embedding, exact_below=exact_below, nlist=4, nprobe=4),
        info={"model_type": "test"},
        seller=np.array([f"s{i % 4}" if i % 5 else "" for i in range(n)], dtype=object) if seller else None,
    )


def test_seller_and_category_prior_survive_save_and_load(tmp_path: Path) -> None:
    bundle = make_bundle()
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    assert loaded.seller.tolist() == bundle.seller.tolist()
    assert loaded.category_prior.tolist() == [False] * 60


def test_an_older_bundle_without_sellers_loads_with_unknown_sellers(tmp_path: Path) -> None:
    path = make_bundle().save(tmp_path / "b")
    with np.load(path / "ids.npz") as ids:
        np.savez(path / "ids.npz", **{k: ids[k] for k in ids.files if k != "seller"})
    with np.load(path / "arrays.npz") as arrays:
        np.savez(path / "arrays.npz", **{k: arrays[k] for k in arrays.files if k != "category_prior"})
    loaded = ModelBundle.load(path)
    assert set(loaded.seller.tolist()) == {""} and not loaded.category_prior.any()
    assert (loaded.seller_codes == -1).all()


def test_serving_lookups() -> None:
    bundle = make_bundle(seller=False).warm()
    assert set(bundle.seller.tolist()) == {""}
    codes = bundle.category_codes
    assert codes[:3].tolist() == [0, 1, -1]  # "" is unknown: never counted as one category
    assert bundle.has_history.tolist() == [True, False, True]
    assert bundle.max_popularity == 59.0
    assert bundle.long_tail.sum() == 60 - 12  # the most bought 20% are the head
    assert not bundle.long_tail[:12].any()


@pytest.mark.parametrize("exact_below", [100_000, 10])  # Flat, and IVF (cloned, not retrained)
def test_with_products_appends_rows_and_index_ids_together(exact_below: int) -> None:
    bundle = make_bundle(exact_below=exact_below)
    vectors = np.array([[9.0] * 8, [-9.0] * 8], dtype=np.float32)
    extended = bundle.with_products(np.array(["n0", "n1"], dtype=object), np.array(["A", "Z"], dtype=object),
                                    np.array(["s9", ""], dtype=object), np.array([True, False]), vectors)
    assert len(bundle.products) == 60 and bundle.index.size == 60  # untouched
    assert extended.index.size == 62 and extended.index.kind == bundle.index.kind
    assert extended.product_rows["n0"] == 60 and extended.category_prior[60:].all()
    assert extended.history.shape == (3, 62) and extended.popularity[60:].tolist() == [0, 0]
    _, ids = extended.index.search(vectors[0], 1)
    assert ids[0].tolist() == [60]  # FAISS id i is still product row i
    assert extended.in_stock[60:].tolist() == [True, False] and extended.seller[60:].tolist() == ["s9", ""]


def test_latest_sharers_survive_save_load_and_appended_products(tmp_path: Path) -> None:
    """GetAudience's "shared to them by" evidence: user 0 shared p5 to user 2, user 1 shared p7 to user 0."""
    import dataclasses

    from sharerank.models.audience.scorer import latest_sharers

    shared = latest_sharers(np.array([2, 0]), np.array([5, 7]), np.array([0, 1]), np.array([1.0, 2.0]), 3, 60)
    bundle = dataclasses.replace(make_bundle(), shared_to=shared)
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    assert loaded.shared_by(5).tolist() == [-1, -1, 0] and loaded.shared_by(7).tolist() == [1, -1, -1]
    assert make_bundle().shared_by(5).tolist() == [-1, -1, -1]  # a bundle without shares: nobody
    grown = loaded.with_products(np.array(["new"], dtype=object), np.array(["A"], dtype=object),
                                 np.array([""], dtype=object), np.ones(1, dtype=bool), np.zeros((1, 8), np.float32))
    assert grown.shared_by(60).tolist() == [-1, -1, -1] and grown.shared_by(5).tolist() == [-1, -1, 0]
