"""The model to serve, chosen on validation only: every family of the registry tuned within a budget on a
validation split carved from the training data, the winner refit on training + validation. The budget bounds
the whole fit: the search, training on, the blend's check and the refit, whose cost each trial estimates (a
graph model's epochs, a baseline's fit and the time its served form takes) and the search keeps back.

Each family first runs with its defaults, then the starting settings its registry entry lists, then Optuna
(TPE, seeded) tunes the settings the entry names, up to its trial count and its share of the budget (what a
family leaves unspent goes to the next ones); a graph family whose defaults their time cut short is not tuned.
A trial is scored by Recall@20 (NDCG@20 breaking ties) on the
validation purchases of up to :data:`TUNING_USERS` users, products bought in training excluded; baselines are
scored as themselves, graph models by their best epoch. Last, the two best families are tried as a weighted sum
(:mod:`~sharerank.training.feed.blend`), chosen only when it beats both by a margin. Nothing here reads a test
split: ``sharerank eval`` alone does.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from sharerank import progress
from sharerank.dataset.reader import Dataset
from sharerank.models.recommenders.graph import interaction_matrix
from sharerank.models.recommenders.registry import model_names, spec
from sharerank.training.feed import distributed
from sharerank.training.feed.blend import BLEND, MIN_GAIN, fit_blend, members
from sharerank.training.feed.blend import search as search_blend
from sharerank.training.feed.blend import search_seconds as blend_search_seconds
from sharerank.training.feed.evaluate import rank
from sharerank.training.feed.fit import Fitted, SkippedModel, fit_model, known_interactions, train_config
from sharerank.training.feed.metrics import evaluate_ranking
from sharerank.training.feed.split import Split

log = logging.getLogger(__name__)

TUNING_USERS = 5000
DEFAULT_BUDGET_SECONDS = 900.0
"""Seconds for the whole fit. Until session 12 the budget (540 s) bounded the search and training on, 75% / 25%,
and the blend's check and the refit came on top (Ciao: 305 s of search, the GNN trained on 270 s, the blend's
check 68 s and the refit 165 s): 900 s with 45% for the search keeps the search's 405 s and leaves the rest
room, now inside the budget. (At 800 s Ciao's blend missed the time it needed by 2 s.)"""
SEARCH_SHARE = 0.45
"""The share of the budget the families' search gets, less what the refit of the best family so far would take.
The rest lets the best graph model whose trials were cut short by time train on until validation stops
improving: a trial gets a few epochs of a family's share (Ciao: 1-3 where 11 were best), so both the choice and a
refit for the trial's epoch count would judge and serve an undertrained model. It is skipped when even the
model's recent pace could not reach the leader in that time; then the blend's check and the refit."""


@dataclass(frozen=True)
class Trial:
    """One trial of the search: the family, its number within the family, the settings tried, the validation
    figures, and a graph model's per-epoch curve (empty for a baseline)."""

    name: str
    index: int
    params: dict[str, Any]
    figures: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


TrialCallback = Callable[[Trial], None]


@dataclass
class Choice:
    """The validation winner: its family, settings and validation figures, and every family's best."""

    name: str
    params: dict[str, Any]
    validation: dict[str, float]
    families: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"chosen": self.name, "params": self.params, "validation": self.validation, "families": self.families}


@dataclass(frozen=True)
class Validation:
    """What every trial is scored against: the training part (excluded from rankings), the validation
    purchases and the users they are scored on."""

    dataset: Dataset
    split: Split
    train: sp.csr_matrix
    valid: sp.csr_matrix
    users: np.ndarray
    popularity: np.ndarray

    @property
    def growth(self) -> float:
        """How much more data the refit fits than a trial: training + validation over training purchases."""
        return (self.train.nnz + self.valid.nnz) / max(self.train.nnz, 1)

    @classmethod
    def of(cls, dataset: Dataset, split: Split, seed: int = 0) -> Validation:
        """Raises ValueError when there is no validation purchase to choose on."""
        if len(split.valid) == 0:
            raise ValueError("automatic choice needs validation purchases (users with at least two purchases)")
        train = interaction_matrix(split.train, dataset.num_users, dataset.num_products)
        valid = interaction_matrix(split.valid, dataset.num_users, dataset.num_products)
        users = np.flatnonzero(np.diff(valid.indptr))
        users = np.sort(np.random.default_rng(seed).permutation(users)[:TUNING_USERS])
        return cls(dataset, split, train, valid, users, np.asarray(train.sum(axis=0)).ravel())


def score_trial(name: str, params: dict[str, Any],
                validation: Validation) -> tuple[dict[str, float], dict[str, Any], list[dict[str, float]]]:
    """Fits ``name`` (a family, or :data:`~sharerank.training.feed.blend.BLEND` with its members' settings)
    with ``params`` on the training part and scores it on validation, as every trial is: a baseline or a blend
    as itself on :data:`TUNING_USERS` users, a graph model by its best epoch. Returns the figures
    (``val_recall_20``, ``val_ndcg_20``, ``seconds``...), the settings that reproduce it (a graph model's
    with the epoch count its refit should run) and a graph model's per-epoch curve.

    Raises:
        SkippedModel: the model cannot run on this dataset here.
    """
    figures, settings, history, _ = _fit_and_score(name, params, validation)
    return figures, settings, history


def _fit_and_score(name: str, params: dict[str, Any],
                   validation: Validation) -> tuple[dict[str, float], dict[str, Any], list[dict[str, float]], Fitted]:
    """:func:`score_trial` and the model it fitted (kept by the search for a blend)."""
    started = time.perf_counter()
    if name == BLEND:
        fitted = fit_blend(params, lambda member, settings: fit_model(
            member, validation.dataset, validation.split, settings, refit=False, served=False),
            validation.users, served=False)
    else:
        fitted = fit_model(name, validation.dataset, validation.split, params, refit=False, served=False)
    trainable = name != BLEND and spec(name).trainable
    if trainable:
        figures = _best_epoch(fitted)
    else:
        ranking = time.perf_counter()
        top, _ = rank(fitted.scorer, validation.users, validation.train, 20)
        scores = evaluate_ranking(top, validation.valid, validation.users, validation.dataset.num_products,
                                  validation.popularity, ks=(20,))
        figures = {"val_recall_20": float(scores["Recall@20"]), "val_ndcg_20": float(scores["NDCG@20"]),
                   "rank_seconds": time.perf_counter() - ranking}
        if name != BLEND:
            served = getattr(fitted.model, "served_seconds", None)
            figures["refit_seconds"] = fitted.fit_seconds * validation.growth + (served() if served else 0.0)
    figures["seconds"] = time.perf_counter() - started
    settings = {key: value for key, value in params.items() if key != "max_seconds"}  # a trial's budget
    history = list(fitted.result.history) if fitted.result is not None else []
    if trainable:
        config = train_config(name, settings)
        ran, best = len(history), int(fitted.result.best_epoch)
        figures["converged"] = float(ran >= config.epochs or ran - best >= config.patience)
        figures["epochs_run"] = float(ran)
        figures.update(_pace(history))
        training = float(np.median([h["epoch_seconds"] for h in history])) if history else 0.0
        figures["rank_seconds"] = max(figures["epoch_seconds"] - training, 0.0)  # one validation pass
        figures["refit_seconds"] = max(best, 1) * training * validation.growth  # the best epoch's count, no validation
    return figures, {**settings, **_epochs(fitted)}, history, fitted


def choose(dataset: Dataset, split: Split, *, budget_seconds: float = DEFAULT_BUDGET_SECONDS,
           families: list[str] | None = None, fixed: dict[str, Any] | None = None, seed: int = 0,
           on_trial: TrialCallback | None = None, search_share: float = SEARCH_SHARE, blend: bool = True) -> Choice:
    """Tunes every servable family (or ``families``) on ``split.valid`` and returns the best; with ``fixed``
    settings each family runs once, with them, untuned. ``budget_seconds`` bounds the whole fit, the winner's
    refit (:func:`fit_choice`) included. Each family gets an equal share of what is left of the search's part
    (``search_share`` of the budget, less the largest refit a family scored so far would need); one whose single
    fit is known to need more (EASE on many products) is skipped, and a graph model whose defaults did not reach
    their early stop in their slice of the share is not tuned. Then the best graph model whose trials were
    stopped by their time share rather than by validation trains once more, to its early stop, on what the
    budget has left after the refit it would then need, the leader's refit and the blend's check (a few epochs
    can leave it behind a baseline it beats when trained: Ciao, 1 epoch of the share-aware GNN against tuned
    item-kNN); a graph model's refit runs the epoch count its best run found. With ``blend`` (and no ``fixed``
    settings) the two best families are also tried as a weighted sum when its check and both members' refits fit
    in what is left; it wins only by at least :data:`~sharerank.training.feed.blend.MIN_GAIN` over the better of
    them.

    Raises:
        ValueError: there is no validation purchase to choose on, or no family could run.
    """
    import optuna

    validation = Validation.of(dataset, split, seed)
    has_links = len(dataset.network_arcs()[0]) > 0
    names = families or model_names(servable=True)
    deadline = time.monotonic() + budget_seconds
    search_deadline = time.monotonic() + search_share * budget_seconds
    results: dict[str, dict[str, Any]] = {}
    kept: dict[str, tuple[float, float, Fitted]] = {}  # each family's best model so far, for the blend
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for position, name in enumerate(names):
        entry = spec(name)
        space, starts = _tuned(entry, has_links)
        reserve = max((r["refit_seconds"] for r in results.values() if "refit_seconds" in r), default=0.0)
        share = max(0.0, (min(search_deadline, deadline - reserve) - time.monotonic()) / (len(names) - position))
        family_deadline = time.monotonic() + share
        trials: list[tuple[float, float, dict[str, Any], dict[str, float]]] = []

        def run(params: dict[str, Any], index: int, name: str = name, entry=entry, trials=trials,
                family_deadline: float = family_deadline) -> float:
            if entry.trainable:  # a graph model stops when its share of the family's time is spent
                room = max(1.0, (family_deadline - time.monotonic()) / max(entry.trials - index, 1))
                params = {**params, "max_seconds": room}
            figures, settings, history, fitted = _fit_and_score(name, params, validation)
            trials.append((figures["val_recall_20"], figures["val_ndcg_20"], settings, figures))
            if blend and fixed is None:
                _keep(kept, name, figures, fitted)
            progress.note(f"{name} trial {index}: val_recall@20 {figures['val_recall_20']:.4f}")
            if on_trial is not None:
                on_trial(Trial(name, index, params, figures, history))
            log.info("auto: %s trial %d %s -> %s", name, index, params, figures)
            return figures["val_recall_20"]

        needs = getattr(entry.load(), "seconds_required", None) if not entry.trainable else None
        if needs is not None and needs(dataset.num_products) > share:
            results[name] = {"skipped": f"one fit needs ~{needs(dataset.num_products):.0f} s on "
                                        f"{dataset.num_products:,} products, more than its {share:.0f} s share"}
            continue
        try:
            run(dict(fixed or {}), 0)
            # Trials that stop before validation does would compare settings by how fast they start, not by
            # where they end: a graph family whose defaults were cut short by time is not tuned, and the time
            # it leaves goes to the families after it and to training the best such model on.
            defaults_cut_short = entry.trainable and not trials[0][3]["converged"]
            if fixed is None and space and entry.trials > 1 and not defaults_cut_short \
                    and time.monotonic() < family_deadline:
                study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
                for start in starts:
                    study.enqueue_trial(_with_defaults(entry, space, start), skip_if_exists=True)
                study.optimize(lambda trial, space=space: run(_suggest(trial, space), trial.number + 1),
                               n_trials=entry.trials - 1, timeout=max(family_deadline - time.monotonic(), 0.0))
        except SkippedModel as exc:
            results[name] = {"skipped": str(exc)}
            continue
        recall, ndcg, params, figures = max(trials, key=lambda t: (t[0], t[1]))
        results[name] = {"val_recall_20": recall, "val_ndcg_20": ndcg, "params": params, "trials": len(trials),
                         "refit_seconds": figures["refit_seconds"], "rank_seconds": figures["rank_seconds"]}
        if entry.trainable:
            results[name].update(converged=bool(figures["converged"]), epochs_run=int(figures["epochs_run"]),
                                 epoch_seconds=figures["epoch_seconds"], recent_gain=figures.get("recent_gain"))
    if not any("skipped" not in r for r in results.values()):
        raise ValueError(f"no model could run here: {results}")
    cut_short = [(r["val_recall_20"], r["val_ndcg_20"], n) for n, r in results.items()
                 if "skipped" not in r and not r.get("converged", True)]
    name = max(cut_short)[2] if cut_short else None
    others = [(r["val_recall_20"], r["val_ndcg_20"], n) for n, r in results.items() if n != name and "skipped" not in r]
    leader = max(others, default=None)
    # the blend's weighing of its members' scores, timed once for training on's room and the blend's own check
    weighing = blend_search_seconds(validation.users, validation.train) if blend and fixed is None else None
    if name is not None:
        room = _training_room(results[name], None if leader is None else results[leader[2]],
                              deadline - time.monotonic(), weighing)
        # read off the clock: rank 0 decides for all
        go = room > (results[name]["epochs_run"] + 1) * results[name]["epoch_seconds"] \
            and _may_catch_up(results[name], leader[0] if leader else 0.0, room)
        if distributed.agree([float(go)])[0]:
            figures, fitted = _train_on(name, results[name], room, fixed, validation, on_trial)
            if blend and fixed is None:
                _keep(kept, name, figures, fitted, ties=True)  # as the family's figures: a tie goes to the longer run
    ranked = [(r["val_recall_20"], r["val_ndcg_20"], n) for n, r in results.items() if "skipped" not in r]
    if blend and fixed is None and len(ranked) >= 2:
        best_two = [name for *_, name in sorted(ranked, reverse=True)[:2]]
        needs = sum(results[n]["rank_seconds"] + results[n]["refit_seconds"] for n in best_two) + weighing
        if distributed.agree([float(needs <= deadline - time.monotonic())])[0]:
            _try_blend(best_two, results, kept, validation, on_trial)
            gain = results[BLEND]["val_recall_20"] / max(max(ranked)[0], results[BLEND]["members_recall_20"], 1e-12)
            if gain >= 1.0 + MIN_GAIN:
                ranked.append((results[BLEND]["val_recall_20"], results[BLEND]["val_ndcg_20"], BLEND))
        else:
            results[BLEND] = {"skipped": f"its check and both refits need ~{needs:.0f} s, "
                                         f"{max(deadline - time.monotonic(), 0.0):.0f} s of the budget left"}
    recall, ndcg, winner = max(ranked)
    best = results[winner]
    return Choice(winner, best["params"], {"val_recall_20": recall, "val_ndcg_20": ndcg}, results)


def _train_on(name: str, family: dict[str, Any], room: float, fixed: dict[str, Any] | None,
              validation: Validation, on_trial: TrialCallback | None) -> tuple[dict[str, float], Fitted]:
    """Trains the family's best settings again for ``room`` seconds, to its early stop, and keeps the result
    when validation is no worse (the same seed replays the trial's epochs first); returns its figures and model."""
    params = {key: value for key, value in family["params"].items() if key != "epochs"}
    params.update({key: value for key, value in (fixed or {}).items() if key == "epochs"})
    figures, settings, history, fitted = _fit_and_score(name, {**params, "max_seconds": room}, validation)
    progress.note(f"{name} trained on to its early stop: val_recall@20 {figures['val_recall_20']:.4f}")
    if on_trial is not None:
        on_trial(Trial(name, family["trials"], {**params, "max_seconds": room}, figures, history))
    log.info("auto: %s trained on to its early stop -> %s", name, figures)
    family["trials"] += 1  # one more child run
    family["continued"] = {"val_recall_20": figures["val_recall_20"], "val_ndcg_20": figures["val_ndcg_20"],
                           "epochs": settings["epochs"], "epochs_run": int(figures["epochs_run"]),
                           "converged": bool(figures["converged"])}
    if (figures["val_recall_20"], figures["val_ndcg_20"]) >= (family["val_recall_20"], family["val_ndcg_20"]):
        family.update(val_recall_20=figures["val_recall_20"], val_ndcg_20=figures["val_ndcg_20"], params=settings,
                      refit_seconds=figures["refit_seconds"])
    return figures, fitted


def _may_catch_up(family: dict[str, Any], leader: float, room: float) -> bool:
    """Whether training a cut-short graph family on for ``room`` seconds could still overtake ``leader``, the best
    other family's validation Recall@20: its best so far plus its fastest recent gain for every epoch the room
    adds beyond its trial's (training on starts again from the first epoch). Gains shrink as a model trains, so
    this bounds the curve from above; a curve too short to show a gain is given the benefit of the doubt.
    (Gowalla: trained on, the GNN reached 0.19–0.20 where the graph filter led at 0.2386, 135–180 s spent.)"""
    if family["val_recall_20"] >= leader or family["recent_gain"] is None:
        return True
    more_epochs = max(room / max(family["epoch_seconds"], 1e-9) - family["epochs_run"], 0.0)
    return family["val_recall_20"] + max(family["recent_gain"], 0.0) * more_epochs > leader


def _training_room(family: dict[str, Any], leader: dict[str, Any] | None, left: float, weighing: float | None) -> float:
    """Seconds a cut-short graph family may train on when ``left`` seconds of the budget remain: what is left
    after the leader's refit and, unless ``weighing`` is None, the blend's check (both members' validation passes
    and ``weighing`` seconds of weighing their scores), shared between training on and the refit it would need
    (that many more seconds of training epochs, on the refit's larger data, no validation), less one epoch: the
    training loop reads its clock after each epoch, so it may run one past its room (Ciao: 267 s for a 234 s room,
    and the blend's check no longer fitted)."""
    kept_back = 0.0 if leader is None else leader["refit_seconds"]
    if weighing is not None and leader is not None:
        kept_back += leader["rank_seconds"] + family["rank_seconds"] + weighing
    epoch = max(family["epoch_seconds"], 1e-9)
    refit_per_second = family["refit_seconds"] / max(family["params"].get("epochs", 1), 1) / epoch
    return max(max(left - kept_back, 0.0) / (1.0 + refit_per_second) - family["epoch_seconds"], 0.0)


def _pace(history: list[dict[str, float]], window: int = 3) -> dict[str, float]:
    """A graph model's pace in a trial: seconds per epoch with its validation (the median), and the largest gain
    in validation Recall@20 from one epoch to the next over its last ``window`` epochs (left out below two)."""
    recalls = [h["val_recall_20"] for h in history if "val_recall_20" in h]
    gains = np.diff(recalls[-window - 1:])
    seconds = [h["epoch_seconds"] + h.get("validation_seconds", 0.0) for h in history]
    pace = {"epoch_seconds": float(np.median(seconds)) if seconds else 0.0}
    return {**pace, "recent_gain": float(gains.max())} if len(gains) else pace


def _keep(kept: dict[str, tuple[float, float, Fitted]], name: str, figures: dict[str, float], fitted: Fitted,
          ties: bool = False) -> None:
    """Keeps ``fitted`` as ``name``'s model for the blend when it is the family's best so far: the model whose
    settings the family reports (its first best trial; a tie with training on goes to the longer run)."""
    score = (figures["val_recall_20"], figures["val_ndcg_20"])
    if name not in kept or score > kept[name][:2] or (ties and score == kept[name][:2]):
        kept[name] = (*score, fitted)


def _try_blend(best_two: list[str], results: dict[str, dict[str, Any]],
               kept: dict[str, tuple[float, float, Fitted]], validation: Validation,
               on_trial: TrialCallback | None) -> None:
    """Scores the blend of the two best families' kept models on validation, its weight searched, into
    ``results[BLEND]`` (chosen by the caller only when it gains enough)."""
    started = time.perf_counter()
    first, second = best_two
    weight, figures = search_blend([kept[first][2].model, kept[second][2].model], validation.users,
                                   validation.train, validation.valid, validation.popularity)
    params = members((first, results[first]["params"]), (second, results[second]["params"]), weight)
    figures["seconds"] = time.perf_counter() - started
    progress.note(f"blend of {first} and {second} (weight {weight}): val_recall@20 {figures['val_recall_20']:.4f}")
    if on_trial is not None:
        on_trial(Trial(BLEND, 0, params, figures))
    log.info("auto: blend %s -> %s", params, figures)
    results[BLEND] = {"val_recall_20": figures["val_recall_20"], "val_ndcg_20": figures["val_ndcg_20"],
                      "members_recall_20": figures["members_recall_20"], "params": params, "trials": 1}


def fit_choice(dataset: Dataset, split: Split, choice: Choice,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Fitted:
    """The chosen model refit on training + validation (a graph model for the epochs validation chose; a blend
    member by member, its scales measured on the users with known purchases)."""
    if choice.name == BLEND:
        known = known_interactions(split)
        fitted = fit_blend(choice.params, lambda name, params: _refit(dataset, split, name, params, on_epoch),
                           np.unique(known.user))
    else:
        fitted = _refit(dataset, split, choice.name, dict(choice.params), on_epoch)
    fitted.info["choice"] = choice.to_json()
    return fitted


def _refit(dataset: Dataset, split: Split, name: str, params: dict[str, Any],
           on_epoch: Callable[[int, dict[str, float]], None] | None) -> Fitted:
    if spec(name).trainable:  # straight on everything known, for the epochs its trial found best
        params.pop("max_seconds", None)
        known = known_interactions(split)
        split = Split(train=known, valid=known.take(np.zeros(len(known), dtype=bool)), test=split.test)
        with progress.stage(f"{name} refit on train + validation"):
            return fit_model(name, dataset, split, params, refit=False, on_epoch=on_epoch)
    return fit_model(name, dataset, split, params, refit=True)


def _tuned(entry, has_links: bool) -> tuple[dict[str, tuple], tuple[dict[str, Any], ...]]:
    """What the search tunes in ``entry`` and the settings it starts from: without social links a model's
    social weight weighs nothing, so it is neither tuned nor started from (the search is as without it)."""
    if entry.social is None or has_links:
        return entry.space, entry.starts
    space = {key: value for key, value in entry.space.items() if key != entry.social}
    starts = ({key: value for key, value in start.items() if key != entry.social} for start in entry.starts)
    return space, tuple(start for start in starts if start)


def _with_defaults(entry, space: dict[str, tuple], start: dict[str, Any]) -> dict[str, Any]:
    """A starting setting with every other tuned argument at the model's default (not left to the tuner)."""
    arguments = inspect.signature(entry.load()).parameters
    defaults = {key: arguments[key].default for key in space
                if key in arguments and arguments[key].default is not inspect.Parameter.empty}
    return {**defaults, **start}


def _suggest(trial, space: dict[str, tuple]) -> dict[str, Any]:
    params = {}
    for key, (kind, *bounds) in space.items():
        if kind == "float":
            params[key] = trial.suggest_float(key, *bounds)
        elif kind == "log":
            params[key] = trial.suggest_float(key, *bounds, log=True)
        elif kind == "int":
            params[key] = trial.suggest_int(key, *bounds)
        else:
            params[key] = trial.suggest_categorical(key, list(bounds[0]))
    return params


def _best_epoch(fitted: Fitted) -> dict[str, float]:
    history = fitted.result.history
    scored = [h for h in history if "val_recall_20" in h]
    best = max(scored, key=lambda h: h["val_recall_20"]) if scored else {"val_recall_20": 0.0, "val_ndcg_20": 0.0}
    return {"val_recall_20": float(best["val_recall_20"]), "val_ndcg_20": float(best["val_ndcg_20"]),
            "best_epoch": float(fitted.result.best_epoch), "seconds_per_epoch": float(fitted.result.seconds_per_epoch)}


def _epochs(fitted: Fitted) -> dict[str, Any]:
    """A graph model's trial settings also fix how many epochs its refit runs: the best epoch's."""
    return {"epochs": max(int(fitted.result.best_epoch), 1)} if fitted.result is not None else {}
