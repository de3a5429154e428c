"""The feed replayed through a simulated world: expected purchases per page with and without the trust caps.

``sharerank eval-feed-replay``. The world is split in time at ``since`` (the ``train_fraction`` quantile of
purchase times). A model is fitted on what happened before it and served as ``sharerank train`` would serve it
(:func:`~sharerank.training.bundle.build_bundle`); the purchases and shares of ``[since, at]`` (``at = since +
window``) go into an in-process online store through the writes RecordEvents applies
(:func:`~sharerank.serving.events.recorder.live_writes`). Then one first page is served through the real feed
pipeline to each of a sample of the users who received shares in the window, by three pipelines over the same
model and store:

- ``capped``: the feed as served (per-sharer cap ``SHARERANK_FEED_SHARES_PER_SHARER``, share boosts scaled by
  fatigue with ``SHARERANK_FATIGUE_HALF_SHARES``);
- ``uncapped``: the same without the per-sharer cap;
- ``uncapped_no_fatigue``: neither the cap nor the fatigue scaling (the feed before them).

Each page is scored under the world's true behaviour (:class:`~sharerank.training.feed.true_behaviour.TrueBehaviour`):
its expected purchases, with a bootstrap interval over users and the paired difference between pipelines.
This layer (beside the demo, above training and serving) is the one allowed to run both.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sharerank.config import Settings
from sharerank.dataset.reader import Dataset, Interactions, Shares, load_dataset

UNCAPPED = 1_000_000
"""A per-sharer cap no feed reaches: the pipeline without the cap."""
NO_FATIGUE_HALF = 1e15
"""A fatigue half no user reaches: share boosts without the fatigue scaling."""
BOOTSTRAP = 2000
"""Bootstrap resamples (over users) behind each interval."""
ARMS = ("capped", "uncapped", "uncapped_no_fatigue")


def before(dataset: Dataset, since: float) -> Dataset:
    """``dataset`` as it was before ``since``: the purchases and shares earlier than it (the same users and
    catalogue, so rows agree with the whole world's)."""
    purchases = dataset.purchases.take(dataset.purchases.ts < since)
    shares = dataset.shares
    if shares is not None:
        early = shares.ts < since
        shares = Shares(*(getattr(shares, f.name)[early] for f in dataclasses.fields(Shares)))
    return dataclasses.replace(dataset, purchases=purchases, shares=shares, test=None, views=None,
                               fingerprint=f"{dataset.fingerprint}:before:{since:.0f}")


def live_records(dataset: Dataset, since: float, at: float, offset: float) -> list:
    """The purchases and shares of ``[since, at]`` as event-log records (times moved by ``offset``), in time order:
    what RecordEvents would have received."""
    from sharerank.serving.events.log import PurchaseRecord, ShareRecord

    users, products = dataset.users, dataset.products
    records: list[tuple[float, Any]] = []
    p: Interactions = dataset.purchases
    for i in np.flatnonzero((p.ts >= since) & (p.ts <= at)).tolist():
        records.append((p.ts[i], PurchaseRecord(f"replay-purchase-{i}", str(users[p.user[i]]),
                                                str(products[p.product[i]]), float(p.ts[i]) + offset)))
    s = dataset.shares
    if s is not None:
        for i in np.flatnonzero((s.ts >= since) & (s.ts <= at)).tolist():
            records.append((s.ts[i], ShareRecord(str(s.id[i]), str(users[s.sharer[i]]), str(users[s.recipient[i]]),
                                                 str(products[s.product[i]]), float(s.ts[i]) + offset)))
    records.sort(key=lambda r: r[0])
    return [record for _, record in records]


def pipelines(settings: Settings, store) -> dict[str, Any]:
    """The feed pipelines compared, by arm name (:data:`ARMS`)."""
    from sharerank.serving.feed.pipeline import FeedPipeline

    half = settings.fatigue_half_shares
    return {"capped": FeedPipeline(store, shares_per_sharer=settings.feed_shares_per_sharer, fatigue_half_shares=half),
            "uncapped": FeedPipeline(store, shares_per_sharer=UNCAPPED, fatigue_half_shares=half),
            "uncapped_no_fatigue": FeedPipeline(store, shares_per_sharer=UNCAPPED,
                                                fatigue_half_shares=NO_FATIGUE_HALF)}


def score_page(truth, bundle, user: int, products: list[int], shared: dict[int, str], roles: np.ndarray | None
               ) -> dict[str, float]:
    """One served page under the true behaviour: expected purchases in all and through shares, and what was on it
    (``shared``: product row → the sharer the feed attributes it to)."""
    rows = np.asarray(products, dtype=np.int64)
    conversion = truth.conversion(user, rows)
    through_shares = truth.shared(user, rows)
    sharers = [shared[p] for p in products if p in shared]
    user_rows = bundle.user_rows
    per_sharer = np.unique(sharers, return_counts=True)[1] if sharers else np.zeros(1, dtype=np.int64)
    muted = sum((user_rows[s], user) in truth.muted for s in sharers)
    spam = sum(roles[user_rows[s]] == "spammer" for s in sharers) if roles is not None else 0
    return {"expected_purchases": float(conversion.sum()),
            "through_shares": float(np.where(conversion > 0, through_shares, 0.0).sum()),
            "shown": len(products), "shared_shown": len(sharers), "max_from_one_sharer": int(per_sharer.max()),
            "from_muted_sharers": int(muted), "from_spammers": int(spam)}


def serve_and_score(arms: dict[str, Any], bundle, truth, user_ids: list[str], *, page_size: int,
                    roles: np.ndarray | None = None, progress: Callable[[str], None] = lambda m: None
                    ) -> dict[str, list[dict[str, float]]]:
    """One first page per user from each pipeline, scored by :func:`score_page`: ``{arm: [per user]}``."""
    from sharerank.serving.feed.hydrators.live_state import LiveStateHydrator
    from sharerank.serving.feed.query import FeedQuery

    out: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    live = next(h for h in next(iter(arms.values())).hydrators if isinstance(h, LiveStateHydrator))
    for n, user_id in enumerate(user_ids):
        user = bundle.user_rows[user_id]
        # The attribution the cap uses: the newest share of each product to the user (the sharer the page names);
        # the store is the same for every pipeline, so one read serves them all.
        query = live.hydrate(FeedQuery(
            user_id=user_id, page_size=page_size, categories=frozenset(), exclude_products=frozenset(),
            explain=False, model=bundle, user_row=user))
        shared = {row: share.sharer_id for row, share in query.shared.items()}
        for arm, pipeline in arms.items():
            page = pipeline.run(model=bundle, user_id=user_id, page_size=page_size)
            out[arm].append(score_page(truth, bundle, user, [item.product for item in page.items], shared, roles))
        if (n + 1) % 200 == 0:
            progress(f"feed replay: {n + 1}/{len(user_ids)} users served")
    return out


def summarise(scored: dict[str, list[dict[str, float]]], seed: int) -> dict[str, Any]:
    """Per arm the mean of each figure per page, expected purchases with a 95% bootstrap interval over users, and
    the paired differences against ``capped``."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(scored.values())))
    resample = rng.integers(0, n, size=(BOOTSTRAP, n)) if n else np.zeros((0, 0), dtype=np.int64)

    def interval(values: np.ndarray) -> list[float]:
        if not n:
            return [float("nan"), float("nan")]
        means = values[resample].mean(axis=1)
        return [round(float(x), 5) for x in np.percentile(means, [2.5, 97.5])]

    value = {arm: np.array([page["expected_purchases"] for page in pages]) for arm, pages in scored.items()}
    arms: dict[str, Any] = {}
    for arm, pages in scored.items():
        means = {key: round(float(np.mean([page[key] for page in pages])), 5) if pages else float("nan")
                 for key in pages[0]} if pages else {}
        arms[arm] = {**means, "expected_purchases_ci95": interval(value[arm]),
                     "pages_with_more_than_3_from_one_sharer": int(sum(p["max_from_one_sharer"] > 3 for p in pages))}
    differences = {}
    for arm in scored:
        if arm == "capped":
            continue
        diff = value["capped"] - value[arm]
        base = float(value[arm].mean()) if n else float("nan")
        differences[f"capped_minus_{arm}"] = {
            "expected_purchases": round(float(diff.mean()), 5) if n else float("nan"),
            "ci95": interval(diff), "relative": round(float(diff.mean()) / base, 4) if base else float("nan"),
            "pages_changed": int(sum(a != b for a, b in zip(scored["capped"], scored[arm], strict=True))),
        }
    return {"arms": arms, "differences": differences}


def run_feed_replay(data, settings: Settings, *, model: str = "itemknn", window_days: float = 7.0,
                    train_fraction: float = 0.8, users: int = 2000, page_size: int = 20, organic_days: float = 7.0,
                    seed: int = 0, progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Replays the feed through the simulated world at ``data``; returns the JSON report (see the module)."""
    from sharerank.dataset.reader import has_truth, read_truth
    from sharerank.serving.events.recorder import live_writes
    from sharerank.serving.online_store import InMemoryOnlineStore
    from sharerank.training.bundle import build_bundle
    from sharerank.training.feed.fit import fit_model
    from sharerank.training.feed.true_behaviour import TrueBehaviour
    from sharerank.training.jobs import training_split

    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if window_days <= 0 or users < 1 or not 1 <= page_size <= 500:
        raise ValueError("need window_days > 0, users >= 1 and page_size in 1..500")
    started = time.perf_counter()
    if not has_truth(data):
        raise ValueError(f"{data}: not a simulated world (no truth/): the replay scores pages by the true model")
    dataset = load_dataset(data, with_test=False)
    if dataset.shares is None or np.isnan(dataset.purchases.ts).any():
        raise ValueError(f"{data}: the replay needs shares.csv and purchase times")
    since = float(np.quantile(dataset.purchases.ts, train_fraction))
    at = since + window_days * 86_400.0
    truth = TrueBehaviour.from_world(dataset, since=since, at=at, organic_days=organic_days)
    progress(f"feed replay: pages at {at:.0f}, events replayed from {since:.0f}")

    progress(f"feed replay: fitting {model} on the events before the window")
    t0 = time.perf_counter()
    past = before(dataset, since)
    fitted = fit_model(model, past, training_split(past, seed))
    bundle = build_bundle(past, fitted.factors, {"model_type": model, "params": fitted.params})
    fit_seconds = time.perf_counter() - t0

    # The window's events replayed "now": the feed's recency decay and the store's fatigue window read the wall
    # clock, so every time moves by one offset that puts ``at`` at the moment the replay starts.
    offset = time.time() - at
    store = InMemoryOnlineStore(fatigue_window_s=settings.fatigue_window_seconds, clock=lambda: at + offset)
    records = live_records(dataset, since, at, offset)
    for start in range(0, len(records), 5000):
        for _, write, items in live_writes(store, records[start:start + 5000], bundle):
            write(items)
    s = dataset.shares
    in_window = (s.ts >= since) & (s.ts <= at)
    recipients = np.unique(s.recipient[in_window])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(recipients)[:users])
    user_ids = [str(dataset.users[u]) for u in sample]
    roles_table = read_truth(data, "users")
    role_of = dict(zip(roles_table.column("user_id").to_pylist(), roles_table.column("role").to_pylist(), strict=True))
    roles = np.array([role_of.get(str(u), "") for u in dataset.users], dtype=object)

    progress(f"feed replay: serving {len(user_ids)} users x {len(ARMS)} pipelines")
    t0 = time.perf_counter()
    scored = serve_and_score(pipelines(settings, store), bundle, truth, user_ids, page_size=page_size, roles=roles,
                             progress=progress)
    serve_seconds = time.perf_counter() - t0
    fatigue_truth = float(truth.fatigue.min()) < 1.0 or bool(truth.muted)
    return {
        "data": str(data),
        "world": {"users": dataset.num_users, "products": dataset.num_products, "shares": int(len(s.id)),
                  "fatigue": fatigue_truth, "mutes_by_then": len(truth.muted),
                  "rings": _has_rings(data)},
        "window": {"since": since, "at": at, "days": window_days, "train_fraction": train_fraction,
                   "shares_replayed": int(in_window.sum()), "events_replayed": len(records),
                   "recipients": int(len(recipients))},
        "model": {"name": model, "params": fitted.params, "fit_seconds": round(fit_seconds, 2)},
        "feed": {"page_size": page_size, "shares_per_sharer": settings.feed_shares_per_sharer,
                 "fatigue_half_shares": settings.fatigue_half_shares,
                 "fatigue_window_seconds": settings.fatigue_window_seconds},
        "behaviour": {"shared": "1 - prod over distinct sharers in the window of (1 - min(1, p_su * w(u, c)) * "
                                "tau_u / (tau_u + r_u)), 0 from a muted sharer",
                      "organic": f"1 - exp(-organic purchases per day * {organic_days} days * interest share of "
                                 "the category * the product's share of the category's organic purchases)",
                      "combined": "1 - (1 - organic) * (1 - shared); 0 once bought"},
        "users_served": len(user_ids), "seed": seed,
        **summarise(scored, seed),
        "seconds": {"fit": round(fit_seconds, 2), "serve": round(serve_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }


def _has_rings(data) -> bool:
    from sharerank.dataset.schema import TRUTH

    return TRUTH["rings"].path(data).exists()
