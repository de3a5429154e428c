"""Learned influence: the chance that ``v`` buys a product of category ``c`` because ``u`` did.

The trials come from :mod:`~sharerank.models.seeding.trials`: recorded shares whose recipient had not bought
the product yet (a log that records failed shares), or, for a log of successes only, the exposures of each
adopter's friends, failed unless the friend's adoption is credited to the adopter. A trial converted when a
purchase is attributed to it. The estimate is built in layers, each an empirical-Bayes posterior whose
prior is fitted by maximum marginal likelihood, never hand-set:

1. recipient affinity ``a(v, c)``: how much more than average ``v`` buys in ``c``: ``v``'s purchase mix
   shrunk towards their friends' mix, itself shrunk towards the global mix (Dirichlet priors; tastes
   cluster socially). A share converts far more often in a category its recipient likes;
2. category rate ``r_c``; a trial's expectation is ``r_c * a(v, c)`` (normalised within the category);
3. sender lift: the sender's conversions against those expectations, then per category against the
   overall lift (Beta prior). Senders are a mix of ordinary users, a few KOCs and spammers, a shape no
   Beta prior fits (one either crushes KOCs or leaves spammers far too high), so the overall lift's prior
   is nonparametric: a discrete distribution on a log grid (Kiefer-Wolfowitz). A spammer's many failed
   shares put them in its low mode with confidence; a KOC's conversions move them up;
4. recipient lift: the recipient's conversions against what their senders' lifts predict (Beta prior);
5. a complementary log-log regression on the logs of those (plus the cosine of the users' GNN embeddings
   when given) calibrates their combination; it is the model of arcs without history. Its training
   features leave the trial out, so no trial predicts itself;
6. a pair with history gets a lift ``(K + m) / (E + m)``: its conversions ``K`` against the ``E`` the
   regression expected (Gamma prior), so a pair's few shares move it only as far as pairs in the data
   really differ from what their sender and recipient explain.

Beside the rates: who starts cascades, and how often (:meth:`InfluenceModel.compliance`, the chance that a
seed asked to share does), and, where failed shares are recorded, each user's share propensity (the share of
their purchases they shared), which :meth:`InfluenceModel.probability` multiplies in.

A dataset with a given ``influence.csv`` is used as is: its arcs and probabilities, no learning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import scipy.sparse as sp
from scipy.optimize import minimize, minimize_scalar
from scipy.special import betaln, gammaln

from sharerank.dataset.reader import Dataset
from sharerank.models.seeding.cascades import initiations
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.trials import first_adoptions, learning_trials, share_trials
from sharerank.models.seeding.trials import lookup as _lookup

_EPS = 1e-6
_L2 = 1e-3  # ridge on the standardised regression weights: keeps them finite on separable toy data
_LIFT_GRID = np.geomspace(0.01, 100.0, 64)  # support of the sender-lift prior, fine enough to be continuous
HORIZON_FRACTION = 0.125
"""A launch's horizon, as a share of the training cascades: as many as start in a held-out tenth of a log split
80/10/10 by time."""
_FEATURES = ("log_sender_lift", "log_sender_category_lift", "log_recipient_lift", "log_recipient_affinity",
             "log_category_rate", "embedding_cosine")


@dataclass
class InfluenceModel:
    """Per-category arc probabilities learned from shares, or a given ``influence.csv`` (``coef`` None).

    Users are ``0..num_users-1`` and categories are ``categories``, as in the dataset it was fitted on;
    ``arrays`` and ``params`` hold the fitted statistics and prior strengths (see the module docstring).
    """

    num_users: int
    categories: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    params: dict[str, float]
    coef: np.ndarray | None  # regression weights on standardised features, intercept last
    info: dict = field(default_factory=dict)  # how it was learned: the regime and its counts (JSON-able)

    @classmethod
    def fit(cls, dataset: Dataset, *, user_embedding: np.ndarray | None = None,
            train_mask: np.ndarray | None = None, train_products: np.ndarray | None = None, regime: str = "auto",
            share_offset: np.ndarray | None = None, seed: int = 0) -> InfluenceModel:
        """Learns from the shares selected by ``train_mask`` (default: all) of the products selected by
        ``train_products`` (default: all; a cascade log's training cascades), or takes the dataset's given
        ``influence.csv``. Purchases after the last training share are not used, so a model fitted on the
        past can be scored honestly on later shares. ``regime`` picks how trials are read (see
        :mod:`~sharerank.models.seeding.trials`; ``auto``: the one the log shows); :attr:`info` says which
        was used and why. ``share_offset`` (one factor in (0, 1] per share; recorded regime only) is what fatigue
        left of each share's chance (:mod:`~sharerank.models.seeding.fatigue`): every expectation and the
        regression's hazard are multiplied by it, so the lifts and :meth:`conversion` describe a share to a fresh
        recipient. The fit is deterministic; ``seed`` is accepted for the common training signature."""
        del seed
        categories, product_cat = np.unique(dataset.category.astype(str), return_inverse=True)
        categories = tuple(str(c) for c in categories)
        if dataset.influence is not None:
            g = dataset.influence
            return cls(dataset.num_users, categories, {"arc_src": g.src, "arc_dst": g.dst, "given_p": g.value},
                       {}, None, {"regime": "given"})
        shares = dataset.shares
        if shares is None or len(shares.id) == 0:
            raise ValueError("cannot learn influence: the dataset has no shares.csv (and no influence.csv)")
        if user_embedding is not None and np.shape(user_embedding)[0] != dataset.num_users:
            raise ValueError(f"user_embedding has {len(user_embedding)} rows for {dataset.num_users} users")
        mask = np.ones(len(shares.id), dtype=bool) if train_mask is None else np.asarray(train_mask, dtype=bool)
        if mask.shape != shares.id.shape:
            raise ValueError(f"train_mask must have one flag per share ({len(shares.id)})")
        products = np.ones(dataset.num_products, dtype=bool) if train_products is None else \
            np.asarray(train_products, dtype=bool)
        if products.shape != (dataset.num_products,):
            raise ValueError(f"train_products must have one flag per product ({dataset.num_products})")
        mask = mask & products[shares.product]
        if not mask.any():
            raise ValueError("no shares to learn from (the masks select none)")
        cutoff = shares.ts[mask].max()
        bought = ~(dataset.purchases.ts > cutoff) & products[dataset.purchases.product]
        trials = learning_trials(dataset, mask, bought, regime)
        offset = _trial_offset(dataset, mask, trials.regime, share_offset)
        u, v = trials.sender, trials.recipient
        c, y = product_cat[trials.product], trials.converted.astype(np.float64)
        own = trials.counted.astype(np.float64)  # its purchase is counted below

        arc_src, arc_dst = _arcs(dataset)
        model = cls(dataset.num_users, categories, {"arc_src": arc_src, "arc_dst": arc_dst}, {}, None,
                    {"regime": trials.regime, **trials.info})
        a, p, k_cat, users = model.arrays, model.params, len(categories), dataset.num_users
        _fit_affinity(model, dataset.purchases.user[bought], product_cat[dataset.purchases.product[bought]])

        # Category rates (one pseudo-trial at the pooled rate); trial expectations r_c * a(v, c).
        trials_c = np.bincount(c, minlength=k_cat).astype(np.float64)
        fresh_c = trials_c if offset is None else np.bincount(c, offset, k_cat)  # trials at full strength
        a["category_rate"] = (np.bincount(c, y, k_cat) + y.mean()) / (fresh_c + 1.0)
        a["category_weight"] = trials_c / trials_c.sum()
        affinity = model._affinity(v, c, drop=own)
        a["affinity_norm"] = np.maximum(np.bincount(c, affinity, k_cat) / np.maximum(trials_c, 1), _EPS)
        expected = np.clip(a["category_rate"][c] * affinity / a["affinity_norm"][c], _EPS, 1 - _EPS)
        if offset is not None:
            expected = np.clip(expected * offset, _EPS, 1 - _EPS)

        # Sender lifts: overall (nonparametric prior), then per category (Beta prior; keys u * K + c).
        a["sender_n"] = np.bincount(u, minlength=users).astype(np.float64)
        a["sender_k"], a["sender_e"] = np.bincount(u, y, users), np.bincount(u, expected, users)
        a["sender_prior"] = _lift_prior(a["sender_k"], a["sender_e"])
        a["sender_lift"] = _posterior_lift(a["sender_k"], a["sender_e"], a["sender_prior"])
        a["sc_key"], inv = np.unique(u * k_cat + c, return_inverse=True)
        a["sc_n"] = np.bincount(inv).astype(np.float64)
        a["sc_k"], a["sc_e"] = np.bincount(inv, y), np.bincount(inv, expected)
        sc_prior = a["sc_e"] * a["sender_lift"][a["sc_key"] // k_cat]
        p["m_sender_category"] = _beta_strength(a["sc_k"], a["sc_n"], sc_prior)
        s_lift = _posterior_lift(a["sender_k"][u] - y, a["sender_e"][u] - expected, a["sender_prior"])
        n_c, k_c, e_c = model._user_category("sc", u, c, "sc_n", "sc_k", "sc_e")
        sc_lift = _lift(n_c - 1, k_c - y, (e_c - expected) * s_lift, p["m_sender_category"])

        # Recipient lifts against what their senders predict.
        by_sender = expected * s_lift * sc_lift
        a["recipient_n"] = np.bincount(v, minlength=users).astype(np.float64)
        a["recipient_k"], a["recipient_e"] = np.bincount(v, y, users), np.bincount(v, by_sender, users)
        p["m_recipient"] = _beta_strength(a["recipient_k"], a["recipient_n"], a["recipient_e"])
        r_lift = _lift(a["recipient_n"][v] - 1, a["recipient_k"][v] - y, a["recipient_e"][v] - by_sender,
                       p["m_recipient"])

        if user_embedding is not None:
            e = np.asarray(user_embedding, dtype=np.float32)
            a["embedding"] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        x = model._design(c, s_lift, sc_lift, r_lift, affinity, model._cosine(u, v))
        a["feature_mean"], a["feature_std"] = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
        log_offset = None if offset is None else np.log(offset)
        model.coef = _cloglog_fit((x - a["feature_mean"]) / a["feature_std"], y, log_offset)

        # Pair lifts against the regression's expectation (keys u * users + v).
        a["pair_key"], inv = np.unique(u * users + v, return_inverse=True)
        fitted = model._regression(x) if offset is None else _cloglog(model._hazard(x) + log_offset)
        a["pair_k"], a["pair_e"] = np.bincount(inv, y), np.bincount(inv, fitted)
        p["m_pair"] = _gamma_poisson_strength(a["pair_k"], a["pair_e"])
        p["trials"], p["conversions"] = float(len(y)), float(y.sum())
        if offset is not None:
            model.info["fatigue_offset_mean"] = round(float(offset.mean()), 4)
        _fit_propensities(model, dataset, mask, bought, products, trials.regime)
        return model

    def compliance(self, horizon: float | None = None) -> np.ndarray:
        """P(each user starts a cascade within ``horizon`` cascades of the log), the chance that a seed asked to
        share a launch actually does: ``1 - exp(-rate * horizon)``, the rate being the user's share of the
        cascades started in training, shrunk by a Gamma prior fitted to all users (most start none). The
        default horizon is :data:`HORIZON_FRACTION` of the training cascades. A given table: 1 for everyone."""
        if self.coef is None:
            return np.ones(self.num_users)
        a, p = self.arrays, self.params
        horizon = HORIZON_FRACTION * p["cascades"] if horizon is None else float(horizon)
        rate = (a["initiations"] + p["initiation_shape"]) / (p["initiation_rate"] + 1.0) / max(p["cascades"], 1.0)
        return -np.expm1(-rate * horizon)

    def probability(self, src: np.ndarray, dst: np.ndarray, category: str | None) -> np.ndarray:
        """P(``dst[i]`` buys a product in ``category`` because ``src[i]`` did): the sender shares it (their share
        propensity; already inside the rates of an exposure-learned model) and the share converts
        (:meth:`conversion`). None: averaged over the categories in proportion to how often each is shared."""
        q = self.conversion(src, dst, category)
        propensity = self.arrays.get("share_propensity")
        return q if propensity is None else q * propensity[np.asarray(src, dtype=np.int64)]

    def conversion(self, src: np.ndarray, dst: np.ndarray, category: str | None) -> np.ndarray:
        """P(a share ``src[i] -> dst[i]`` of a product in ``category`` converts) (an exposure-learned model: the
        chance that ``dst`` follows ``src``'s adoption); None: averaged over the categories in proportion to how
        often each is shared. A given table ignores the category."""
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        cat = self._category_index(category)
        if src.shape != dst.shape:
            raise ValueError("'src' and 'dst' must have the same length")
        if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= self.num_users):
            raise ValueError(f"user indices must lie in [0, {self.num_users})")
        if self.coef is None:
            return self._given(src, dst)
        if cat is not None:
            return self._predict(src, dst, [cat], [1.0])
        weight = self.arrays["category_weight"]
        return self._predict(src, dst, np.flatnonzero(weight), weight[weight > 0])

    def ic_graph(self, category: str | None = None, *, conversion: bool = False,
                 arc_factor: np.ndarray | None = None) -> ICGraph:
        """The IC graph over all users on the social arcs plus every sharer -> recipient pair (or the given
        table's arcs), with this model's probabilities for ``category`` (None: pooled); ``conversion``: a
        share's chance to convert alone, as if every activated user shared (:meth:`conversion`);
        ``arc_factor``: a factor in [0, 1] per arc (``arrays["arc_src"]`` order), e.g. fatigue's."""
        src, dst = self.arrays["arc_src"], self.arrays["arc_dst"]
        prob = (self.conversion if conversion else self.probability)(src, dst, category)
        if arc_factor is not None:
            if np.shape(arc_factor) != prob.shape:
                raise ValueError(f"arc_factor must have one entry per arc ({prob.size})")
            prob = np.clip(prob * arc_factor, 0.0, 1.0)
        return ICGraph.from_arcs(src, dst, prob, self.num_users)

    def sender_stats(self, user: int, category: str | None) -> tuple[int, int]:
        """(trials, conversions) of the user's shares in ``category`` (None: all), to explain a seed.
        Trials are the fitted shares whose recipient did not own the product yet; (0, 0) for a given table."""
        cat = self._category_index(category)
        if not 0 <= user < self.num_users:
            raise ValueError(f"user index {user} outside [0, {self.num_users})")
        if self.coef is None:
            return 0, 0
        a = self.arrays
        if cat is None:
            return int(a["sender_n"][user]), int(a["sender_k"][user])
        n, k = _lookup(a["sc_key"], np.int64(user * len(self.categories) + cat), a["sc_n"], a["sc_k"])
        return int(n), int(k)

    def save(self, path: Path) -> None:
        """Writes ``arrays.npz`` and ``model.json`` into the folder ``path`` (no pickle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "arrays.npz", **self.arrays)
        meta = {"num_users": self.num_users, "categories": list(self.categories), "params": self.params,
                "features": list(_FEATURES), "coef": None if self.coef is None else self.coef.tolist(),
                "info": self.info}
        (path / "model.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path) -> InfluenceModel:
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        coef = None if meta["coef"] is None else np.asarray(meta["coef"])
        return cls(meta["num_users"], tuple(meta["categories"]), arrays, meta["params"], coef, meta.get("info", {}))

    # ---------------------------------------------------------------------------------------- internals

    def _category_index(self, category: str | None) -> int | None:
        if category is None:
            return None
        try:
            return self.categories.index(category)
        except ValueError:
            known = ", ".join(self.categories[:20]) + (" ..." if len(self.categories) > 20 else "")
            raise ValueError(f"unknown category {category!r}; known categories: {known or '(none)'}") from None

    def _given(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Given table lookup (duplicate arcs merged as independent chances, as ICGraph does); 0 elsewhere."""
        a = self.arrays
        key, first, inv, count = np.unique(a["arc_src"] * self.num_users + a["arc_dst"], return_index=True,
                                           return_inverse=True, return_counts=True)
        merged = -np.expm1(np.bincount(inv, np.log1p(-np.minimum(a["given_p"], 1 - 1e-12))))
        return _lookup(key, src * self.num_users + dst, np.where(count == 1, a["given_p"][first], merged))[0]

    def _user_category(self, table: str, rows: np.ndarray, c, *fields: str) -> tuple[np.ndarray, ...]:
        """Fields of the sparse (user, category) table ``table`` at ``(rows, c)``, 0 where absent; ``c`` is an
        index per row or one index for all (then through a dense column, much faster on many rows)."""
        a, k_cat = self.arrays, len(self.categories)
        keys = a[f"{table}_key"]
        if np.ndim(c):
            return _lookup(keys, rows * k_cat + c, *(a[f] for f in fields))
        hit = keys % k_cat == c
        columns = [np.zeros(self.num_users) for _ in fields]
        for column, f in zip(columns, fields, strict=True):
            column[keys[hit] // k_cat] = a[f][hit]
        return tuple(column[rows] for column in columns)

    def _affinity(self, v, c, drop=0.0) -> np.ndarray:
        """a(v, c); ``drop`` removes purchases (a trial's own conversion) from v's counts."""
        a, p = self.arrays, self.params
        own, = self._user_category("own", v, c, "own_n")
        friends, = self._user_category("friend", v, c, "friend_n")
        mix = a["category_mix"][c]
        prior = (friends + p["m_friends"] * mix) / (a["friend_total"][v] + p["m_friends"])
        return (own - drop + p["m_own"] * prior) / (a["own_total"][v] - drop + p["m_own"]) / mix

    def _cosine(self, u, v) -> np.ndarray | None:
        e = self.arrays.get("embedding")
        return None if e is None else np.einsum("ij,ij->i", e[u], e[v]).astype(np.float64)

    def _design(self, c, s_lift, sc_lift, r_lift, affinity, cosine) -> np.ndarray:
        rate = np.broadcast_to(np.log(self.arrays["category_rate"][c]), np.shape(s_lift))
        cols = [np.log(s_lift), np.log(sc_lift), np.log(r_lift), np.log(affinity), rate]
        return np.column_stack(cols if cosine is None else [*cols, cosine])

    def _hazard(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.arrays["feature_mean"]) / self.arrays["feature_std"]
        return z @ self.coef[:-1] + self.coef[-1]

    def _regression(self, x: np.ndarray) -> np.ndarray:
        return _cloglog(self._hazard(x))

    def _predict(self, u: np.ndarray, v: np.ndarray, categories, weights) -> np.ndarray:
        """Weighted mean over ``categories`` (each one index, or an index per arc) of arc probabilities."""
        a, p = self.arrays, self.params
        k, e = _lookup(a["pair_key"], u * self.num_users + v, a["pair_k"], a["pair_e"])
        pair_lift = (k + p["m_pair"]) / (e + p["m_pair"])
        s_lift, cosine = a["sender_lift"][u], self._cosine(u, v)
        r_lift = _lift(a["recipient_n"][v], a["recipient_k"][v], a["recipient_e"][v], p["m_recipient"])
        out = np.zeros(len(u))
        for c, w in zip(categories, weights, strict=True):
            n_c, k_c, e_c = self._user_category("sc", u, c, "sc_n", "sc_k", "sc_e")
            sc_lift = _lift(n_c, k_c, e_c * s_lift, p["m_sender_category"])
            x = self._design(c, s_lift, sc_lift, r_lift, self._affinity(v, c), cosine)
            out += w * np.minimum(1.0, self._regression(x) * pair_lift)
        return out


# ------------------------------------------------------------------------------------------------ helpers


def _fit_affinity(model: InfluenceModel, buyer: np.ndarray, category: np.ndarray) -> None:
    """Purchase counts per (user, category), their friends' counts (over the arcs, either direction) and the
    two Dirichlet prior strengths that maximise the likelihood of users' own purchase mixes."""
    a, k_cat, users = model.arrays, len(model.categories), model.num_users
    own = sp.csr_matrix((np.ones(len(buyer)), (buyer, category)), shape=(users, k_cat))
    links = sp.csr_matrix((np.ones(len(a["arc_src"])), (a["arc_src"], a["arc_dst"])), shape=(users, users))
    friends = (((links + links.T) > 0).astype(np.float64) @ own).tocsr()
    for name, counts in (("own", own), ("friend", friends)):
        counts.sum_duplicates()
        counts.sort_indices()  # CSR row-major order = sorted keys row * K + column
        rows = np.repeat(np.arange(users, dtype=np.int64), np.diff(counts.indptr))
        a[f"{name}_key"], a[f"{name}_n"] = rows * k_cat + counts.indices, counts.data.astype(np.float64)
        a[f"{name}_total"] = np.asarray(counts.sum(axis=1)).ravel()
    a["category_mix"] = (np.bincount(category, minlength=k_cat) + 1.0) / (len(category) + k_cat)

    # Dirichlet-multinomial likelihood of each buyer's counts under Dirichlet(m_own * friends' smoothed mix);
    # categories a buyer never bought add nothing to it, so only the non-zero counts are visited.
    mix = a["category_mix"][a["own_key"] % k_cat]
    f_n = _lookup(a["friend_key"], a["own_key"], a["friend_n"])[0]
    f_total, totals = a["friend_total"][a["own_key"] // k_cat], a["own_total"][a["own_total"] > 0]

    def loglik(log_m: np.ndarray) -> float:
        m_own, m_friends = np.exp(np.clip(log_m, -5, 14))
        alpha = m_own * (f_n + m_friends * mix) / (f_total + m_friends)
        return float((gammaln(a["own_n"] + alpha) - gammaln(alpha)).sum()
                     + (gammaln(m_own) - gammaln(totals + m_own)).sum())

    best = (minimize(lambda t: -loglik(t), np.log([5.0, 5.0]), method="Nelder-Mead",
                     options={"xatol": 1e-3, "fatol": 1e-3}).x if len(totals) else np.zeros(2))
    model.params["m_own"], model.params["m_friends"] = (float(m) for m in np.exp(np.clip(best, -5, 14)))


def _fit_propensities(model: InfluenceModel, dataset: Dataset, share_mask: np.ndarray, purchase_mask: np.ndarray,
                      products: np.ndarray, regime: str) -> None:
    """Who starts cascades (counts and a Gamma prior on the rate: :meth:`InfluenceModel.compliance`) and, when
    failed shares are recorded, who shares what they bought: the share of each user's adoptions they shared,
    Beta-shrunk (an exposure-learned model's rates already hold it)."""
    a, p = model.arrays, model.params
    started, cascades = initiations(dataset, share_mask, products)
    a["initiations"], p["cascades"] = started.astype(np.float64), float(cascades)
    p["initiation_shape"], p["initiation_rate"] = _gamma_prior(a["initiations"])
    if regime != "recorded":
        return
    key, _ = first_adoptions(dataset, purchase_mask)
    shared = np.unique(dataset.shares.sharer[share_mask] * dataset.num_products + dataset.shares.product[share_mask])
    n = np.bincount(key // dataset.num_products, minlength=dataset.num_users).astype(np.float64)
    k = np.bincount(key[np.isin(key, shared)] // dataset.num_products, minlength=dataset.num_users).astype(np.float64)
    mu = np.full(len(n), np.clip(k.sum() / max(n.sum(), 1.0), _EPS, 1 - _EPS))
    p["m_share_propensity"] = _beta_strength(k, n, n * mu)
    a["share_propensity"] = (k + p["m_share_propensity"] * mu) / (n + p["m_share_propensity"])


def _trial_offset(dataset: Dataset, share_mask: np.ndarray, regime: str,
                  share_offset: np.ndarray | None) -> np.ndarray | None:
    """The per-share offset at the recorded trials (in :func:`learning_trials`' order); None without one."""
    if share_offset is None:
        return None
    share_offset = np.asarray(share_offset, dtype=np.float64)
    if share_offset.shape != dataset.shares.id.shape:
        raise ValueError(f"share_offset must have one factor per share ({len(dataset.shares.id)})")
    if np.isnan(share_offset).any() or share_offset.min() <= 0.0 or share_offset.max() > 1.0:
        raise ValueError("share_offset must lie in (0, 1]")
    if regime != "recorded":
        raise ValueError("share_offset needs a log of every share (the recorded regime)")
    trial, _, _ = share_trials(dataset)
    return share_offset[share_mask & trial]


def _gamma_prior(counts: np.ndarray) -> tuple[float, float]:
    """Shape and rate of the Gamma prior on per-user Poisson rates (unit exposure) that maximise the negative
    binomial likelihood of ``counts``."""
    def nll(t: np.ndarray) -> float:
        shape, rate = np.exp(np.clip(t, -12, 12))
        return -float((gammaln(counts + shape) - gammaln(shape) + shape * np.log(rate / (rate + 1.0))
                       - counts * np.log(rate + 1.0)).sum())

    best = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6}).x
    shape, rate = np.exp(np.clip(best, -12, 12))
    return float(shape), float(rate)


def _arcs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Social arcs plus sharer -> recipient pairs, deduplicated, sorted (int64)."""
    parts = [np.empty(0, dtype=np.int64)]
    if dataset.social is not None:
        parts.append(dataset.social.src * dataset.num_users + dataset.social.dst)
    if dataset.shares is not None:
        parts.append(dataset.shares.sharer * dataset.num_users + dataset.shares.recipient)
    key = np.sort(np.concatenate(parts))
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
    return key // dataset.num_users, key % dataset.num_users


def _lift(n, k, e, m) -> np.ndarray:
    """Beta-smoothed rate over the expected rate ``e / n``: (k + m mu) / (n + m) / mu; 1 without trials."""
    mu = np.clip(e / np.maximum(n, 1e-12), _EPS, 1 - _EPS)
    return np.where(n > 0, (k + m * mu) / (np.maximum(n, 0) + m) / mu, 1.0)


def _grid_likelihood(k: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson likelihood of ``k`` conversions where ``lift * e`` were expected, for every grid lift, on the
    distinct (k, e) pairs (e rounded to 0.5%, which moves no posterior visibly): (matrix, inverse, counts)."""
    bins = np.round(np.log(np.maximum(e, 1e-12)) * 200).astype(np.int64)
    key = np.round(k).astype(np.int64) * (1 << 20) + (bins - bins.min())
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    kk, ee = np.round(k[first])[:, None], np.exp(bins[first] / 200)[:, None]
    log_like = kk * np.log(_LIFT_GRID * ee) - _LIFT_GRID * ee
    return np.exp(log_like - log_like.max(axis=1, keepdims=True)), inverse.ravel(), counts


def _lift_prior(k: np.ndarray, e: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Weights of the discrete prior on ``_LIFT_GRID`` maximising the marginal likelihood of the senders'
    conversions (the nonparametric maximum likelihood of Kiefer and Wolfowitz, by EM)."""
    like, _, counts = _grid_likelihood(k[e > 0], e[e > 0])
    w, last, total = np.full(len(_LIFT_GRID), 1.0 / len(_LIFT_GRID)), -np.inf, counts.sum()
    for _ in range(1000):
        mixture = like @ w
        loglik = counts @ np.log(mixture)
        if loglik - last < tol * total:
            break
        w, last = w * (like.T @ (counts / mixture)) / total, loglik
    return w


def _posterior_lift(k: np.ndarray, e: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """E[lift | k, e] under the discrete prior; the prior mean where nothing was expected."""
    out = np.full(len(k), float(prior @ _LIFT_GRID))
    some = e > 1e-9
    if some.any():
        like, inverse, _ = _grid_likelihood(k[some], e[some])
        post = like * prior
        out[some] = (post @ _LIFT_GRID / post.sum(axis=1))[inverse]
    return out


def _maximise(loglik, low: float = 1e-2, high: float = 1e6) -> float:
    """argmax of a marginal log-likelihood over a prior strength, searched on a log scale."""
    res = minimize_scalar(lambda t: -loglik(np.exp(t)), bounds=(np.log(low), np.log(high)), method="bounded")
    return float(np.exp(res.x))


def _beta_strength(k, n, e) -> float:
    """Strength m of the Beta(m mu, m (1 - mu)) prior, mu = e / n, maximising the beta-binomial likelihood of
    the counts (groups of one trial say nothing about m and drop out by themselves)."""
    keep = n > 1
    if not keep.any():
        return 1.0
    k, n = k[keep], n[keep]
    mu = np.clip(e[keep] / n, _EPS, 1 - _EPS)
    return _maximise(lambda m: (betaln(k + m * mu, n - k + m * (1 - mu)) - betaln(m * mu, m * (1 - mu))).sum())


def _gamma_poisson_strength(k, e) -> float:
    """Shape m of the Gamma(m, m) prior on a pair's lift, with K ~ Poisson(lift * E): negative-binomial ML-II."""
    e = np.maximum(e, 1e-12)
    return _maximise(lambda m: (gammaln(k + m) - gammaln(m) + m * np.log(m / (m + e)) + k * np.log(e / (m + e))).sum())


def _cloglog(z: np.ndarray) -> np.ndarray:
    """P = 1 - exp(-exp(z)): a conversion hazard ``exp(z)`` that the lifts multiply; unlike the logit it
    does not flatten high rates (KOCs) into odds."""
    return -np.expm1(-np.exp(np.minimum(z, 30.0)))


def _cloglog_fit(x: np.ndarray, y: np.ndarray, log_offset: np.ndarray | None = None) -> np.ndarray:
    """L2-regularised complementary log-log regression by L-BFGS; weights then intercept. ``log_offset`` is
    added to every linear predictor (a known factor on the hazard, fatigue's)."""
    n, d = x.shape
    design = np.column_stack([x, np.ones(n)])
    shift = 0.0 if log_offset is None else log_offset

    def loss(w):
        hazard = np.maximum(np.exp(np.minimum(design @ w + shift, 30.0)), 1e-300)
        reg = _L2 * n * np.r_[w[:-1], 0.0]
        nll = (1 - y) @ hazard - y @ np.log(-np.expm1(-hazard)) + 0.5 * reg @ w
        with np.errstate(over="ignore"):  # expm1 of a huge hazard is inf: that trial's term is 0, as it should be
            dz = (1 - y) * hazard - y * hazard / np.expm1(hazard)
        return nll / n, (design.T @ dz + reg) / n

    w0 = np.r_[np.zeros(d), np.log(-np.log1p(-np.clip(y.mean(), _EPS, 1 - _EPS)))]
    return minimize(loss, w0, jac=True, method="L-BFGS-B").x


# ------------------------------------------------------------------------------------------- evaluation


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = np.clip(p, _EPS, 1 - _EPS)
    return {"log_loss": float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()),
            "brier": float(((p - y) ** 2).mean()), "mean_predicted": float(p.mean())}


def _reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-count bins of predictions: mean predicted vs observed rate."""
    order = np.argsort(p, kind="stable")
    return [{"count": int(len(b)), "mean_predicted": float(p[b].mean()), "observed": float(y[b].mean())}
            for b in np.array_split(order, bins) if len(b)]


def calibration_report(dataset: Dataset, *, holdout_fraction: float = 0.2, seed: int = 0) -> dict:
    """Fits on the earliest shares and scores the last ``holdout_fraction`` (by time) against a baseline:
    the category rate Beta-smoothed per sender x category only (prior strength fitted the same way). Both
    score the held-out trials (shares whose recipient did not own the product yet)."""
    if not 0 < holdout_fraction < 1:
        raise ValueError("holdout_fraction must be in (0, 1)")
    if dataset.shares is None:
        raise ValueError("a calibration report needs shares.csv")
    shares = dataset.shares
    order = np.argsort(shares.ts, kind="stable")
    train = np.zeros(len(order), dtype=bool)
    train[order[: int(round(len(order) * (1 - holdout_fraction)))]] = True
    model = InfluenceModel.fit(replace(dataset, influence=None), train_mask=train, seed=seed)
    trial, converted, _ = share_trials(dataset)
    cat = np.unique(dataset.category.astype(str), return_inverse=True)[1][shares.product]
    test = ~train & trial
    y = converted[test].astype(np.float64)
    model_p = model._predict(shares.sharer[test], shares.recipient[test], [cat[test]], [1.0])

    fit = train & trial
    k_cat, rate = len(model.categories), model.arrays["category_rate"]
    key, inv = np.unique(shares.sharer[fit] * k_cat + cat[fit], return_inverse=True)
    n, k = np.bincount(inv).astype(np.float64), np.bincount(inv, converted[fit].astype(np.float64))
    m = _beta_strength(k, n, n * rate[key % k_cat])
    n_t, k_t = _lookup(key, shares.sharer[test] * k_cat + cat[test], n, k)
    base_p = (k_t + m * rate[cat[test]]) / (n_t + m)
    return {
        "train_trials": int(fit.sum()), "test_trials": int(test.sum()), "test_conversions": int(y.sum()),
        "excluded_already_bought": int((~trial).sum()),
        "model": _scores(model_p, y), "baseline": _scores(base_p, y),
        "reliability": {"model": _reliability(model_p, y), "baseline": _reliability(base_p, y)},
        "params": dict(model.params), "coefficients": dict(zip(_FEATURES, model.coef[:-1].tolist(), strict=False)),
    }


def truth_report(dataset: Dataset, truth_dir: Path, model: InfluenceModel | None = None) -> dict:
    """Learned vs true ``min(1, p_uv * weight(v, c))`` on every arc of ``truth/influence.csv``, per category:
    Pearson correlation, mean absolute error and means. ``model`` defaults to a fit on all shares."""
    truth_dir = Path(truth_dir)
    model = model or InfluenceModel.fit(replace(dataset, influence=None))
    users = pa.array(dataset.users.astype(str).tolist())

    def index(column: pa.ChunkedArray) -> np.ndarray:
        return pc.fill_null(pc.index_in(column, value_set=users), -1).to_numpy().astype(np.int64)

    arcs = pcsv.read_csv(truth_dir / "influence.csv")
    src, dst = index(arcs.column("src_id")), index(arcs.column("dst_id"))
    keep = (src >= 0) & (dst >= 0)
    src, dst, p_uv = src[keep], dst[keep], arcs.column("p").to_numpy()[keep]
    interests = pcsv.read_csv(truth_dir / "interests.csv")
    who, weight = index(interests.column("user_id")), interests.column("weight").to_numpy()
    category = interests.column("category").to_numpy(zero_copy_only=False)
    report: dict = {"arcs": int(len(src)), "by_category": {}}
    true_all, pred_all = [], []
    for name in model.categories:
        rows = (category == name) & (who >= 0)
        w = np.zeros(model.num_users)
        w[who[rows]] = weight[rows]
        true, pred = np.minimum(1.0, p_uv * w[dst]), model.conversion(src, dst, name)
        report["by_category"][name] = _agreement(true, pred)
        true_all.append(true)
        pred_all.append(pred)
    report["overall"] = _agreement(np.concatenate(true_all), np.concatenate(pred_all))
    return report


def _agreement(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"correlation": float(np.corrcoef(true, pred)[0, 1]), "mae": float(np.abs(true - pred).mean()),
            "mean_true": float(true.mean()), "mean_predicted": float(pred.mean())}
