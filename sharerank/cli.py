"""`sharerank` command line: results as JSON on stdout, progress and logs on stderr.

Heavy libraries (torch, MLflow, FAISS) are imported inside the commands that need them, so `--help`
and bad arguments answer at once. Bad input exits with code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import PositiveInt
from rich.console import Console
from rich.logging import RichHandler

from sharerank import progress
from sharerank.cli_params import assignment, comma_separated
from sharerank.config import Settings
from sharerank.models.recommenders.registry import model_names


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Typer's own refusals (a value out of range, a missing option) in one line with exit code 2, like ours,
    instead of a usage panel; a bare ``sharerank`` still shows the help."""

    def main(self, args: list[str] | None = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode or not (sys.argv[1:] if args is None else args):
            return super().main(args, *rest, standalone_mode=standalone_mode, **kwargs)
        try:
            result = super().main(args, *rest, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:
            _error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            stderr.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(help="Feed ranking and KOC seeding for social e-commerce.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=True, cls=_OneLineUsageErrors)
stderr = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOption = Annotated[int, typer.Option(help="Random seed (same seed and data, same result).")]


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """An enum of ``values`` for an option, so ``--help`` lists them and typer rejects anything else."""
    return Enum(name, {value: value for value in values}, type=str)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _setup_logging(verbose: bool) -> None:
    """Rich lines for people, or JSON objects (SHARERANK_LOG_FORMAT=json) whose keys include a record's extra
    fields (a request's ids and outcome); SHARERANK_LOG_LEVEL overrides --verbose."""
    try:
        settings = Settings()
    except ValueError:  # a bad setting: log with the defaults; the command reports it in one line
        settings = Settings.model_construct()
    level = settings.log_level.upper() if settings.log_level else (logging.INFO if verbose else logging.WARNING)
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler = RichHandler(console=stderr, show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("mlflow", "alembic", "urllib3", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def command(func: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Registers a command that maps bad input (our validation errors) to exit code 2 and a one-line message."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from sharerank.dataset.reader import DatasetError

            try:
                return func(*args, **kwargs)
            except (UsageError, DatasetError, LookupError, ValueError, FileNotFoundError) as exc:
                _error_line(str(exc))
                raise typer.Exit(2) from None

        return app.command(name)(wrapper)

    return register(func) if func is not None else register


def _error_line(message: str) -> None:
    """``error: MESSAGE`` on stderr in one line, whatever the message held."""
    from rich.markup import escape

    stderr.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        Console().print_json(json.dumps(result, default=str))


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        print(f"sharerank {version('sharerank')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or lines on stderr (errors "
                                                              "and result tables still show).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the installed version and exit.")] = False,
) -> None:
    _setup_logging(verbose)
    # live on a terminal, plain lines in a file or pipe, for the command's run
    ctx.with_resource(progress.reporting(progress.for_console(stderr, quiet)))


def _dataset_names() -> list[str]:
    from sharerank.training.sources.importers import IMPORTERS

    return list(IMPORTERS)


DatasetName = choices("DatasetName", _dataset_names())
LogRegime = choices("LogRegime", ("all", "successes-only"))
TrainModel = choices("TrainModel", ["auto", *model_names(servable=True)])


@command
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write the world into.")],
    users: Annotated[int, typer.Option(min=50, help="Number of users.")] = 1000,
    seed: SeedOption = 0,
    mean_degree: Annotated[float | None, typer.Option(min=1.0, help="Mean friends per user (default 12; 20 "
                                                                   "gives ~20M social arcs at 1M users).")] = None,
    log: Annotated[LogRegime, typer.Option(help="Which shares shares.csv keeps: all, or only those that converted "
                                                "(as real logs record them); truth/ is the same.")] = "all",
    fatigue_window_days: Annotated[float | None, typer.Option(min=0.0, help="Recipient fatigue: conversion falls "
                                                              "with the shares seen in this many days, people mute "
                                                              "senders (default 0: off).")] = None,
    rings: Annotated[int | None, typer.Option(min=0, help="Collusive rings that share and buy among themselves "
                                                          "(default 0).")] = None,
    ring_size: Annotated[int | None, typer.Option(min=3, help="Typical members per ring (default 6).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate a synthetic social-commerce world in the dataset-folder format, plus truth/."""
    from sharerank.training.sources.simulate import simulate_world

    given = {"mean_degree": mean_degree, "fatigue_window_days": fatigue_window_days, "rings": rings,
             "ring_size": ring_size}
    knobs = {name: value for name, value in given.items() if value is not None}
    with progress.stage("simulate", 100, unit="percent") as stage:  # the note says which part
        summary = simulate_world(out, users=users, seed=seed, log=log.value, **knobs,
                                 progress=lambda part, frac: stage.update(completed=100 * frac, note=part))
    emit({"out": str(out), **summary}, as_json)


@command(name="import")
def import_(
    name: Annotated[DatasetName, typer.Argument(help="Dataset name (see ../shared/data/README.md).")],
    src: Annotated[Path, typer.Option(help="The dataset as published (e.g. ../shared/data/lastfm).")],
    out: Annotated[Path, typer.Option(help="Folder to write the dataset folder into.")],
    as_json: JsonOption = False,
) -> None:
    """Convert a public dataset into the dataset folder format."""
    from sharerank.training.sources.importers import IMPORTERS

    if not src.is_dir():
        raise UsageError(f"{src}: no such directory")
    with progress.stage(f"import {name.value}"):  # a stage per file read inside
        rows = IMPORTERS[name.value](src, out)
    emit({"name": name.value, "out": str(out), "rows": rows}, as_json)


SetOption = Annotated[list[Any] | None, typer.Option(
    "--set", parser=assignment, metavar="MODEL.KEY=VALUE",
    help="A setting of one model (a training setting such as lr or batch_size, or a model argument), e.g. "
         "sharegnn.temperature=0.2 or ease.reg=300; values are JSON or none; repeatable.")]
BudgetOption = Annotated[float, typer.Option(min=1.0, help="Seconds the automatic choice may spend fitting: tuning "
                                                           "every model family on validation, then the refit.")]
AUTO_BUDGET_SECONDS = 900.0
"""Default of every --budget: training.feed.auto.DEFAULT_BUDGET_SECONDS, written here so --help needs no torch."""


def _model_settings(assignments: list[tuple[str, str, Any]] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """``--set`` values as ``{model: {key: value}}``, checked against the models in use and their settings."""
    from sharerank.training.feed.fit import check_settings

    settings: dict[str, dict[str, Any]] = {}
    for name, key, value in assignments or []:
        if name not in models:
            raise UsageError(f"--set {name}.{key}: {name} is not a model being used ({', '.join(models) or 'none'})")
        settings.setdefault(name, {})[key] = value
        check_settings(name, settings[name])
    return settings


@command
def train(
    data: Annotated[list[Path], typer.Option(help="Dataset folder; repeat to merge several (the base data and the "
                                                  "event log), by event id, oldest first.")],
    model: Annotated[TrainModel, typer.Option(help="auto: every family tuned on validation, the winner served; "
                                                   "or one model, with its defaults and --set.")] = "auto",
    budget: BudgetOption = AUTO_BUDGET_SECONDS,
    settings_: SetOption = None,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train on the folders (a validation split carved from them; a test.csv is never read), log to MLflow and
    register a model version. Under `torchrun --nproc-per-node N` a graph model trains data-parallel (gloo):
    rank 0 logs, registers and prints the report, the other ranks exit quietly."""
    import os

    params = _model_settings(settings_, [model.value] if model.value != "auto" else [])
    if "WORLD_SIZE" in os.environ and model.value == "auto":  # torchrun: before any rank joins a group
        raise UsageError("--model auto is not trained data-parallel; name one graph model (lightgcn, sharegnn) "
                         "under torchrun")
    from sharerank.training.feed import distributed
    from sharerank.training.jobs import run_training

    distributed.init_from_env()
    try:
        if not distributed.is_main():  # rank 0 alone shows progress
            progress.use(progress.Reporter())
            run_training(data, Settings(), model=model.value, params=params.get(model.value), budget_seconds=budget,
                         seed=seed)
            return
        with progress.stage("train"):  # tuning, trials and epochs report inside
            report = run_training(data, Settings(), model=model.value, params=params.get(model.value),
                                  budget_seconds=budget, seed=seed)
    finally:
        distributed.finish()
    emit(report, as_json)


@command
def retrain(
    data: Annotated[list[Path], typer.Option(help="Dataset folders to merge and train on, oldest first (the base "
                                                  "data, then the event log RecordEvents wrote).")],
    budget: BudgetOption = AUTO_BUDGET_SECONDS,
    force: Annotated[bool, typer.Option("--force", help="Promote the new version even if it scores worse.")] = False,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train (auto) on the merged folders, score the new version and the champion on the same validation split,
    and move the champion alias only when the new one is no worse; serving follows the alias."""
    from rich.markup import escape

    from sharerank.training.jobs import run_retrain

    with progress.stage("retrain"):
        report = run_retrain(data, Settings(), budget_seconds=budget, seed=seed, force=force)
    if not report["promotion"]["promoted"]:  # the champion stays: an outcome, not an error
        stderr.print(f"[yellow]not promoted:[/yellow] {escape(report['promotion']['reason'])}", highlight=False,
                     soft_wrap=True)
    emit(report, as_json)


def _results_table(report: dict[str, Any], k: int) -> Any:
    from rich.table import Table

    table = Table(title=f"{report['data']} — {report['test_users']} test users, all products ranked")
    columns = [f"Recall@{k}", f"NDCG@{k}", f"HitRate@{k}", f"Coverage@{k}", f"LongTail@{k}"]
    for column in ("model", *columns, "fit s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, result in report["models"].items():
        label = f"auto ({result['chosen']})" if "chosen" in result else name
        if "skipped" in result:
            table.add_row(label, *(["—"] * len(columns)), f"skipped: {result['skipped'][:60]}")
        else:
            metrics = result["metrics"]
            table.add_row(label, *(f"{metrics[c]:.4f}" for c in columns), f"{result['fit_seconds']:.1f}")
    return table


@command
def eval(  # noqa: A001 - the command is called eval
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="Cut-off of the ranking metrics.")] = 20,
    models: Annotated[Any, typer.Option(parser=comma_separated(Literal[(*model_names(), "auto")]),
                                        metavar="MODEL,MODEL", help=f"Comma-separated models from "
                                        f"{', '.join(model_names())} and auto (the validation choice); default "
                                        "all.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Training budget per graph model (s).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum epochs per graph model.")] = None,
    refit: Annotated[bool, typer.Option(help="Retrain graph models on train+validation.")] = True,
    budget: BudgetOption = AUTO_BUDGET_SECONDS,
    settings_: SetOption = None,
    seed: SeedOption = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score every model and the automatic choice on the same split: Recall/NDCG/hit rate, coverage, long-tail
    share; logged to MLflow."""
    from sharerank.training.jobs import run_evaluation

    names = list(models or (*model_names(), "auto"))
    params = _model_settings(settings_, [n for n in names if n != "auto"])
    overrides = {key: v for key, v in {"max_seconds": max_seconds, "epochs": epochs}.items() if v is not None}
    for name in model_names(trainable=True):
        if name in names and overrides:
            params[name] = {**overrides, **params.get(name, {})}
    with progress.stage("eval", len(names), unit="models") as stage:  # fits, epochs and ranking inside
        report = run_evaluation(data, Settings(), names, k=k, seed=seed, params=params, refit=refit,
                                budget_seconds=budget, on_model=lambda name, _: stage.advance(note=f"{name} done"))
    stderr.print(_results_table(report, k))
    if out is not None:
        out.write_text(json.dumps(report, indent=2, default=str))
    emit(report, as_json)


@command
def recommend(
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="List length per user.")] = 20,
    model: Annotated[TrainModel, typer.Option(help="auto (the validation choice) or any model `sharerank eval` "
                                                   "scores.")] = "auto",
    out: Annotated[Path, typer.Option(help="CSV file: user_id,product_id,rank,score.")] = Path("recommendations.csv"),
    budget: BudgetOption = AUTO_BUDGET_SECONDS,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Write the top-K list of every test user, the same lists `eval` scores."""
    from sharerank.training.jobs import run_recommend

    with progress.stage("recommend"):
        report = run_recommend(data, model.value, k, out, seed=seed, budget_seconds=budget)
    emit(report, as_json)


@command
def seed(
    data: Annotated[Path, typer.Option(help="Dataset folder (shares.csv, or a given influence.csv).")],
    k: Annotated[int, typer.Option(help="Number of seeds (1..1000).")] = 10,
    product: Annotated[str | None, typer.Option(help="Product to launch: its category's influence, buyers "
                                                     "excluded.")] = None,
    category: Annotated[str | None, typer.Option(help="Category to launch in.")] = None,
    exclude: Annotated[Any, typer.Option(parser=comma_separated(str, at_least_one=False), metavar="USER,USER",
                                         help="Comma-separated user ids never to pick (opted out).")] = "",
    min_activity: Annotated[int, typer.Option(min=0, help="Only users with at least this many shares sent "
                                                          "plus purchases.")] = 0,
    max_per_community: Annotated[int, typer.Option(min=0, help="At most this many seeds per community (0: no "
                                                               "cap).")] = 0,
    max_fatigue: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Only seeds whose audience fatigue "
                                                                             "is at most this (default: no "
                                                                             "limit).")] = None,
    ring_policy: Annotated[str, typer.Option(help="Collusive-ring members: exclude (those at or above the "
                                                  "detector's threshold), discount or ignore.")] = "exclude",
    epsilon: Annotated[float, typer.Option(help="Slack of the (1 - 1/e - epsilon) guarantee.")] = 0.1,
    mc_runs: Annotated[int, typer.Option(min=100, help="Independent Monte Carlo runs for reach and its "
                                                       "95% interval.")] = 2000,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Seed sharers for a launch: marginal and cumulative expected reach with 95% intervals, and reasons."""
    from sharerank.models.seeding.plan import RING_POLICIES
    from sharerank.training.seeding.seed import run_seed

    if not 1 <= k <= 1000:  # before the data is read: refused at once
        raise UsageError(f"--k: budget must be between 1 and 1000 (got {k})")
    if ring_policy not in RING_POLICIES:
        raise UsageError(f"--ring-policy: ring_policy must be one of {', '.join(RING_POLICIES)} (got {ring_policy!r})")
    with progress.stage("seed"):
        report = run_seed(data, k, product=product, category=category, exclude=exclude, min_activity=min_activity,
                          max_per_community=max_per_community, max_fatigue=max_fatigue,
                          ring_policy=ring_policy, epsilon=epsilon, mc_runs=mc_runs, seed=seed)
    emit(report, as_json)


@command
def eval_seeding(
    data: Annotated[Path, typer.Option(help="Dataset folder: a simulated world (truth/), influence.csv "
                                            "(e.g. NetHEPT) and/or shares with times.")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="Seeds per method.")] = 50,
    ks: Annotated[Any, typer.Option(parser=comma_separated(PositiveInt), metavar="K,K",
                                    help="Budgets for the given-influence section, comma-separated.")] = "10,50,100",
    epsilon: Annotated[float, typer.Option(help="Slack of the (1 - 1/e - epsilon) guarantee.")] = 0.1,
    mc_runs: Annotated[int, typer.Option(min=100, help="Independent Monte Carlo runs per spread.")] = 10_000,
    category: Annotated[str | None, typer.Option(help="Launch category of the synthetic section (default: the "
                                                      "most shared).")] = None,
    seed: SeedOption = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Seeding quality and speed: learned vs oracle vs degree/PageRank/top sharers, NetHEPT, cascade replay."""
    from sharerank.training.seeding.evaluate import run_eval_seeding

    with progress.stage("eval-seeding"):
        report = run_eval_seeding(data, k=k, ks=ks, epsilon=epsilon, mc_runs=mc_runs, category=category,
                                  seed=seed, progress=progress.note)
    for table in _seeding_tables(report):
        stderr.print(table)
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")
    emit(report, as_json)


@command
def eval_feed_replay(
    data: Annotated[Path, typer.Option(help="A simulated world (truth/) with every share logged (--log all).")],
    model: Annotated[TrainModel, typer.Option(help="The recommender the feed serves (one model, not auto), fitted "
                                                   "on the events before the window.")] = "itemknn",
    window_days: Annotated[float, typer.Option(min=0.01, help="Days of purchases and shares replayed into the "
                                                              "online store before the pages are served.")] = 7.0,
    train_fraction: Annotated[float, typer.Option(min=0.05, max=0.95, help="The window starts at this quantile "
                                                                           "of purchase times.")] = 0.8,
    users: Annotated[int, typer.Option(min=1, help="Users served a page (a random sample of the window's share "
                                                   "recipients).")] = 2000,
    page_size: Annotated[int, typer.Option(min=1, max=500, help="Products per page.")] = 20,
    organic_days: Annotated[float, typer.Option(min=0.0, help="Horizon of the organic purchase propensity "
                                                              "(days).")] = 7.0,
    seed: SeedOption = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The feed's expected purchases per page under a simulated world's true behaviour, with the per-sharer cap
    (and fatigue scaling) and without: pages served through the real pipeline after replaying a window of events."""
    from sharerank.feed_replay import run_feed_replay

    if model.value == "auto":
        raise UsageError("--model auto is not available here; name one model (e.g. itemknn)")
    with progress.stage("eval-feed-replay"):
        report = run_feed_replay(data, Settings(), model=model.value, window_days=window_days,
                                 train_fraction=train_fraction, users=users, page_size=page_size,
                                 organic_days=organic_days, seed=seed, progress=progress.note)
    stderr.print(_replay_table(report))
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")
    emit(report, as_json)


def _replay_table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"feed replay: {report['users_served']} pages of {report['feed']['page_size']}")
    for column in ("pipeline", "expected purchases / page", "95% CI", "via shares", "shared items",
                   "max from one sharer", "from muted sharers", "from spammers"):
        table.add_column(column)
    for arm, figures in report["arms"].items():
        low, high = figures["expected_purchases_ci95"]
        table.add_row(arm, f"{figures['expected_purchases']:.4f}", f"{low:.4f}-{high:.4f}",
                      f"{figures['through_shares']:.4f}", f"{figures['shared_shown']:.2f}",
                      f"{figures['max_from_one_sharer']:.2f}", f"{figures['from_muted_sharers']:.2f}",
                      f"{figures['from_spammers']:.2f}")
    return table


@command
def eval_audience(
    data: Annotated[Path, typer.Option(help="Dataset folder (a simulated world, or e.g. an imported Ciao).")],
    model: Annotated[TrainModel, typer.Option(help="The recommender whose affinity GetAudience reads (not auto: "
                                                   "one model, fitted as `sharerank eval` fits it).")] = "itemknn",
    ks: Annotated[Any, typer.Option(parser=comma_separated(PositiveInt), metavar="K,K",
                                    help="Cut-offs of Recall@k, comma-separated.")] = "10,50,100",
    max_products: Annotated[int, typer.Option(min=1, help="Products with held-out buyers scored (a random "
                                                          "sample beyond this).")] = 3000,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """GetAudience's scorer from the product side: Recall@k of each product's held-out buyers against the most
    active buyers and co-purchase; blend weights chosen on validation, scored once on test."""
    from sharerank.training.audience.evaluate import run_eval_audience

    if model.value == "auto":
        raise UsageError("--model auto is not available here; name one model (e.g. itemknn)")
    with progress.stage("eval-audience"):
        report = run_eval_audience(data, model=model.value, ks=ks, max_products=max_products, seed=seed,
                                   progress=progress.note)
    emit(report, as_json)


@command
def demand(
    data: Annotated[Path, typer.Option(help="Dataset folder with purchase (and share) times.")],
    period_days: Annotated[float, typer.Option(help="Length of one period in days.")] = 7.0,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Demand signals: share and purchase volumes per period by category and community, next-period forecasts
    (exponential smoothing) scored against the naive one on the last period, products converting more shares."""
    from sharerank.training.demand.signals import run_demand

    with progress.stage("demand"):
        report = run_demand(data, period_days=period_days, seed=seed)
    emit(report, as_json)


@command
def rings(
    data: Annotated[Path, typer.Option(help="Dataset folder with shares.csv and purchases naming their share_id.")],
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Flag groups and members scoring at "
                                                                           "least this (default: the detector's, "
                                                                           "chosen on a validation world).")] = None,
    truth: Annotated[bool, typer.Option("--truth", help="Also score the detection against truth/rings.csv of a "
                                                        "world simulated with --rings: precision, recall, sweep.")]
    = False,
    limit: Annotated[int | None, typer.Option(min=0, help="List at most this many groups (best first).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Collusive rings: groups that share and buy among themselves with little reach outside, with evidence
    (members, internal shares and purchases, repeat products, outside reach, score)."""
    from sharerank.models.rings import DEFAULT_THRESHOLD
    from sharerank.training.rings.evaluate import run_rings

    with progress.stage("rings"):
        report = run_rings(data, threshold=DEFAULT_THRESHOLD if threshold is None else threshold, truth=truth,
                           limit=limit)
    emit(report, as_json)


def _seeding_tables(report: dict[str, Any]) -> list[Any]:
    """The eval-seeding report for people: learned vs oracle and baselines, and each replayed held-out part."""
    from rich.table import Table

    tables = []
    if "synthetic" in report:
        synthetic = report["synthetic"]
        table = Table(title=f"simulated world, launch in {synthetic['category']} ({synthetic['influence']['regime']} "
                            f"influence), k = {report['k']}: spread under the truth")
        for column in ("method", "spread", "95% interval", "of oracle"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for name, row in synthetic["methods"].items():
            table.add_row(name, f"{row['spread']:,.1f}", f"{row['ci95'][0]:,.1f} - {row['ci95'][1]:,.1f}",
                          f"{row['ratio_to_oracle']:.3f}")
        tables.append(table)
    replay = report.get("replay", {})
    for name, part in replay.items():
        if not isinstance(part, dict) or "replay" not in part:
            continue
        table = Table(title=f"replay: {name}, {part['cascades']:,} held-out cascades ({part['adopters']:,} adopters); "
                            f"cascades started / adopters by each method's seeds")
        methods = [m for m in part["replay"][0] if isinstance(part["replay"][0][m], dict)]
        for column in ("k", *methods, "learned / best"):
            table.add_column(column, justify="right")
        for row in part["replay"]:
            ratio = row["learned_over_best_baseline"]
            table.add_row(str(row["k"]), *(f"{row[m]['cascades']} / {row[m]['adopters']}" for m in methods),
                          "—" if ratio is None else f"{ratio:.2f}")
        calibration = part["calibration"]
        if "slope" in calibration:
            table.caption = (f"calibration on {calibration['cascades']} cascades: slope {calibration['slope']}, "
                             f"{calibration['within_20pct']:.0%} within ±20%, predicted/real "
                             f"{calibration['total_ratio']:.2f}, Spearman {calibration['spearman']:.2f}")
        if "next_adopter" in part:
            nxt = part["next_adopter"]
            table.caption = (table.caption or "") + (f"; next adopter Hits@10/50/100 {nxt['hits@10']:.3f} / "
                                                     f"{nxt['hits@50']:.3f} / {nxt['hits@100']:.3f}, "
                                                     f"MAP@100 {nxt['map@100']:.3f}")
        tables.append(table)
    return tables


@command
def promote(
    version: Annotated[str | None, typer.Option(help="Version to promote; default the newest.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if it evaluates worse than the champion, "
                                                        "or was trained on other data.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Point the `champion` alias at a registered version, if it evaluates no worse than the champion.

    Compares val_recall_20 and val_ndcg_20 of the two versions' training runs when both trained on the same
    data (tag data_fingerprint). A refusal exits with code 2 and one line naming both versions and the metrics.
    """
    from rich.markup import escape

    from sharerank.registry import PromotionRefused
    from sharerank.registry import promote as promote_version

    try:
        result = promote_version(Settings(), version, force=force)
    except PromotionRefused as refused:
        if as_json:
            emit(refused.result, as_json)
        stderr.print(f"[red]refused:[/red] {escape(str(refused))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    emit(result, as_json)


@command
def serve(
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port to listen on (default from settings; "
                                                                    "0: any free port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Server processes on the one port (SO_REUSEPORT), "
                                           "kept running by this one; more than 1 needs Redis and the event "
                                           "stream.")] = 1,
    replica: Annotated[int, typer.Option(hidden=True, help="Set by the supervisor of --processes.")] = 0,
) -> None:
    """Serve the champion model over gRPC until interrupted."""
    progress.use(progress.Reporter())  # requests run stages on many threads: a server shows no progress
    from sharerank.serving.events.log import EventLogError
    from sharerank.serving.online_store import RedisSettings, open_online_store
    from sharerank.serving.replicas import ReplicaSettingsError, Supervisor
    from sharerank.serving.server import create_server, serve_forever

    settings = Settings()
    updates = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    if processes > 1:
        try:
            supervisor = Supervisor(settings, processes)
        except (ReplicaSettingsError, OSError) as exc:
            raise UsageError(str(exc)) from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: supervisor.stop())
        stderr.print(f"sharerank serving on {settings.host}:{supervisor.port} with {processes} processes")
        raise typer.Exit(supervisor.run())
    store = open_online_store(settings.resolved_redis_url, fallback_to_memory=settings.redis_url is None,
                              settings=RedisSettings(fatigue_window_s=settings.fatigue_window_seconds))
    try:
        server = create_server(settings, store, replica=replica)
    except (EventLogError, OSError) as exc:  # the log folder or the port is taken, or TLS refused: in one line
        store.close()
        raise UsageError(str(exc)) from None
    stderr.print(f"sharerank serving on {settings.host}:{server.port}{' with TLS' if settings.tls_cert_file else ''} "
                 f"(model {server.holder.current.version if server.holder.current else 'none'}, store {store!r}, "
                 f"events {server.event_log!r})")
    serve_forever(server)


@command
def ingest(
    out: Annotated[Path, typer.Option(help="Dataset folder to drain the stream into (Parquet, partitioned by day); "
                                           "made if missing.")],
    follow: Annotated[bool, typer.Option("--follow", help="Keep draining new events until interrupted "
                                                          "(default: stop once nothing is pending).")] = False,
    consumer: Annotated[str, typer.Option(help="Durable consumer that remembers how far the folder is; one per "
                                               "folder.")] = "sharerank-ingest",
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Events per Parquet part at most.")] = 1000,
    ack_wait: Annotated[float, typer.Option(min=0.5, help="Seconds after which events a crashed run took are "
                                                          "delivered again (set when the consumer is made).")] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Drain the shared event stream (SHARERANK_EVENT_STREAM_URL) into a dataset folder, each event id exactly
    once; resumable after a crash. Train on the folder with `sharerank train --data`."""
    from sharerank.serving.events.ingest import IngestError
    from sharerank.serving.events.ingest import ingest as drain

    settings = Settings()
    if not settings.event_stream_url:
        raise UsageError("no event stream: set SHARERANK_EVENT_STREAM_URL=nats://host:4222")
    stop = threading.Event()  # SIGINT/SIGTERM: finish the batch in hand, then report
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with progress.stage(f"ingest {settings.event_stream_name} -> {out}") as stage:
        try:
            report = drain(settings.event_stream_url, settings.event_stream_name, out, consumer=consumer, batch=batch,
                           follow=follow, ack_wait_s=ack_wait, stop=stop,
                           progress=lambda done, pending: stage.update(completed=done, note=f"{pending:,} pending"))
        except IngestError as exc:
            raise UsageError(str(exc)) from None
    emit(report.as_dict(), as_json)


@command
def console(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the console.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    demand: Annotated[Path | None, typer.Option(help="A `sharerank demand --json` report for the demand page.")] = None,
    mlflow_url: Annotated[str, typer.Option(help="Where the model page links the MLflow UI.")] = "http://127.0.0.1:5000",
) -> None:
    """The growth console: launch planner, audience, demand and model pages in a browser, over the gRPC service
    at SHARERANK_GRPC_TARGET with SHARERANK_CONSOLE_TOKEN."""
    progress.use(progress.Reporter())  # a server shows no progress
    import socket

    import uvicorn

    from sharerank.console.app import create_app

    report = None
    if demand is not None:
        try:
            report = json.loads(demand.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"{demand}: not a demand report (JSON): {exc}") from None
    with socket.socket() as probe:  # a taken port: one line, not uvicorn's traceback
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    settings = Settings()
    stderr.print(f"sharerank console on http://{host}:{port} (service {settings.grpc_target})")
    uvicorn.run(create_app(settings, report, mlflow_url=mlflow_url), host=host, port=port, log_level="warning")


@command
def demo(
    users: Annotated[int, typer.Option(min=100, help="Users in the simulated world.")] = 3000,
    budget: Annotated[float, typer.Option(min=1.0, help="Seconds the automatic choice may spend fitting, "
                                                        "for the first model and again for the retrain.")] = 90.0,
    seed: SeedOption = 7,
) -> None:
    """End to end on an embedded default: simulate, train (auto), register, promote, serve feeds and seeds,
    record live events, retrain on them through the gate, reload."""
    from sharerank.demo import run_demo

    emit(run_demo(Settings(), users=users, budget=budget, seed=seed), as_json=True)


if __name__ == "__main__":
    app()
