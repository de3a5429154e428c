"""Progress of long stages on stderr: a live display on a terminal, plain lines elsewhere, nothing when quiet.

Code at any layer announces its stages with :func:`stage` and free-form steps with :func:`note`, the way it
logs: no reporter is passed down. The command line installs one reporter per run with :func:`use`. Until then
the silent default costs a method call per step, so training loops and libraries pay nothing worth measuring.

A terminal gets rich's live display (stage, counts, elapsed time, time remaining, the last note); a file or
pipe (a CI log, nohup, a notebook cell) gets one line when a stage starts and ends, one per step of a stage
that asks for it (training epochs), and otherwise one every :data:`HEARTBEAT_SECONDS` while a stage runs,
never an escape code. A run that fails within :data:`GRACE_SECONDS` (bad input) shows only its error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_SECONDS = 10.0
"""Longest silence of the plain-lines reporter while a stage runs."""
GRACE_SECONDS = 1.0
"""A stage shorter than this gets one plain line (its end); a run refused within it, none besides its error."""


class Stage:
    """One running stage: ``completed`` of ``total`` steps (None: open-ended) and the latest note."""

    def __init__(self, reporter: Reporter, name: str, total: float | None, each_step: bool, unit: str,
                 parent: Stage | None) -> None:
        self.reporter, self.name, self.total, self.each_step, self.parent = reporter, name, total, each_step, parent
        self.unit = unit
        self.completed = 0.0
        self.note = ""
        self.started = time.monotonic()

    @property
    def path(self) -> str:
        """The stage's name under its enclosing stages (``eval > lightgcn epochs``)."""
        return self.name if self.parent is None else f"{self.parent.path} > {self.name}"

    def advance(self, steps: float = 1.0, note: str | None = None) -> None:
        """``steps`` more done, with an optional note of what the last one gave (a loss, a count)."""
        self.completed += steps
        if note is not None:
            self.note = note
        self.reporter.changed(self, stepped=True)

    def update(self, *, completed: float | None = None, total: float | None = None, note: str | None = None) -> None:
        """Sets the count, the total or the note (a stage that learns its size late, or reports a fraction)."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        self.reporter.changed(self, stepped=False)

    def remaining(self) -> float | None:
        """Seconds left at the rate so far, or None before the first step or without a total."""
        if not self.total or self.completed <= 0:
            return None
        return (time.monotonic() - self.started) * (self.total - self.completed) / self.completed


class Reporter:
    """The silent reporter (``--quiet``, and the default for libraries and tests)."""

    def __init__(self) -> None:
        self.open: list[Stage] = []
        self.stack = threading.Lock()  # a server's request threads may run stages at once

    def begin(self, name: str, total: float | None, each_step: bool, unit: str = "steps") -> Stage:
        with self.stack:
            stage = Stage(self, name, total, each_step, unit, self.open[-1] if self.open else None)
            self.open.append(stage)
        self.started(stage)
        return stage

    def end(self, stage: Stage, failed: bool = False) -> None:
        with self.stack:
            self.open.remove(stage)
        self.finished(stage, failed)

    def started(self, stage: Stage) -> None:
        """A stage began."""

    def changed(self, stage: Stage, stepped: bool) -> None:
        """A stage advanced (``stepped``) or was updated."""

    def finished(self, stage: Stage, failed: bool) -> None:
        """A stage ended (``failed``: by an exception)."""

    def note(self, message: str) -> None:
        """A step worth a line of its own."""

    def close(self) -> None:
        """The run is over: stop drawing."""


class LiveReporter(Reporter):
    """rich's live display on a terminal: one row per open stage; finished inner stages disappear."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.display: Progress | None = None
        self.tasks: dict[int, TaskID] = {}

    def started(self, stage: Stage) -> None:
        if self.display is None:
            self.display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                    console=self.console, refresh_per_second=8)
            self.display.start()
        self.tasks[id(stage)] = self.display.add_task(stage.path, total=stage.total, note="")

    def changed(self, stage: Stage, stepped: bool) -> None:
        self.display.update(self.tasks[id(stage)], completed=stage.completed, total=stage.total, note=stage.note)

    def finished(self, stage: Stage, failed: bool) -> None:
        task = self.tasks.pop(id(stage))
        if stage.parent is not None:
            self.display.remove_task(task)
        if not self.open:  # the outermost stage is done: its last frame stays on screen, unless it failed
            self.display.live.transient = failed
            self.close()

    def note(self, message: str) -> None:
        (self.display.console if self.display is not None else self.console).print(message, highlight=False,
                                                                                   markup=False)

    def close(self) -> None:
        if self.display is not None:
            self.display.stop()
            self.display, self.tasks = None, {}


class LineReporter(Reporter):
    """Plain lines for a file or a pipe: a stage's start (once it has run ``grace`` seconds or something inside
    it prints, so a quick stage gets its end line alone), its end, each step of a stage that asks for it, and a
    heartbeat line for the innermost stage after ``heartbeat`` seconds without a line. Lines wait for the
    outermost stage's first ``grace`` seconds and are dropped if it fails within them (the error says it)."""

    def __init__(self, stream: TextIO, heartbeat: float = HEARTBEAT_SECONDS, grace: float = GRACE_SECONDS) -> None:
        super().__init__()
        self.stream, self.heartbeat, self.grace = stream, heartbeat, grace
        self.origin = self.last = time.monotonic()
        self.announced: set[int] = set()  # ids of the open stages whose start line is out
        self.held: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker: threading.Thread | None = None

    def started(self, stage: Stage) -> None:
        if stage.parent is None:  # a heartbeat counts from here, not from the imports before
            self.last = stage.started
        if self.ticker is None:
            self.ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
            self.ticker.start()

    def changed(self, stage: Stage, stepped: bool) -> None:
        if stepped and stage.each_step:
            self.write(self.status(stage))

    def finished(self, stage: Stage, failed: bool) -> None:
        with self.lock:
            announced = id(stage) in self.announced
            self.announced.discard(id(stage))
            if announced or not failed:  # a failure of a stage nobody saw start: the error says it
                ended = "failed after" if failed else "done in"
                self._line(f"{stage.path}: {ended} {_duration(time.monotonic() - stage.started)}"
                           + (f", {self.count(stage)}" if stage.completed else "")
                           + (f"; {stage.note}" if stage.note else ""))
            if stage.parent is None:
                if failed and time.monotonic() - stage.started < self.grace:
                    self.held.clear()  # refused at once: the error line alone
                self._flush()

    def note(self, message: str) -> None:
        self.write(message)

    def close(self) -> None:
        with self.lock:
            self._flush()
            self.stopped.set()

    def status(self, stage: Stage) -> str:
        if not stage.completed and not stage.note:  # one long step (a fit): how long it has run
            return f"{stage.path}: running for {_duration(time.monotonic() - stage.started)}"
        left = stage.remaining()
        return (f"{stage.path}: {self.count(stage)}" + (f" {stage.note}" if stage.note else "")
                + ("" if left is None else f", about {_duration(left)} left"))

    @staticmethod
    def count(stage: Stage) -> str:
        return _count(stage.completed) + ("" if stage.total is None else f"/{_count(stage.total)}")

    def write(self, line: str) -> None:
        with self.lock:
            self._line(line)

    def _line(self, line: str, announce_before: float | None = None) -> None:
        """``line`` after the start lines of the open stages not yet announced (or, with ``announce_before``,
        of those started before then); held during the outermost stage's first ``grace`` seconds."""
        now = time.monotonic()
        for stage in list(self.open):
            if id(stage) not in self.announced and (announce_before is None or stage.started <= announce_before):
                self.announced.add(id(stage))
                total = "" if stage.total is None else f" ({_count(stage.total)} {stage.unit})"
                self.held.append(f"[{_duration(now - self.origin):>7}] {stage.path}: started{total}\n")
        if line:
            self.held.append(f"[{_duration(now - self.origin):>7}] {line}\n")
        if not self.open or now - self.open[0].started >= self.grace:
            self._flush()

    def _flush(self) -> None:
        if self.held and not self.stopped.is_set():
            self.last = time.monotonic()
            self.stream.write("".join(self.held))
            self.stream.flush()
        self.held.clear()

    def _tick(self) -> None:
        """Heartbeats, the start lines of stages that have run ``grace`` seconds, and held lines once due."""
        while not self.stopped.wait(min(self.heartbeat, self.grace or self.heartbeat) / 4):
            with self.lock:
                stages = list(self.open)
                if not stages:
                    continue
                now = time.monotonic()
                if now - self.last >= self.heartbeat:
                    self._line(self.status(stages[-1]))
                else:
                    self._line("", announce_before=now - self.grace)


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def for_console(console: Console, quiet: bool = False) -> Reporter:
    """The reporter for ``console``'s stream: silent when ``quiet``, live on a terminal, plain lines elsewhere."""
    if quiet:
        return Reporter()
    return LiveReporter(console) if console.is_terminal else LineReporter(console.file)


_reporter: Reporter = Reporter()


def use(reporter: Reporter) -> Reporter:
    """Installs ``reporter`` for the stages that follow; returns the one it replaces."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """``reporter`` for the stages inside; then it is closed and the one before is back."""
    previous = use(reporter)
    try:
        yield reporter
    finally:
        use(previous)
        reporter.close()


@contextmanager
def stage(name: str, total: float | None = None, *, each_step: bool = False, unit: str = "steps") -> Iterator[Stage]:
    """A stage of ``total`` steps (None: open-ended) for the installed reporter; ``each_step``: a plain line per
    step (epochs), not only a heartbeat; ``unit`` names what is counted."""
    reporter = _reporter
    running = reporter.begin(name, total, each_step, unit)
    try:
        yield running
    except BaseException:
        reporter.end(running, failed=True)
        raise
    reporter.end(running)


def note(message: str) -> None:
    """A step worth a line of its own (a trial's result, a phase of an evaluation)."""
    _reporter.note(message)
