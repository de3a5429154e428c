"""Fuzz every RPC of a real server with ≥ 10,000 malformed requests: only documented codes, alive, RSS bounded.

    .venv/bin/python bench/bench_fuzz.py --requests 10000 --out-json bench/results/fuzz.json

A simulated world (``--users``) is trained into a throwaway registry and served by ``sharerank serve`` in its
own process (in-process online store, page tokens signed with the fuzzers' key). This process runs the
fuzzers of ``tests/serving/fuzzing.py`` (the ones ``make test`` runs with a small count), each for an equal
share of ``--requests``. Any undocumented code, unbounded error or error without ErrorInfo stops the run
with hypothesis's minimal failing request. Reported: requests per RPC and code, the server's RSS before,
after and at its peak (VmHWM), whether it still answers, and the time taken. JSON on stdout (and
``--out-json``), progress on stderr.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "serving"))
from bench_faults import ServerProcess, build_registry  # noqa: E402
from report import emit, log  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000, help="Requests in all (at least).")
    parser.add_argument("--users", type=int, default=2000, help="Users in the simulated world.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()

    import grpc
    from fuzzing import CALLS_PER_EXAMPLE, DOCUMENTED, FUZZERS, PAGE_TOKEN_KEY, Catalogue, rss_mb
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from sharerank.config import Settings
    from sharerank.serving.model_holder import load_version

    calls_per_round = sum(CALLS_PER_EXAMPLE.get(name, 1) for name in FUZZERS)
    examples = math.ceil(args.requests / calls_per_round)
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as scratch:
        workdir = Path(scratch)
        home, _, _ = build_registry(workdir, args.users, args.seed)
        bundle = load_version(Settings(home=home), "1").bundle
        catalogue = Catalogue.of(bundle, ["1"])
        server = ServerProcess(home, "memory://", workdir, {"SHARERANK_PAGE_TOKEN_KEY": PAGE_TOKEN_KEY})
        try:
            server.wait_serving()
            rss_before = rss_mb(server.proc.pid)
            codes: dict[str, collections.Counter] = {}
            started = time.perf_counter()
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:

                def fuzz(fuzzer, seen: collections.Counter) -> None:
                    @given(data=st.data())
                    @settings(max_examples=examples, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck))
                    def run(data) -> None:
                        seen[fuzzer(channel, catalogue, data).name] += 1

                    run()

                for name, fuzzer in FUZZERS.items():
                    log(f"{name}: {examples} examples")
                    fuzz(fuzzer, codes.setdefault(name, collections.Counter()))
                health_ok = _alive(channel, catalogue)
            seconds = time.perf_counter() - started
            rss_after, rss_peak = rss_mb(server.proc.pid), peak_rss_mb(server.proc.pid)
        finally:
            server.stop()
    # Each fuzzer's counter holds one code per example (the admin fuzzer's: ReloadModel's, after a GetModelInfo
    # that must be OK), so the calls made are each count times its calls per example.
    requests = sum(sum(codes[name].values()) * CALLS_PER_EXAMPLE.get(name, 1) for name in FUZZERS)
    emit({"config": {"requests_asked": args.requests, "users": args.users, "seed": args.seed},
          "requests": requests, "examples_per_rpc": examples, "seconds": round(seconds, 1),
          "codes_by_rpc": {name: dict(counter) for name, counter in codes.items()},
          "documented": {name: sorted(code.name for code in allowed) for name, allowed in DOCUMENTED.items()},
          "server_alive_after": health_ok,
          "server_rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1), "peak": round(rss_peak, 1)}},
         args.out_json)


def _alive(channel, catalogue) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    reply = feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
        feed_service_pb2.GetFeedRequest(user_id=catalogue.users[0], page_size=10), timeout=10)
    return health.status == health_pb2.HealthCheckResponse.SERVING and len(reply.items) == 10


if __name__ == "__main__":
    main()
