"""The true behaviour the feed replay scores pages by, on a world small enough to work out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.dataset.schema import FILES, TRUTH
from sharerank.dataset.writer import write_rows
from sharerank.training.feed.true_behaviour import TrueBehaviour

DAY = 86_400
SINCE, AT = 20 * DAY, 27 * DAY


def tiny_world(root: Path, *, fatigue: bool = True) -> Path:
    """u1 receives shares of p1 from u2 (twice) and u4, of p2 and p4 from u3, whom u1 mutes after their second
    share (day 21); p3 was shared before the window; u1 bought p4 organically on day 0."""
    write_rows(root, FILES["products"], ("product_id", "category"),
               [("p1", "Beauty"), ("p2", "Beauty"), ("p3", "Books"), ("p4", "Books")])
    write_rows(root, FILES["purchases"], ("user_id", "product_id", "ts"),
               [("u1", "p4", 0), ("u4", "p1", 5 * DAY), ("u2", "p1", 10 * DAY), ("u4", "p3", 10 * DAY)])
    shares = [("u3", "p3", 15), ("u3", "p4", 21), ("u3", "p2", 22), ("u2", "p1", 23), ("u4", "p1", 24),
              ("u2", "p1", 25)]
    write_rows(root, FILES["shares"], FILES["shares"].columns(),
               [(f"s{i:07d}", sharer, "u1", product, day * DAY) for i, (sharer, product, day) in enumerate(shares)])
    arcs = [("u2", "u1", 0.1), ("u3", "u1", 0.2), ("u4", "u1", 0.3)]
    write_rows(root, FILES["social"], ("src_id", "dst_id"),
               [pair for s, d, _ in arcs for pair in ((s, d), (d, s))])
    write_rows(root, TRUTH["influence"], TRUTH["influence"].names,
               [row for s, d, p in arcs for row in ((s, d, p), (d, s, 0.05))])
    weights = {"u1": (2.0, 0.5)}
    write_rows(root, TRUTH["interests"], TRUTH["interests"].names,
               [(u, c, w) for u in ("u1", "u2", "u3", "u4") for c, w in zip(("Beauty", "Books"),
                                                                           weights.get(u, (1.0, 1.0)), strict=True)])
    write_rows(root, TRUTH["users"], TRUTH["users"].names, [(u, 0, "normal") for u in ("u1", "u2", "u3", "u4")])
    if fatigue:
        write_rows(root, TRUTH["fatigue"], TRUTH["fatigue"].names,
                   [(u, 2.0, 2, 7 * DAY) for u in ("u1", "u2", "u3", "u4")])
        write_rows(root, TRUTH["mutes"], TRUTH["mutes"].names, [("u3", "u1", 21 * DAY)])
    return root


def rows(dataset, *names: str) -> np.ndarray:
    index = {str(p): i for i, p in enumerate(dataset.products)}
    return np.array([index[n] for n in names])


def test_a_page_scores_by_the_true_share_model_with_fatigue_and_mutes(tmp_path: Path) -> None:
    dataset = load_dataset(tiny_world(tmp_path))
    truth = TrueBehaviour.from_world(dataset, since=SINCE, at=AT, organic_days=7)
    u1 = list(dataset.users).index("u1")
    page = rows(dataset, "p1", "p2", "p3", "p4")
    got = truth.conversion(u1, page)

    # u1 saw 4 shares in (day 20, day 27]: u3's second (the one after which u1 muted u3), u2's two, u4's; u3's third
    # was never seen (muted) and u3's first is older than the window. tau = 2: fatigue factor 2 / (2 + 4).
    factor = 2 / (2 + 4)
    p1_shared = 1 - (1 - 0.1 * 2.0 * factor) * (1 - 0.3 * 2.0 * factor)  # u2 counts once, u4 once
    # Organic: u1 bought 1 product organically over the 10 days of organic purchases -> 0.7 in 7 days. Products'
    # share of their category, add-one smoothed: p1 3/4, p2 1/4 (Beauty), p3 2/4, p4 2/4 (Books); interests
    # Beauty 2.0, Books 0.5 -> category shares 0.8, 0.2.
    organic = {"p1": 0.8 * 3 / 4, "p2": 0.8 * 1 / 4, "p3": 0.2 * 2 / 4}
    expected = [1 - math.exp(-0.7 * organic["p1"]) * (1 - p1_shared),
                1 - math.exp(-0.7 * organic["p2"]),  # shared by u3 only, whom u1 muted: organic only
                1 - math.exp(-0.7 * organic["p3"]),  # shared before the window: organic only
                0.0]  # bought
    assert got == pytest.approx(expected, rel=1e-9)
    assert truth.shared(u1, page) == pytest.approx([p1_shared, 0.0, 0.0, 0.0])
    assert got.sum() == pytest.approx(sum(expected))


def test_without_fatigue_in_the_world_a_share_converts_at_its_base_probability(tmp_path: Path) -> None:
    dataset = load_dataset(tiny_world(tmp_path, fatigue=False))
    truth = TrueBehaviour.from_world(dataset, since=SINCE, at=AT, organic_days=0)
    u1 = list(dataset.users).index("u1")
    got = truth.conversion(u1, rows(dataset, "p1", "p2", "p3"))
    assert got == pytest.approx([1 - (1 - 0.1 * 2.0) * (1 - 0.3 * 2.0), 0.2 * 2.0, 0.0])


def test_a_log_of_successes_only_is_refused(tmp_path: Path) -> None:
    root = tiny_world(tmp_path)
    text = FILES["shares"].path(root).read_text().splitlines()
    FILES["shares"].path(root).write_text("\n".join(text[:3] + text[4:]) + "\n")  # s0000002 missing
    with pytest.raises(ValueError, match="--log all"):
        TrueBehaviour.from_world(load_dataset(root), since=SINCE, at=AT)
