"""Feed latency under faults: idle, under concurrent heavy seeding, and with a hung Redis (SIGSTOP).

    .venv/bin/python bench/bench_faults.py --users 20000 --repeats 3 --out-json bench/results/faults.json

A simulated world (``--users``) is trained into a throwaway MLflow registry (a small LightGCN, as the tests
train), then served by ``sharerank serve`` in its own process against a private ``redis-server`` (required
on PATH). This process is the client: one feed in flight, ``--feeds`` GetFeed calls (page_size 20, deadline
``--feed-deadline``) per phase, and for each repeat:

- ``idle``: feeds alone;
- ``seeding``: feeds while ``--seeders`` clients call GetSeedTargets back to back (budget ``--budget``,
  epsilon ``--epsilon``), each waiting as long as a refusal's RetryInfo says;
- ``hung_redis``: feeds after the private Redis is frozen with SIGSTOP and the server's circuit breaker has
  opened (read from its Prometheus endpoint); then SIGCONT, and the time until the breaker closes.

Baselines, each repeat's seeding phase again against another server, in the same run: ``--threads`` runs
seeding on a niced thread of the server process (``SHARERANK_HEAVY_PROCESSES=false``) instead of a worker
process; ``--without-bulkhead`` on threads as many as the gRPC pool (``SHARERANK_HEAVY_WORKERS=16``,
``SHARERANK_HEAVY_QUEUE=16``): the behaviour before bulkheads.

Figures per phase: client p50/p99 (ms) and deadline misses; ratios of each phase's p99 to idle's p99 in the
same repeat; medians with [min, max] over repeats. JSON on stdout (and ``--out-json``), progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit, log  # noqa: E402

SMALL_LIGHTGCN = {"epochs": 6, "embedding_dim": 16, "num_layers": 2, "lr": 5e-3, "batch_size": 2048}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_registry(workdir: Path, users: int, seed: int) -> tuple[Path, str, list[str]]:
    """Simulates a world, trains it into a registry under ``workdir/home``; returns (home, the most bought
    category, 200 of its users)."""
    from sharerank.config import Settings
    from sharerank.dataset.reader import load_dataset
    from sharerank.registry import promote
    from sharerank.training.jobs import run_training
    from sharerank.training.sources.simulate import simulate_world

    world = workdir / "world"
    started = time.perf_counter()
    simulate_world(world, users=users, seed=seed)
    settings = Settings(home=workdir / "home", reload_poll_seconds=0, metrics_port=0)
    report = run_training([world], settings, model="lightgcn", params=SMALL_LIGHTGCN)
    promote(settings, report["version"])
    data = load_dataset(world)
    category = str(data.category[int(statistics.mode(data.purchases.product.tolist()))])
    log(f"world of {users} users trained in {time.perf_counter() - started:.0f} s; launch category {category}")
    return settings.home, category, [str(u) for u in data.users[:: max(1, len(data.users) // 200)]]


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: the hung-Redis phase needs a private one")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


class ServerProcess:
    """``sharerank serve`` in a child process, with its metrics endpoint."""

    def __init__(self, home: Path, redis_url: str, workdir: Path, extra_env: dict[str, str]):
        self.port, self.metrics_port = free_port(), free_port()
        events = workdir / f"events-{self.port}"
        env = {**os.environ, "SHARERANK_HOME": str(home), "REDIS_URL": redis_url, "SHARERANK_RELOAD_POLL_SECONDS": "0",
               "SHARERANK_METRICS_PORT": str(self.metrics_port), "SHARERANK_EVENT_LOG_DIR": str(events), **extra_env}
        self.proc = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_serving(self, timeout_s: float = 120.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                if self.proc.poll() is not None:
                    sys.exit(f"server exited with {self.proc.returncode}")
                time.sleep(0.1)
        sys.exit("server did not become SERVING")

    def metric(self, name: str) -> float | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


MAX_MISSED = 20
"""A phase stops after this many missed deadlines (without a bulkhead every feed waits out its deadline)."""


def feed_phase(port: int, users: list[str], calls: int, deadline_s: float) -> dict[str, Any]:
    """Up to ``calls`` GetFeed calls back to back, one in flight, stopping at :data:`MAX_MISSED` misses: p50/p99
    of the answered ones (ms), calls made and missed deadlines."""
    import grpc

    from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

    took, missed = [], 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = feed_service_pb2_grpc.FeedServiceStub(channel)
        for i in range(calls):
            if missed >= MAX_MISSED:
                calls = i
                break
            request = feed_service_pb2.GetFeedRequest(user_id=users[i % len(users)], page_size=20)
            started = time.perf_counter()
            try:
                stub.GetFeed(request, timeout=deadline_s)
                took.append((time.perf_counter() - started) * 1000)
            except grpc.RpcError:
                missed += 1
    took.sort()
    return {"calls": calls, "missed_deadline": missed, "p50_ms": _pct(took, 0.5), "p99_ms": _pct(took, 0.99)}


def _pct(sorted_ms: list[float], q: float) -> float | None:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 3) if sorted_ms else None


@contextlib.contextmanager
def seeding_load(port: int, seeders: int, category: str, budget: int, epsilon: float) -> Iterator[dict[str, Any]]:
    """``seeders`` clients calling GetSeedTargets back to back, honouring RetryInfo, in a process of their own
    (in this one their threads would take the measuring client's GIL, as a storefront's would not); yields
    their tally, filled in on exit."""
    import grpc

    from sharerank.v1 import seeding_service_pb2, seeding_service_pb2_grpc

    request = seeding_service_pb2.GetSeedTargetsRequest(category=category, budget=budget, epsilon=epsilon)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # starts the worker, which loads the model
        seeding_service_pb2_grpc.SeedingServiceStub(channel).GetSeedTargets(request, timeout=300)
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    process = context.Process(target=seed_back_to_back, args=(port, seeders, category, budget, epsilon, stop,
                                                              results), daemon=True)
    process.start()
    tally: dict[str, Any] = {}
    time.sleep(1.0)  # let the load build up before measuring feeds (a warm-up, not a condition)
    try:
        yield tally
    finally:
        stop.set()
        tally.update(results.get(timeout=600))
        process.join(timeout=60)


def seed_back_to_back(port: int, seeders: int, category: str, budget: int, epsilon: float, stop,
                      results) -> None:
    """The seeding clients' process: ``seeders`` threads until ``stop``; puts their tally on ``results``."""
    import grpc

    from sharerank.serving.errors import retry_info
    from sharerank.v1 import seeding_service_pb2, seeding_service_pb2_grpc

    tally: dict[str, Any] = {"ok": 0, "refused": 0, "other": 0}
    seconds: list[float] = []
    request = seeding_service_pb2.GetSeedTargetsRequest(category=category, budget=budget, epsilon=epsilon)

    def run() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = seeding_service_pb2_grpc.SeedingServiceStub(channel)
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    stub.GetSeedTargets(request, timeout=300)
                    tally["ok"] += 1
                    seconds.append(time.perf_counter() - started)
                except grpc.RpcError as error:
                    hint = retry_info(error)
                    tally["refused" if hint is not None else "other"] += 1
                    stop.wait(hint.retry_delay.ToNanoseconds() / 1e9 if hint is not None else 0.1)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(seeders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    tally["ok_median_s"] = round(statistics.median(seconds), 3) if seconds else None
    results.put(tally)


def wait_metric(server: ServerProcess, name: str, value: float, timeout_s: float, poke) -> float:
    """Seconds until ``name`` reads ``value`` (``poke()`` between reads drives traffic)."""
    started = time.monotonic()
    while server.metric(name) != value:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{name} never read {value}")
        poke()
    return time.monotonic() - started


BASELINES = {
    "threads": {"SHARERANK_HEAVY_PROCESSES": "false"},
    "without_bulkhead": {"SHARERANK_HEAVY_PROCESSES": "false", "SHARERANK_HEAVY_WORKERS": "16",
                         "SHARERANK_HEAVY_QUEUE": "16"},
}
"""Server settings of the baselines, by name (the command-line flag is the name)."""


def one_repeat(args, home: Path, category: str, redis_url: str, redis_proc, workdir: Path, users: list[str],
               baseline: str | None) -> dict[str, Any]:
    extra = BASELINES[baseline] if baseline else {}
    server = ServerProcess(home, redis_url, workdir, extra)
    try:
        server.wait_serving()
        feed_phase(server.port, users, 100, args.feed_deadline)  # warm-up
        result: dict[str, Any] = {"idle": feed_phase(server.port, users, args.feeds, args.feed_deadline)}
        log(f"  idle: {result['idle']}")
        with seeding_load(server.port, args.seeders, category, args.budget, args.epsilon) as tally:
            result["seeding"] = feed_phase(server.port, users, args.feeds, args.feed_deadline)
        result["seeding"]["seeding_calls"] = tally
        log(f"  seeding: {result['seeding']}")
        if baseline is None:
            redis_proc.send_signal(signal.SIGSTOP)
            try:
                opened = wait_metric(server, "sharerank_online_store_breaker_open", 1.0, 30,
                                     lambda: feed_phase(server.port, users, 1, args.feed_deadline))
                result["hung_redis"] = feed_phase(server.port, users, args.feeds, args.feed_deadline)
                result["hung_redis"]["breaker_opened_after_s"] = round(opened, 3)
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            result["hung_redis"]["breaker_closed_after_resume_s"] = round(wait_metric(
                server, "sharerank_online_store_breaker_open", 0.0, 30, lambda: time.sleep(0.01)), 3)
            log(f"  hung redis: {result['hung_redis']}")
        for phase in ("seeding", "hung_redis"):
            if phase in result and result["idle"]["p99_ms"] and result[phase]["p99_ms"]:
                result[f"{phase}_p99_over_idle"] = round(result[phase]["p99_ms"] / result["idle"]["p99_ms"], 2)
        return result
    finally:
        server.stop()


def spread(values: list[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": round(statistics.median(present), 3), "min": round(min(present), 3),
            "max": round(max(present), 3)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for phase in ("idle", "seeding", "hung_redis"):
        if phase in runs[0]:
            summary[phase] = {key: spread([r[phase][key] for r in runs]) for key in ("p50_ms", "p99_ms",
                                                                                      "missed_deadline")}
    for ratio in ("seeding_p99_over_idle", "hung_redis_p99_over_idle"):
        if ratio in runs[0]:
            summary[ratio] = spread([r.get(ratio) for r in runs])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20000, help="Users in the simulated world.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feeds", type=int, default=500, help="GetFeed calls per phase.")
    parser.add_argument("--feed-deadline", type=float, default=1.0, help="Seconds each feed may take.")
    parser.add_argument("--seeders", type=int, default=16, help="Concurrent GetSeedTargets clients.")
    parser.add_argument("--budget", type=int, default=200, help="Seeds per GetSeedTargets call.")
    parser.add_argument("--epsilon", type=float, default=0.03, help="Seeding epsilon (smaller: heavier).")
    parser.add_argument("--threads", action="store_true",
                        help="Also measure the seeding phase with seeding on a thread of the server process.")
    parser.add_argument("--without-bulkhead", action="store_true",
                        help="Also measure the seeding phase with a heavy pool as large as the gRPC pool.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as scratch:
        workdir = Path(scratch)
        home, category, users = build_registry(workdir, args.users, args.seed)
        with redis_server(workdir) as (redis_url, redis_proc):
            runs: list[dict[str, Any]] = []
            baselines: dict[str, list[dict[str, Any]]] = {name: [] for name in BASELINES if getattr(args, name)}
            for repeat in range(args.repeats):
                log(f"repeat {repeat + 1}/{args.repeats}")
                runs.append(one_repeat(args, home, category, redis_url, redis_proc, workdir, users, None))
                for name, done in baselines.items():
                    log(f"  {name.replace('_', ' ')}:")
                    done.append(one_repeat(args, home, category, redis_url, redis_proc, workdir, users, name))
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
              "summary": summarise(runs), "runs": runs}
    for name, done in baselines.items():
        result[name] = {"summary": summarise(done), "runs": done}
    emit(result, args.out_json)


if __name__ == "__main__":
    main()
