"""Loopback gRPC benchmark of GetFeed: the real server, a synthetic 1M-product model, one client process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feed_grpc.py --products 1000000 --users 100000 \\
        --processes 1,2 --repeats 3 --out-json bench/results/feed_grpc.json

Who runs where (read the figures knowing the machine: 2 cores here, shared by server and client):

- **parent** (this process): builds a synthetic :class:`ModelBundle` (random clustered 64-d embeddings, no
  training; ``--cache DIR`` keeps it between runs), tunes the IVF index's nprobe on 2,000 users' embeddings
  exactly as training does (``ProductIndex.tune_nprobe``, recall@100 ≥ 0.95 against exact search), fills
  the online store with live state for part of the request users, and times ``FeedPipeline.run`` in-process
  (the pipeline-only baseline). It then forks the server processes and drives the client. It creates no
  gRPC object itself: gRPC must not be initialised before a fork (grpc/grpc#16001).
- **server process(es)**: each calls ``create_server`` with a ``ModelHolder`` serving the bundle
  (``ModelHolder.serve_bundle``), its own event-log folder (one writer per folder) and its own metrics
  port. With ``--processes N`` > 1 they listen on the same port: gRPC sets SO_REUSEPORT on Linux by default,
  and the kernel spreads *connections* (not calls) over the processes. The bundle is built before the fork,
  so the processes share its pages copy-on-write.
- **client process**: a separate Python process (so its CPU is not counted as server time, though it uses
  the same 2 cores), driven line by line over stdin/stdout. One request in flight: one channel, calls back
  to back. N in flight: N channels (distinct channel arguments, so N TCP connections that SO_REUSEPORT can
  spread), each re-issuing a call from its completion callback (``future()`` + ``add_done_callback``).

Measured per configuration (online store × server processes), ``--repeats`` times each; every configuration's
servers stay up for the whole run and each repeat measures them one after another, so the machine's drift
hits the compared configurations alike:

- ``feed_latency``: GetFeed (page_size 20, explain on) with one request in flight: client p50/p99.
- ``feed_throughput``: GetFeed with ``--in-flight`` (16) requests in flight for ``--seconds``: calls/s and
  client p50/p99 under that load.
- ``info_latency``: GetModelInfo, a trivial call, one in flight: the gRPC + Python floor of a call, measured
  beside the feed in the same run (machines here are noisy; compare against it).
- server side of each: from the servers' Prometheus histogram ``sharerank_grpc_request_duration_seconds``
  (time in handler and interceptors; (de)serialisation and transport not included): exact mean
  (sum/count), p50/p99 interpolated in its buckets, and the share of calls ≤ 1 ms (exact: 1 ms is a bucket
  edge); plus server CPU per call (utime+stime of the server processes from /proc) and client CPU per call.

Reported: every repeat, and per figure the median with min and max over repeats. Targets:
server p50 ≤ 1 ms, loopback p99 ≤ 5 ms (one in flight), ≥ 2,000 feeds/s. ``ratios`` compares within the run,
repeat by repeat (median [min–max]): Redis minus in-process server mean per feed at each process count, feed
p50 over GetModelInfo p50 per configuration, and feeds/s with Redis at the largest process count, against
:data:`RATIO_TARGETS`. Progress goes to stderr, JSON to stdout (and ``--out-json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the server: one FAISS thread per request

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feed import log, synthetic_bundle  # noqa: E402

FEED_METHOD = "sharerank.v1.FeedService/GetFeed"
INFO_METHOD = "sharerank.v1.AdminService/GetModelInfo"
KEY_PREFIX = "sr:bench-feed-grpc:"
TARGETS = {"server_p50_ms": 1.0, "loopback_p99_ms": 5.0, "feeds_per_s": 2000.0}
RATIO_TARGETS = {"redis_extra_server_ms": 0.2, "feed_over_info_p50": 1.5, "redis_feeds_per_s": 2000.0}
"""Issue 16's targets, as comparisons inside one run (the machine is noisy; absolute figures drift between runs):
the Redis path's server mean per feed above the in-process store's, the loopback feed p50 over GetModelInfo's,
and feeds/s with Redis at the largest process count."""


# ---------------------------------------------------------------------------------------------- the model


def build_bundle(args: argparse.Namespace):
    """The synthetic bundle with its nprobe tuned, from ``--cache`` when it holds one of the same shape."""
    import faiss

    from sharerank.models.artifact.bundle import ModelBundle

    shape = {"products": args.products, "users": args.users, "dim": args.dim, "clusters": args.clusters,
             "seed": args.seed, "target": args.recall_target}
    cached = Path(args.cache) / f"bundle-{args.products}-{args.users}-{args.dim}-{args.clusters}" if args.cache \
        else None
    if cached is not None and (cached / "shape.json").exists() \
            and json.loads((cached / "shape.json").read_text()) == shape:
        log(f"loading the bundle from {cached}")
        return ModelBundle.load(cached).warm()
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # build on every core (this thread only; reset below)
    try:
        bundle = synthetic_bundle(args.products, args.users, args.dim, seed=args.seed, clusters=args.clusters)
        started = time.perf_counter()
        active = np.flatnonzero(bundle.has_history)
        sample = np.sort(np.random.default_rng(args.seed).permutation(active)[:2000])
        report = bundle.index.tune_nprobe(bundle.user_embedding[sample], k=100, target=args.recall_target)
    finally:
        faiss.omp_set_num_threads(1)
    bundle.info["index"] = {"kind": bundle.index.kind, **(report.to_dict() if report else {})}
    log(f"nprobe tuned in {time.perf_counter() - started:.1f}s: {bundle.info['index']}")
    if cached is not None:
        bundle.save(cached)
        (cached / "shape.json").write_text(json.dumps(shape))
        log(f"bundle cached in {cached}")
    return bundle


def request_users(bundle, count: int, seed: int) -> list[str]:
    """Users the client asks for: mostly known users, some nobody knows (popular / cold start)."""
    rng = np.random.default_rng(seed)
    known = [str(u) for u in bundle.users[rng.choice(len(bundle.users), count, replace=False)]]
    unknown = max(1, count // 20)
    return known[: count - unknown] + [f"newcomer-{i}" for i in range(unknown)]


def fill_store(store, bundle, users: list[str], seed: int) -> None:
    """Live state for every other request user: purchases, friends' purchases and shares received."""
    from sharerank.serving.online_store import Purchase
    from sharerank.serving.online_store.base import Share

    rng = np.random.default_rng(seed)
    now = time.time()
    n = len(bundle.products)
    live = users[::2]
    pick = lambda k: [str(bundle.products[p]) for p in rng.integers(0, n, k)]  # noqa: E731
    store.record_purchases([Purchase(u, p, now - i) for u in live for i, p in enumerate(pick(5))])
    store.record_friend_purchases([(u, Purchase(f"friend-{i % 7}", p, now - 60 * i)) for u in live
                                   for i, p in enumerate(pick(5))])
    store.record_shares([Share(f"sharer-{i}", u, p, now - 60 * i) for u in live for i, p in enumerate(pick(3))])


def pipeline_baseline(bundle, users: list[str], page_size: int, calls: int, seed: int) -> dict[str, float]:
    """``FeedPipeline.run`` in this process (no gRPC) over the same users, in-process store: the floor."""
    from sharerank.serving.feed.pipeline import FeedPipeline
    from sharerank.serving.online_store import InMemoryOnlineStore

    store = InMemoryOnlineStore()
    fill_store(store, bundle, users, seed)
    pipeline = FeedPipeline(store)
    for user in users[:100]:
        pipeline.run(model=bundle, user_id=user, page_size=page_size, explain=True)
    samples = []
    for i in range(calls):
        started = time.perf_counter_ns()
        pipeline.run(model=bundle, user_id=users[i % len(users)], page_size=page_size, explain=True)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return percentiles(samples)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(np.mean(samples_ms)), 3), "n": len(samples_ms)}


# ------------------------------------------------------------------------------------- server processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fork_server(number: int, port: int, bundle, store_url: str, workdir: Path, workers: int) -> tuple[int, Path]:
    """Forks one server process; returns its pid and the file it writes ``{"metrics_port": ...}`` to when up."""
    ready = workdir / f"server-{port}-{number}.json"
    pid = os.fork()
    if pid:
        return pid, ready
    code = 0
    try:
        serve_child(number, port, bundle, store_url, workdir, workers, ready)
    except BaseException:  # noqa: BLE001 - the child reports and exits; the parent sees it never got ready
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def serve_child(number: int, port: int, bundle, store_url: str, workdir: Path, workers: int, ready: Path) -> None:
    # gRPC is imported and initialised only here, after the fork.
    from sharerank.config import Settings
    from sharerank.serving.model_holder import ModelHolder
    from sharerank.serving.online_store import InMemoryOnlineStore, RedisSettings, open_online_store
    from sharerank.serving.server import create_server, serve_forever

    settings = Settings(home=workdir / f"home-{port}-{number}", event_log_dir=workdir / f"events-{port}-{number}",
                        reload_poll_seconds=0, metrics_port=0, workers=workers)
    if store_url == "memory://":
        store = InMemoryOnlineStore()
        fill_store(store, bundle, json.loads((workdir / "users.json").read_text()), 1)
    else:
        store = open_online_store(store_url, settings=RedisSettings(key_prefix=KEY_PREFIX,
                                                                     max_connections=workers + 4))
    holder = ModelHolder(settings)
    holder.serve_bundle(bundle, "synthetic-1", run_id="bench")
    server = create_server(settings, store, holder, address=f"127.0.0.1:{port}", metrics_address="127.0.0.1:0")
    partial = ready.with_suffix(".tmp")
    partial.write_text(json.dumps({"pid": os.getpid(), "metrics_port": server.metrics_port}))
    partial.replace(ready)  # atomic: the parent never reads half a file
    serve_forever(server)


class Servers:
    """N forked server processes on one port; scrapes their metrics and CPU time."""

    def __init__(self, count: int, bundle, store_url: str, workdir: Path, workers: int):
        self.port = free_port()
        self.children = [fork_server(i, self.port, bundle, store_url, workdir, workers) for i in range(count)]
        self.metrics_ports: list[int] = []
        try:
            deadline = time.monotonic() + 300
            for pid, ready in self.children:
                while not ready.exists():
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        raise RuntimeError(f"server process {pid} exited ({status}) before it was ready")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server process {pid} not ready after 300 s")
                    time.sleep(0.05)
                port = json.loads(ready.read_text())["metrics_port"]
                if port is None:
                    raise RuntimeError(f"server process {pid} has no metrics endpoint")
                self.metrics_ports.append(port)
        except BaseException:
            self.stop()
            raise

    def snapshot(self) -> dict[str, Any]:
        """Histogram state of every method summed over the processes, and their CPU seconds."""
        from prometheus_client.parser import text_string_to_metric_families

        methods: dict[str, dict[str, Any]] = {}
        for number, port in enumerate(self.metrics_ports):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            for family in text_string_to_metric_families(text):
                if family.name != "sharerank_grpc_request_duration_seconds":
                    continue
                for sample in family.samples:
                    entry = methods.setdefault(sample.labels["method"], {"count": 0.0, "sum": 0.0, "buckets": {},
                                                                         "by_process": [0.0] * len(self.children)})
                    if sample.name.endswith("_bucket"):
                        le = float(sample.labels["le"])
                        entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
                    elif sample.name.endswith("_count"):
                        entry["count"] += sample.value
                        entry["by_process"][number] += sample.value
                    elif sample.name.endswith("_sum"):
                        entry["sum"] += sample.value
        return {"methods": methods, "cpu_s": sum(process_cpu_seconds(pid) for pid, _ in self.children)}

    def stop(self) -> None:
        for pid, _ in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid, _ in self.children:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:  # already reaped
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_side(before: dict[str, Any], after: dict[str, Any], method: str) -> dict[str, Any]:
    """What the servers' histogram saw of ``method`` between two snapshots."""
    start = before["methods"].get(method, {"count": 0.0, "sum": 0.0, "buckets": {}, "by_process": None})
    end = after["methods"].get(method)
    if end is None:
        return {}
    count = end["count"] - start["count"]
    if count <= 0:
        return {}
    buckets = sorted((le, value - start["buckets"].get(le, 0.0)) for le, value in end["buckets"].items())
    le_1ms = next(v for le, v in buckets if abs(le - 0.001) < 1e-12)
    return {"calls": int(count), "mean_ms": round((end["sum"] - start["sum"]) / count * 1e3, 3),
            "p50_ms": round(bucket_quantile(buckets, 0.5) * 1e3, 3),
            "p99_ms": round(bucket_quantile(buckets, 0.99) * 1e3, 3),
            "share_le_1ms": round(le_1ms / count, 4),
            "cpu_ms_per_call": round((after["cpu_s"] - before["cpu_s"]) / count * 1e3, 3),
            "calls_by_process": [int(b - a) for a, b in zip(start["by_process"] or [0] * len(end["by_process"]),
                                                          end["by_process"], strict=True)]}


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus ``histogram_quantile``: linear within the bucket holding rank q (cumulative buckets)."""
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (cumulative - below) if cumulative > below else 0.0)
        lower, below = le, cumulative
    return lower


# -------------------------------------------------------------------------------------------- the client


class Client:
    """The client subprocess (this file with ``--client``), one JSON command and answer per line."""

    def __init__(self, port: int, users_file: Path, page_size: int):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client", "--port", str(port), "--users-file", str(users_file),
             "--page-size", str(page_size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def client_main(args: argparse.Namespace) -> None:
    import threading

    import grpc

    from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc

    users = json.loads(Path(args.users_file).read_text())
    requests = [feed_service_pb2.GetFeedRequest(user_id=u, page_size=args.page_size, explain=True) for u in users]
    target = f"127.0.0.1:{args.port}"
    channels = [grpc.insecure_channel(target, options=[("sharerank.bench.channel", i)]) for i in range(64)]
    feeds = [feed_service_pb2_grpc.FeedServiceStub(c) for c in channels]
    admin = admin_service_pb2_grpc.AdminServiceStub(channels[0])
    info_request = admin_service_pb2.GetModelInfoRequest()

    def cpu() -> float:
        return time.process_time()

    def latency(method: str, calls: int) -> dict[str, Any]:
        call = (lambda i: feeds[0].GetFeed(requests[i % len(requests)], timeout=10)) if method == "feed" else \
            (lambda i: admin.GetModelInfo(info_request, timeout=10))
        samples, started_cpu = [], cpu()
        for i in range(calls):
            started = time.perf_counter_ns()
            call(i)
            samples.append((time.perf_counter_ns() - started) / 1e6)
        return {**percentiles(samples), "client_cpu_ms_per_call": round((cpu() - started_cpu) / calls * 1e3, 3)}

    def throughput(in_flight: int, seconds: float) -> dict[str, Any]:
        lock, done = threading.Lock(), threading.Event()
        samples: list[float] = []
        errors: dict[str, int] = {}
        state = {"next": 0, "open": in_flight, "last": 0.0}
        end = time.perf_counter() + seconds

        def issue(slot: int) -> None:
            with lock:
                i = state["next"]
                state["next"] += 1
            started = time.perf_counter_ns()
            future = feeds[slot].GetFeed.future(requests[i % len(requests)], timeout=10)
            future.add_done_callback(lambda f: finished(f, slot, started))

        def finished(future, slot: int, started: int) -> None:
            took = (time.perf_counter_ns() - started) / 1e6
            code = future.code()
            with lock:
                if code == grpc.StatusCode.OK:
                    samples.append(took)
                else:
                    errors[code.name] = errors.get(code.name, 0) + 1
                state["last"] = time.perf_counter()
            if time.perf_counter() < end:
                issue(slot)
                return
            with lock:
                state["open"] -= 1
                if state["open"] == 0:
                    done.set()

        started_cpu, started = cpu(), time.perf_counter()
        for slot in range(in_flight):
            issue(slot)
        done.wait(seconds + 60)
        elapsed = state["last"] - started
        return {"calls_per_s": round(len(samples) / elapsed, 1), "seconds": round(elapsed, 3), "errors": errors,
                **percentiles(samples),
                "client_cpu_ms_per_call": round((cpu() - started_cpu) / max(len(samples), 1) * 1e3, 3)}

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "latency":
            answer = latency(command["method"], command["calls"])
        elif command["op"] == "throughput":
            answer = throughput(command["in_flight"], command["seconds"])
        else:
            answer = {"error": f"unknown op {command['op']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for channel in channels:
        channel.close()


# ------------------------------------------------------------------------------------------ orchestration


def redis_for_bench(args: argparse.Namespace, workdir: Path) -> tuple[str | None, subprocess.Popen | None]:
    """The Redis URL to bench against: ``--redis-url``, else a private redis-server, else none."""
    import redis

    if args.redis_url == "none":
        return None, None
    if args.redis_url:
        return args.redis_url, None
    binary = shutil.which("redis-server")
    if binary is None:
        log("no redis-server on PATH and no --redis-url: Redis skipped")
        return None, None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url, socket_timeout=0.2).ping():
                log(f"private redis-server on port {port}")
                return url, proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    log("the private redis-server did not start: Redis skipped")
    return None, None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max over repeats of every number in the runs (nested by phase)."""
    out: dict[str, Any] = {}
    for phase in runs[0]:
        out[phase] = {}
        for side in ("client", "server"):
            values: dict[str, list[float]] = {}
            for run in runs:
                for key, value in run[phase].get(side, {}).items():
                    if isinstance(value, int | float):
                        values.setdefault(key, []).append(float(value))
            out[phase][side] = {key: {"median": round(float(np.median(v)), 3), "min": round(min(v), 3),
                                      "max": round(max(v), 3)} for key, v in values.items()}
    return out


class Config:
    """One configuration's servers and client, up for the whole run, so each repeat measures every configuration
    one after another (the machine's noise then hits the compared figures alike)."""

    def __init__(self, bundle, store_url: str, processes: int, args: argparse.Namespace, workdir: Path):
        self.store, self.processes = ("memory" if store_url == "memory://" else "redis"), processes
        self.label = f"{self.store} x{processes}"
        log(f"[{self.label}] starting {processes} server process(es)")
        started = time.perf_counter()
        self.servers = Servers(processes, bundle, store_url, workdir, args.workers)
        self.client: Client | None = None
        self.runs: list[dict[str, Any]] = []
        log(f"[{self.label}] servers up in {time.perf_counter() - started:.1f}s on port {self.servers.port}")

    def warm_up(self, args: argparse.Namespace, workdir: Path) -> None:
        """Starts the client (after every server is forked: a server forked later would hold the client's stdin
        open, and the client would never see it end) and warms connections, caches and code paths."""
        self.client = Client(self.servers.port, workdir / "users.json", args.page_size)
        self.client.ask(op="latency", method="feed", calls=args.warmup)
        self.client.ask(op="throughput", in_flight=args.in_flight, seconds=1.0)

    def measure(self, args: argparse.Namespace) -> None:
        run: dict[str, Any] = {}
        for phase, command, method in (
                ("info_latency", {"op": "latency", "method": "info", "calls": args.calls}, INFO_METHOD),
                ("feed_latency", {"op": "latency", "method": "feed", "calls": args.calls}, FEED_METHOD),
                ("feed_throughput", {"op": "throughput", "in_flight": args.in_flight,
                                     "seconds": args.seconds}, FEED_METHOD)):
            before = self.servers.snapshot()
            answer = self.client.ask(**command)
            run[phase] = {"client": answer, "server": server_side(before, self.servers.snapshot(), method)}
        self.runs.append(run)
        log(f"[{self.label}] repeat {len(self.runs)}: feed p50 {run['feed_latency']['client']['p50_ms']} ms "
            f"p99 {run['feed_latency']['client']['p99_ms']} ms, server mean "
            f"{run['feed_latency']['server'].get('mean_ms')} ms; "
            f"{run['feed_throughput']['client']['calls_per_s']} feeds/s at {args.in_flight} in flight "
            f"(errors {run['feed_throughput']['client']['errors']}); info p50 "
            f"{run['info_latency']['client']['p50_ms']} ms")

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.servers.stop()

    def result(self) -> dict[str, Any]:
        summary = summarise(self.runs)
        return {"store": self.store, "processes": self.processes, "summary": summary,
                "targets_met": targets_met(summary), "runs": self.runs}


def run_configs(bundle, urls: list[str], args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Every (store, processes) configuration, its repeats interleaved with the others'."""
    configs: list[Config] = []
    try:
        for url in urls:
            for processes in (int(p) for p in args.processes.split(",")):
                configs.append(Config(bundle, url, processes, args, workdir))
        for config in configs:
            config.warm_up(args, workdir)
        for _ in range(args.repeats):
            for config in configs:
                config.measure(args)
    finally:
        for config in configs:
            config.stop()
    return [config.result() for config in configs]


def targets_met(summary: dict[str, Any]) -> dict[str, Any]:
    server_p50 = summary["feed_latency"]["server"].get("p50_ms", {}).get("median")
    share = summary["feed_latency"]["server"].get("share_le_1ms", {}).get("median")
    p99 = summary["feed_latency"]["client"]["p99_ms"]["median"]
    rate = summary["feed_throughput"]["client"]["calls_per_s"]["median"]
    return {"server_p50_le_1ms": share is not None and share >= 0.5, "server_p50_ms_estimate": server_p50,
            "loopback_p99_le_5ms": p99 <= TARGETS["loopback_p99_ms"], "loopback_p99_ms": p99,
            "feeds_per_s_ge_2000": rate >= TARGETS["feeds_per_s"], "feeds_per_s": rate}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """:data:`RATIO_TARGETS`' figures, each computed per repeat from configurations of this run."""
    by = {(r["store"], r["processes"]): r["runs"] for r in results}
    out: dict[str, Any] = {"targets": RATIO_TARGETS, "feed_over_info_p50": {}, "redis_extra_server_ms": {}}
    for (store, processes), runs in by.items():
        out["feed_over_info_p50"][f"{store} x{processes}"] = spread(
            [r["feed_latency"]["client"]["p50_ms"] / r["info_latency"]["client"]["p50_ms"] for r in runs])
        memory = by.get(("memory", processes))
        if store == "redis" and memory:
            out["redis_extra_server_ms"][f"x{processes}"] = spread(
                [r["feed_latency"]["server"]["mean_ms"] - m["feed_latency"]["server"]["mean_ms"]
                 for r, m in zip(runs, memory, strict=True)])
    redis_runs = [(p, runs) for (store, p), runs in by.items() if store == "redis"]
    if redis_runs:
        processes, runs = max(redis_runs, key=lambda item: item[0])
        out["redis_feeds_per_s"] = {"processes": processes, **spread(
            [r["feed_throughput"]["client"]["calls_per_s"] for r in runs])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1000, help="Embedding clusters (0: isotropic).")
    parser.add_argument("--recall-target", type=float, default=0.95, help="Recall@100 the tuned nprobe reaches.")
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--processes", default="1,2", help="Server process counts to run, comma-separated.")
    parser.add_argument("--workers", type=int, default=8, help="gRPC worker threads per server process.")
    parser.add_argument("--stores", default="memory,redis", help="Online stores: memory, redis (comma-separated).")
    parser.add_argument("--redis-url", default=None,
                        help="Redis to use; default a private redis-server when on PATH; 'none' skips Redis.")
    parser.add_argument("--request-users", type=int, default=2000, help="Distinct users the client asks for.")
    parser.add_argument("--calls", type=int, default=2000, help="Calls per one-in-flight latency phase.")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each throughput phase.")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="Folder to keep the built bundle in between runs.")
    parser.add_argument("--out-json", default=None)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--users-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return

    started = time.perf_counter()
    bundle = build_bundle(args)
    log(f"bundle ready in {time.perf_counter() - started:.1f}s: {bundle.index!r}")
    users = request_users(bundle, args.request_users, args.seed)
    baseline = pipeline_baseline(bundle, users, args.page_size, min(args.calls, 1000), 1)
    log(f"pipeline in-process (no gRPC): {baseline}")
    with tempfile.TemporaryDirectory(prefix="bench-feed-grpc-") as tmp:
        workdir = Path(tmp)
        (workdir / "users.json").write_text(json.dumps(users))
        stores = [s.strip() for s in args.stores.split(",") if s.strip()]
        redis_url, redis_proc = redis_for_bench(args, workdir) if "redis" in stores else (None, None)
        try:
            if redis_url is not None:
                fill_redis(redis_url, bundle, users)
            urls = [url for url in ("memory://" if store == "memory" else redis_url for store in stores) if url]
            results = run_configs(bundle, urls, args, workdir)
        finally:
            if redis_url is not None:
                clear_redis(redis_url)
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    compared = ratios(results)
    log(f"ratios: {json.dumps(compared)}")
    report = {
        "benchmark": "GetFeed over loopback gRPC",
        "products": args.products, "users": args.users, "dim": args.dim, "clusters": args.clusters,
        "page_size": args.page_size, "explain": True, "index": bundle.info.get("index", {"kind": bundle.index.kind}),
        "request_users": len(users), "live_state_users": len(users[::2]), "workers_per_process": args.workers,
        "in_flight": args.in_flight, "calls_per_latency_phase": args.calls, "throughput_seconds": args.seconds,
        "repeats": args.repeats, "targets": TARGETS, "machine": {
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform()},
        "pipeline_in_process": baseline, "ratios": compared, "configs": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(text + "\n")


def fill_redis(url: str, bundle, users: list[str]) -> None:
    from sharerank.serving.online_store import RedisSettings, open_online_store

    store = open_online_store(url, settings=RedisSettings(key_prefix=KEY_PREFIX))
    try:
        store.clear()
        fill_store(store, bundle, users, 1)
    finally:
        store.close()


def clear_redis(url: str) -> None:
    from sharerank.serving.online_store import RedisSettings, open_online_store

    store = open_online_store(url, settings=RedisSettings(key_prefix=KEY_PREFIX))
    try:
        store.clear()
    finally:
        store.close()


if __name__ == "__main__":
    main()
