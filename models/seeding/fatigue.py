r"""Recipient fatigue for seeding: a share converts less when its recipient has received many shares lately, or
many from the same sender.

Two counts per share, both read from the share log alone:

- ``received``: shares its recipient received in the window ``(t - W, t]`` before it (the online store keeps
  the same count, ``SHARERANK_FATIGUE_WINDOW_SECONDS``);
- ``pair``: shares its sender had sent this recipient before it (people stop reading, or mute, a sender who
  keeps sending).

Fatigue is a factor on a share's chance to convert, one curve per count, learned from the log (not assumed):

.. math::
    P(\text{convert}) = q_{uv} \cdot \frac{H}{H + \text{received}} \cdot
        \frac{1 + (1/J)^s}{1 + ((\text{pair} + 1)/J)^s}

with ``q`` the influence model's chance for a fresh recipient. The first factor has the shape the feed uses
(``SHARERANK_FATIGUE_HALF_SHARES``); the second is the survival curve of a log-logistic threshold (people
mute a sender after a number of shares that varies from person to person). ``H``, ``J`` and ``s`` maximise the
Poisson likelihood of the conversions, alternately (:func:`fit_curves`), the overall scale profiled out. A
factor is kept only when it beats none by a likelihood-ratio test at :data:`SIGNIFICANCE` and by at least
:data:`MIN_GAIN_PER_TRIAL` of log-likelihood per trial; otherwise it is
flat, so a log without fatigue gives exactly the seeds it gave before fatigue was modelled.
:func:`fit_fatigue` alternates curves and influence fits (:meth:`InfluenceModel.fit` with ``share_offset``)
so the lifts describe persuasion net of fatigue.

At a launch, :class:`FatigueState` holds the counts at a snapshot time ``T`` (the log's last share unless
given): each recipient's shares in ``(T - W, T]`` and each pair's shares up to ``T``; the next share on an arc
is scaled by both factors. A recipient's *fatigue* is ``1 - H / (H + received_v)``: the share of a
fresh share's chance that their recent load takes away. A log of successes only (the exposure regime) or a
given influence table says nothing about failed shares: fatigue is off there (every factor 1) and
:attr:`FatigueState.info` says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import chi2

from sharerank.dataset.reader import Dataset
from sharerank.models.seeding.influence import InfluenceModel
from sharerank.models.seeding.trials import share_trials

DEFAULT_WINDOW_S = 7 * 86_400.0
"""Fatigue window W in seconds (the serving default, ``SHARERANK_FATIGUE_WINDOW_SECONDS``)."""
PAIR_EDGES = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 24, np.inf])
"""Bins of earlier shares from the same sender (the pair curve is fitted on, and read at, each bin's start)."""
SIGNIFICANCE = 0.001
"""A curve must beat a flat one at this level (likelihood ratio) to be used..."""
MIN_GAIN_PER_TRIAL = 4e-4
"""...and gain at least this much log-likelihood per trial (LR / 2 / trials): on a large log a small but
significant residual is no fatigue. Chosen on the validation worlds (``--users 20000 --seed 1``, never a
reported one): without fatigue the pair curve gains 3.5e-5 per trial (p = 0.0007: a selection effect, the
pairs with many shares are the ones the shrunk pair lifts overrate); with ``--fatigue-window-days 7`` the pair
curve gains 1.35e-3 and the received curve 9.8e-4."""
ROUNDS = 2
"""Curve / influence refits after the first fatigue-blind fit."""


@dataclass(frozen=True)
class FatigueCurves:
    """Factors on a share's chance: ``H / (H + received)`` for the shares its recipient received in the window
    (``half_shares`` H; inf: no effect), and the pair curve at each bin of earlier shares from the same sender
    (``pair``, over :data:`PAIR_EDGES`); both 1 at a count of 0 and non-increasing."""

    half_shares: float
    pair: np.ndarray
    info: dict = field(default_factory=dict)

    @classmethod
    def flat(cls, reason: str) -> FatigueCurves:
        return cls(np.inf, np.ones(len(PAIR_EDGES) - 1), {"off": reason})

    @property
    def is_flat(self) -> bool:
        return bool(np.isinf(self.half_shares) and np.all(self.pair == 1.0))

    def received_factor(self, received: np.ndarray) -> np.ndarray:
        received = np.asarray(received, dtype=np.float64)
        if np.isinf(self.half_shares):
            return np.ones(received.shape)
        return self.half_shares / (self.half_shares + received)

    def pair_factor(self, pair: np.ndarray) -> np.ndarray:
        return self.pair[_bin(PAIR_EDGES, pair)]

    def factor(self, received: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return self.received_factor(received) * self.pair_factor(pair)


def share_counts(dataset: Dataset, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per share (in the log's order): shares its recipient received in ``(t - window_s, t]`` before it, and
    shares its sender sent that recipient before it. Ties in time go by log order."""
    shares = dataset.shares
    row = np.arange(len(shares.id))
    ts = shares.ts.astype(np.float64)
    order = np.lexsort((row, ts, shares.recipient))
    rec, t = shares.recipient[order], ts[order]
    # Position in the (recipient, time) order minus the first position of the same recipient inside the window:
    # one search over keys recipient * span + time (span exceeds every time, so recipients never mix).
    t = t - (t.min(initial=0.0) - window_s - 1.0)
    span = float(t.max(initial=0.0) + 1.0)
    key = rec * span + t
    first_in_window = np.searchsorted(key, rec * span + (t - window_s), side="right")
    received = np.empty(len(order), dtype=np.int64)
    received[order] = np.arange(len(order)) - first_in_window
    pair_key = shares.sharer * dataset.num_users + shares.recipient
    order = np.lexsort((row, ts, pair_key))
    key = pair_key[order]
    start = np.r_[True, key[1:] != key[:-1]]
    block_start = np.maximum.accumulate(np.where(start, np.arange(len(key)), 0))
    pair = np.empty(len(order), dtype=np.int64)
    pair[order] = np.arange(len(key)) - block_start
    return received, pair


def fit_curves(converted: np.ndarray, q: np.ndarray, received: np.ndarray, pair: np.ndarray,
               iterations: int = 10) -> FatigueCurves:
    """``H`` and the pair curve ``B`` with ``E[converted] = c * q * H / (H + received) * B(pair)`` over the given
    trials (``c`` absorbs the scale of ``q``; see the module); each left flat where the likelihood-ratio test
    does not reject a flat one (1 degree of freedom for ``H``, 2 for ``J`` and ``s``)."""
    y = np.asarray(converted, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    received = np.asarray(received, dtype=np.float64)
    pb = _bin(PAIR_EDGES, pair)
    n_p = len(PAIR_EDGES) - 1
    half, b = np.inf, np.ones(n_p)
    y_p = np.bincount(pb, y, n_p)
    centres = np.r_[PAIR_EDGES[:-2], PAIR_EDGES[-2]]  # each bin's smallest count
    for _ in range(iterations):
        half = _half_shares(y, q * b[pb], received)
        a = _hyperbolic(half, received)
        e_p = np.bincount(pb, q * a, n_p)
        b = _log_logistic(y_p, e_p, centres)
    a = _hyperbolic(half, received)
    e_p = np.bincount(pb, q * a, n_p)
    lr_received = 2.0 * (_profile_loglik(y, q * b[pb], a) - _profile_loglik(y, q * b[pb], np.ones(len(y))))
    flat = y_p.sum() / max(e_p.sum(), 1e-12)
    scale = y_p.sum() / max((e_p * b).sum(), 1e-12)
    lr_pair = _deviance(y_p, e_p * flat) - _deviance(y_p, e_p * b * scale)
    tests = {"received": {"lr": round(float(lr_received), 2), "p_value": float(chi2.sf(lr_received, 1))},
             "pair": {"lr": round(float(lr_pair), 2),
                      "p_value": float(chi2.sf(lr_pair, 2))}}
    for test in tests.values():
        test["gain_per_trial"] = round(test["lr"] / 2.0 / max(len(y), 1), 6)
        test["used"] = test["p_value"] < SIGNIFICANCE and test["gain_per_trial"] >= MIN_GAIN_PER_TRIAL
    half = half if tests["received"]["used"] else np.inf
    b = b if tests["pair"]["used"] else np.ones(n_p)
    info = {"tests": tests, "trials": int(len(y)), "half_shares": None if np.isinf(half) else round(float(half), 4),
            "pair_factor": np.round(b, 4).tolist()}
    if np.isinf(half) and not tests["pair"]["used"]:
        info["off"] = "no fatigue in the log (neither count lowers conversion significantly)"
    return FatigueCurves(float(half), b, info)


def fit_fatigue(dataset: Dataset, *, window_s: float = DEFAULT_WINDOW_S, user_embedding: np.ndarray | None = None,
                rounds: int = ROUNDS, seed: int = 0) -> tuple[InfluenceModel, FatigueCurves]:
    """The influence model and the fatigue curves, fitted together (see the module): a fatigue-blind fit,
    curves on its predictions, then ``rounds`` refits of the influence model with the curves as a per-share
    offset and of the curves on its fresh-recipient predictions. Fatigue off (flat curves, the blind model
    as it was) without a log of failed shares, or when the curves are not significant.

    Raises:
        ValueError: a non-positive window, or what :meth:`InfluenceModel.fit` raises.
    """
    if not window_s > 0:
        raise ValueError(f"the fatigue window must be positive (got {window_s} s)")
    model = InfluenceModel.fit(dataset, user_embedding=user_embedding, seed=seed)
    if model.coef is None:
        return model, FatigueCurves.flat("a given influence table (no share log to read fatigue from)")
    if model.info.get("regime") != "recorded":
        return model, FatigueCurves.flat("a log of successes only: failed shares, and so fatigue, are not seen")
    trial, converted, _ = share_trials(dataset)
    received, pair = share_counts(dataset, window_s)
    shares = dataset.shares
    cat = np.unique(dataset.category.astype(str), return_inverse=True)[1][shares.product[trial]]
    u, v, y = shares.sharer[trial], shares.recipient[trial], converted[trial]
    curves = fit_curves(y, model._predict(u, v, [cat], [1.0]), received[trial], pair[trial])
    if curves.is_flat:
        return model, curves
    for _ in range(rounds):
        offset = np.clip(curves.factor(received, pair), 1e-6, 1.0)  # the hazard's log offset stays finite
        model = InfluenceModel.fit(dataset, user_embedding=user_embedding, share_offset=offset, seed=seed)
        curves = fit_curves(y, model._predict(u, v, [cat], [1.0]), received[trial], pair[trial])
        if curves.is_flat:  # only with a blind model do flat curves mean what they say
            return InfluenceModel.fit(dataset, user_embedding=user_embedding, seed=seed), curves
    curves.info.update(window_s=float(window_s), rounds=rounds)
    return model, curves


@dataclass
class FatigueState:
    """Fatigue at a launch: the curves, each user's shares received in ``(at_ts - window_s, at_ts]`` and the
    factor on every arc of the influence model (``arc_factor``, aligned with its ``arc_src`` / ``arc_dst``)."""

    curves: FatigueCurves
    window_s: float
    at_ts: float
    received: np.ndarray
    arc_factor: np.ndarray

    @classmethod
    def snapshot(cls, dataset: Dataset, influence: InfluenceModel, curves: FatigueCurves, *,
                 window_s: float = DEFAULT_WINDOW_S, at_ts: float | None = None) -> FatigueState:
        """Counts from the shares up to ``at_ts`` (default: the last share's time)."""
        src, dst = influence.arrays["arc_src"], influence.arrays["arc_dst"]
        n = dataset.num_users
        received = np.zeros(n)
        pair = np.zeros(len(src))
        shares = dataset.shares
        if at_ts is None:
            at_ts = float(shares.ts.max()) if shares is not None and len(shares.id) else 0.0
        if shares is not None and len(shares.id):
            before = shares.ts <= at_ts
            recent = before & (shares.ts > at_ts - window_s)
            received = np.bincount(shares.recipient[recent], minlength=n).astype(np.float64)
            keys, counts = np.unique(shares.sharer[before] * n + shares.recipient[before], return_counts=True)
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, src * n + dst), len(keys) - 1)
                pair = np.where(keys[pos] == src * n + dst, counts[pos], 0).astype(np.float64)
        arc_factor = curves.received_factor(received)[dst] * curves.pair_factor(pair)
        return cls(curves, float(window_s), float(at_ts), received, arc_factor)

    @classmethod
    def off(cls, influence: InfluenceModel, reason: str) -> FatigueState:
        return cls(FatigueCurves.flat(reason), DEFAULT_WINDOW_S, 0.0, np.zeros(influence.num_users),
                   np.ones(len(influence.arrays["arc_src"])))

    @property
    def active(self) -> bool:
        return not self.curves.is_flat

    def recipient_fatigue(self) -> np.ndarray:
        """Per user, ``1 - H / (H + received)``: the share of a fresh share's chance their recent load takes away."""
        return 1.0 - self.curves.received_factor(self.received)

    def info(self) -> dict:
        return {"active": self.active, "window_s": self.window_s, "at_ts": self.at_ts, **self.curves.info}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "fatigue.npz", received=self.received, arc_factor=self.arc_factor,
                            pair_curve=self.curves.pair)
        half = None if np.isinf(self.curves.half_shares) else self.curves.half_shares
        (path / "fatigue.json").write_text(json.dumps({"window_s": self.window_s, "at_ts": self.at_ts,
                                                       "half_shares": half, "info": self.curves.info}))

    @classmethod
    def load(cls, path: Path) -> FatigueState:
        path = Path(path)
        meta = json.loads((path / "fatigue.json").read_text())
        with np.load(path / "fatigue.npz", allow_pickle=False) as z:
            half = np.inf if meta["half_shares"] is None else float(meta["half_shares"])
            curves = FatigueCurves(half, z["pair_curve"], meta["info"])
            return cls(curves, meta["window_s"], meta["at_ts"], z["received"], z["arc_factor"])


def _hyperbolic(half: float, received: np.ndarray) -> np.ndarray:
    return np.ones(received.shape) if np.isinf(half) else half / (half + received)


def _profile_loglik(y: np.ndarray, expected: np.ndarray, factor: np.ndarray) -> float:
    """Poisson log-likelihood of ``y`` under means ``c * expected * factor``, ``c`` at its maximum."""
    mean = expected * factor
    keep = mean > 0
    return float((y[keep] * np.log(mean[keep])).sum() - y.sum() * np.log(max(mean.sum(), 1e-300)))


def _half_shares(y: np.ndarray, expected: np.ndarray, received: np.ndarray) -> float:
    """The H maximising the profile likelihood of ``H / (H + received)``; inf when the best H is the largest
    searched (no effect)."""
    res = minimize_scalar(lambda t: -_profile_loglik(y, expected, np.exp(t) / (np.exp(t) + received)),
                          bounds=(np.log(0.05), np.log(1e4)), method="bounded")
    return float(np.exp(res.x)) if res.x < np.log(1e4) - 0.01 else np.inf


def _log_logistic(y: np.ndarray, expected: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """The survival curve ``1 / (1 + ((j + 1) / J) ** s)`` (times ``1 / (1 + (1 / J) ** s)``, so 1 at ``j = 0``)
    maximising the Poisson likelihood of ``y`` per pair bin, the scale ``c`` profiled out."""
    def curve(t: np.ndarray) -> np.ndarray:
        scale, shape = np.exp(np.clip(t, np.log([0.5, 0.1]), np.log([1e4, 30.0])))
        raw = 1.0 / (1.0 + np.exp(np.minimum(shape * np.log((pair + 1.0) / scale), 700.0)))
        return raw / raw[0]

    best = minimize(lambda t: -_profile_loglik(y, expected, curve(t)), np.log([8.0, 3.0]), method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-6})
    return curve(best.x)


def _bin(edges: np.ndarray, counts) -> np.ndarray:
    return np.clip(np.searchsorted(edges, np.asarray(counts, dtype=np.float64), side="right") - 1, 0,
                   len(edges) - 2)


def _deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Poisson deviance of counts ``y`` against means ``mu`` (bins with no expectation left out)."""
    keep = mu > 0
    y, mu = y[keep], mu[keep]
    ratio = np.where(y > 0, y / mu, 1.0)
    return float(2.0 * (y * np.log(ratio) - (y - mu)).sum())
