"""Soak and chaos: ``--minutes`` of mixed GetFeed and RecordEvents at fixed rates across 2 replicas, one killed.

    .venv/bin/python bench/soak.py --minutes 10 --out-json bench/results/soak.json

Loopback only, bounded in time (``--minutes``) and count (``--feed-rate`` x time calls at most). A simulated
world (``--users``) is trained into a throwaway registry; a private ``redis-server`` and a private
``nats-server -js`` (both required on PATH) back ``sharerank serve --processes 2``. This process is the client,
open loop: GetFeed at ``--feed-rate`` per second and RecordEvents at ``--event-rate`` batches of ``--batch``
events per second (shares, purchases through earlier acknowledged shares, organic purchases, views) over
``--channels`` connections, each call with a deadline and the retry policy a storefront would configure
(UNAVAILABLE retried up to 3 times with back-off: RecordEvents is idempotent by event id).

At ``--kill-at`` of the run one replica gets SIGKILL; the supervisor restarts it. Every ``--sample`` seconds:
feeds and events done, errors, feed p50/p99 in that window, and the replicas' resident memory (RSS). At the
end the supervisor stops, ``sharerank ingest`` drains the stream into a dataset folder, and every event id a
client saw acknowledged is looked up there: ``missing`` (acknowledged, not logged) and ``repeated`` (logged
more than once) must both be 0; ``unacknowledged_logged`` counts events stored whose acknowledgement the
client never got (in flight at the kill, or past a deadline), which a client would resend as duplicates.

"Flat" is judged on the steady windows, all but those from the kill until the replacement replica answered its
first feed (its Prometheus counter, on ``--metrics-port``): p99 and RSS of the last steady window against the
first, as ratios. JSON on stdout (and ``--out-json``), progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faults import build_registry, free_port, redis_server  # noqa: E402
from report import emit, log  # noqa: E402

RETRY_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "sharerank.v1.FeedService"}, {"service": "sharerank.v1.EventService"}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]})


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not on PATH: the soak needs a private JetStream server")
    port = free_port()
    proc = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(workdir / "jetstream")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                sys.exit("nats-server did not start")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def replica_pids(supervisor: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    except FileNotFoundError:
        return []


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


@dataclass
class Window:
    """What happened in one sampling window."""

    feeds: list[float] = field(default_factory=list)  # latencies, ms
    events: int = 0
    feed_errors: dict[str, int] = field(default_factory=dict)
    event_errors: dict[str, int] = field(default_factory=dict)


class Load:
    """Open-loop clients: calls at fixed rates, results folded into the current window."""

    def __init__(self, port: int, channels: int, users: list[str], batch: int, deadline_s: float, seed: int):
        import grpc

        from sharerank.v1 import event_service_pb2_grpc, feed_service_pb2_grpc

        self.grpc = grpc
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("sharerank.soak.channel", i), ("grpc.service_config", RETRY_CONFIG), ("grpc.enable_retries", 1)])
            for i in range(channels)]
        self.feeds = [feed_service_pb2_grpc.FeedServiceStub(c) for c in self.channels]
        self.events = [event_service_pb2_grpc.EventServiceStub(c) for c in self.channels]
        self.users, self.batch, self.deadline_s = users, batch, deadline_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.window = Window()
        self.acknowledged: set[str] = set()
        self.shares: list[str] = []  # acknowledged share ids, cited by later purchases
        self.sent_events = 0
        self.in_flight = 0
        self._next_id = 0

    def take_window(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window

    def _finished(self, started: float, kind: str, ids: list[str], future) -> None:
        code = future.code()
        with self.lock:
            self.in_flight -= 1
            if kind == "feed":
                if code == self.grpc.StatusCode.OK:
                    self.window.feeds.append((time.perf_counter() - started) * 1000)
                else:
                    self.window.feed_errors[code.name] = self.window.feed_errors.get(code.name, 0) + 1
            elif code == self.grpc.StatusCode.OK:
                self.window.events += len(ids)
                self.acknowledged.update(ids)
                self.shares.extend(i for i in ids if i.startswith("s-"))
            else:
                self.window.event_errors[code.name] = self.window.event_errors.get(code.name, 0) + 1

    def feed(self, n: int) -> None:
        from sharerank.v1 import feed_service_pb2

        request = feed_service_pb2.GetFeedRequest(user_id=self.random.choice(self.users), page_size=20, explain=True)
        self._call("feed", self.feeds[n % len(self.feeds)].GetFeed, request, [])

    def record(self, n: int) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        from sharerank.v1 import event_service_pb2 as pb

        stamp = Timestamp()
        stamp.FromNanoseconds(time.time_ns())
        events, ids = [], []
        with self.lock:
            shares = self.shares[-500:]
        for _ in range(self.batch):
            self._next_id += 1
            kind = self.random.random()
            user, other = self.random.sample(self.users, 2)
            product = f"p{self.random.randrange(2000)}"
            if kind < 0.3:
                event_id = f"s-{self._next_id}"
                body = {"share": pb.ShareEvent(sharer_id=user, recipient_id=other, product_id=product)}
            elif kind < 0.5 and shares:
                event_id = f"b-{self._next_id}"
                body = {"purchase": pb.PurchaseEvent(user_id=other, product_id=product,
                                                     share_id=self.random.choice(shares))}
            elif kind < 0.7:
                event_id = f"o-{self._next_id}"
                body = {"purchase": pb.PurchaseEvent(user_id=user, product_id=product)}
            else:
                event_id = f"v-{self._next_id}"
                body = {"view": pb.ViewEvent(user_id=user, product_id=product)}
            events.append(pb.Event(event_id=event_id, event_time=stamp, **body))
            ids.append(event_id)
        self.sent_events += len(ids)
        self._call("events", self.events[n % len(self.events)].RecordEvents, pb.RecordEventsRequest(events=events),
                   ids)

    def _call(self, kind: str, method, request, ids: list[str]) -> None:
        with self.lock:
            self.in_flight += 1
        started = time.perf_counter()
        future = method.future(request, timeout=self.deadline_s)
        future.add_done_callback(lambda f: self._finished(started, kind, ids, f))

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def paced(rate: float, until: float, stop: threading.Event, action) -> None:
    """Calls ``action(n)`` ``rate`` times a second until ``until`` (open loop: a slow call delays nothing)."""
    period, n = 1.0 / rate, 0
    next_at = time.monotonic()
    while not stop.is_set() and next_at < until:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action(n)
        n += 1
        next_at += period


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    home, _, _ = build_registry(workdir, args.users, args.seed)
    from sharerank.dataset.reader import load_dataset

    users = [str(u) for u in load_dataset(workdir / "world").users]
    with redis_server(workdir) as (redis_url, _), nats_server(workdir) as nats_url:
        port = free_port()
        env = {**os.environ, "SHARERANK_HOME": str(home), "SHARERANK_REDIS_URL": redis_url,
               "SHARERANK_EVENT_STREAM_URL": nats_url, "SHARERANK_RELOAD_POLL_SECONDS": "0",
               "SHARERANK_METRICS_PORT": str(args.metrics_port)}
        serve_log = (workdir / "serve.log").open("w")
        supervisor = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--processes", "2",
                                       "--port", str(port)], env=env, stderr=serve_log)
        load = Load(port, args.channels, users, args.batch, args.deadline, args.seed)
        try:
            wait_serving(load, supervisor)
            result = soak(args, load, supervisor, args.metrics_port)
        finally:
            load.close()
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                supervisor.kill()
        log("draining the stream with sharerank ingest")
        out = workdir / "ingested"
        ingest = subprocess.run([sys.executable, "-m", "sharerank.cli", "ingest", "--out", str(out), "--json"],
                                env=env, capture_output=True, text=True, timeout=600)
        if ingest.returncode != 0:
            sys.exit(f"ingest failed: {ingest.stderr[-2000:]}")
        from sharerank.serving.events.ingest import logged_ids

        ids = logged_ids(out)
    unique = set(ids)
    result["events"] = {
        "sent": load.sent_events,
        "acknowledged": len(load.acknowledged),
        "in_stream": json.loads(ingest.stdout)["read"],
        "logged": len(ids),
        "missing": len(load.acknowledged - unique),
        "repeated": len(ids) - len(unique),
        "unacknowledged_logged": len(unique - load.acknowledged),
        "acknowledged_equals_logged": not (load.acknowledged - unique) and len(ids) == len(unique),
    }
    result["supervisor_exit_code"] = supervisor.returncode
    return result


def wait_serving(load: Load, supervisor: subprocess.Popen, timeout_s: float = 180.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            sys.exit(f"sharerank serve exited with {supervisor.returncode}")
        ready = 0
        for channel in load.channels:
            with contextlib.suppress(load.grpc.RpcError):
                ready += health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                   timeout=1).status == 1
        if ready == len(load.channels) and len(replica_pids(supervisor.pid)) == 2:
            return
        time.sleep(0.2)
    sys.exit("the replicas did not become SERVING")


def soak(args: argparse.Namespace, load: Load, supervisor: subprocess.Popen, metrics_port: int) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import Progress

    duration = args.minutes * 60
    start = time.monotonic()
    until = start + duration
    stop = threading.Event()
    threads = [threading.Thread(target=paced, args=(args.feed_rate, until, stop, load.feed), daemon=True),
               threading.Thread(target=paced, args=(args.event_rate, until, stop, load.record), daemon=True)]
    for thread in threads:
        thread.start()
    samples, kill, recovery = [], None, []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("soak", total=duration)
        while time.monotonic() < until:
            window_end = min(until, time.monotonic() + args.sample)
            while time.monotonic() < window_end:
                if kill is None and time.monotonic() - start >= args.kill_at * duration:
                    kill = kill_one(supervisor, start)
                if kill is not None and "recovered_s" not in kill:
                    recovery.append(len(samples))
                    if replica_pids(supervisor.pid) and feeds_served(metrics_port) > 0:
                        kill["recovered_s"] = round(time.monotonic() - start - kill["t_s"], 1)
                        log(f"replacement replica served its first feed {kill['recovered_s']} s after the kill")
                time.sleep(0.1)
                progress.update(task, completed=time.monotonic() - start)
            window = load.take_window()
            sample = {"t_s": round(time.monotonic() - start), "feeds": len(window.feeds),
                      "feed_p50_ms": percentile(window.feeds, 0.5), "feed_p99_ms": percentile(window.feeds, 0.99),
                      "events": window.events, "feed_errors": window.feed_errors,
                      "event_errors": window.event_errors, "rss_mib": rss_mib(replica_pids(supervisor.pid)),
                      "replicas": len(replica_pids(supervisor.pid))}
            samples.append(sample)
            log(f"t={sample['t_s']}s feeds {sample['feeds']} p99 {sample['feed_p99_ms']} ms, events "
                f"{sample['events']}, errors {window.feed_errors or 0}/{window.event_errors or 0}, RSS "
                f"{sample['rss_mib']} MiB")
    for thread in threads:
        thread.join()
    drain_deadline = time.monotonic() + args.deadline + 5
    while load.in_flight and time.monotonic() < drain_deadline:
        time.sleep(0.05)
    last = load.take_window()  # calls that finished after the last sample
    samples[-1]["feed_errors"] = merge(samples[-1]["feed_errors"], last.feed_errors)
    samples[-1]["event_errors"] = merge(samples[-1]["event_errors"], last.event_errors)
    samples[-1]["events"] += last.events
    return summarise(args, samples, kill, set(recovery))


def feeds_served(metrics_port: int) -> float:
    """GetFeed calls replica 0 answered OK, from its Prometheus endpoint (0 while it is not up)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sharerank_grpc_requests_total{") and "GetFeed" in line and '"OK"' in line)


def kill_one(supervisor: subprocess.Popen, start: float) -> dict[str, Any]:
    """SIGKILL replica 0 (its metrics port tells when its replacement serves)."""
    victim = next(pid for pid in replica_pids(supervisor.pid)
                  if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2:-1] == [b"0"])
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    log(f"kill -9 replica pid {victim} at t={killed_at - start:.0f}s")
    return {"t_s": round(killed_at - start, 1), "pid": victim}


def merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def summarise(args: argparse.Namespace, samples: list[dict], kill: dict | None, around_kill: set[int]
              ) -> dict[str, Any]:
    """Steady windows: all but those from the kill until the replacement replica served (recovery)."""
    steady = [s for i, s in enumerate(samples) if i not in around_kill and s["feed_p99_ms"] is not None]

    def errors(rows: list[dict]) -> int:
        return sum(sum(s["feed_errors"].values()) + sum(s["event_errors"].values()) for s in rows)

    first, final = (steady[0], steady[-1]) if steady else ({}, {})
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out_json"},
        "samples": samples,
        "kill": kill,
        "recovery_windows": sorted(around_kill),
        "feeds": sum(s["feeds"] for s in samples),
        "errors": errors(samples),
        "errors_outside_kill_window": errors([s for i, s in enumerate(samples) if i not in around_kill]),
        "p99_last_over_first": round(final["feed_p99_ms"] / first["feed_p99_ms"], 2) if steady else None,
        "p99_median_ms": percentile([s["feed_p99_ms"] for s in steady], 0.5),
        "p99_max_ms": max((s["feed_p99_ms"] for s in steady), default=None),
        "rss_first_mib": first.get("rss_mib"),
        "rss_last_mib": final.get("rss_mib"),
        "rss_last_over_first": round(final["rss_mib"] / first["rss_mib"], 3) if steady else None,
        "replicas_at_end": samples[-1]["replicas"] if samples else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--feed-rate", type=float, default=150.0, help="GetFeed calls per second.")
    parser.add_argument("--event-rate", type=float, default=20.0, help="RecordEvents calls per second.")
    parser.add_argument("--batch", type=int, default=5, help="Events per RecordEvents call.")
    parser.add_argument("--channels", type=int, default=8, help="Client connections (spread over the replicas).")
    parser.add_argument("--deadline", type=float, default=2.0, help="Deadline of each call, seconds.")
    parser.add_argument("--kill-at", type=float, default=0.5, help="When to kill -9 a replica, as a part of the run.")
    parser.add_argument("--sample", type=float, default=30.0, help="Seconds per sampling window.")
    parser.add_argument("--users", type=int, default=5000, help="Users of the simulated world served.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--metrics-port", type=int, default=19464, help="Replica i serves metrics on this + i.")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sharerank-soak-") as workdir:
        emit(run(args, Path(workdir)), args.out_json)


if __name__ == "__main__":
    main()
