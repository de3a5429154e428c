"""What tracing costs a feed: four servers of the same model, measured in turn by one client.

    .venv/bin/python bench/bench_tracing.py --users 20000 --feeds 2000 --repeats 5 --out-json bench/results/tracing.json

A simulated world (``--users``) is trained into a throwaway registry, then served by four processes of this
script (``--serve MODE``), each ``create_server`` with the in-process store, metrics off:

- ``bare``: the feed's stage timers replaced by a no-op (the code as it was before traces and stage metrics);
- ``off``: as shipped with tracing off (stage timers on for the Prometheus histogram; no span);
- ``on``: tracing on as shipped (``trace_sample_ratio`` of the calls traced, 0.1 by default, chosen before the
  gRPC instrumentation runs): for traced calls the call's span, a span per stage and per store round trip, exported in
  batches (``BatchSpanProcessor``) to an exporter that drops them (no collector here: the network send is not
  measured, it runs off the request path);
- ``on-all``: the same with every call traced (ratio 1).

The client (this process) sends ``--feeds`` GetFeed calls (page_size 20, explain on, one in flight) to each
server, interleaved call by call (the same request to each in turn, the order rotating), ``--repeats`` times,
so drift and noise hit every mode alike. Reported per mode: client p50 and mean (ms), medians with [min, max]
over repeats, and the ratios off/bare, on/off and on-all/off of each repeat. JSON on stdout (and ``--out-json``),
progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faults import build_registry, free_port  # noqa: E402
from report import emit, log  # noqa: E402

MODES = ("bare", "off", "on", "on-all")


def serve(mode: str, home: Path, port: int) -> None:
    """A server process: ``mode`` as the module says, until SIGTERM."""
    from sharerank.config import Settings
    from sharerank.serving.online_store import InMemoryOnlineStore
    from sharerank.serving.server import create_server, serve_forever

    provider = None
    if mode == "bare":
        import sharerank.serving.feed.pipeline as pipeline

        pipeline._stage = lambda name: contextlib.nullcontext()
    elif mode != "off":  # off: no provider, as `serve` runs without SHARERANK_OTLP_ENDPOINT
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
    settings = Settings(home=home, reload_poll_seconds=0, metrics_port=0, event_log_dir=home / f"events-{mode}",
                        **({"trace_sample_ratio": 1.0} if mode == "on-all" else {}))
    serve_forever(create_server(settings, InMemoryOnlineStore(), address=f"127.0.0.1:{port}",
                                tracer_provider=provider))


def measure(ports: dict[str, int], users: list[str], feeds: int) -> dict[str, list[float]]:
    """``feeds`` calls to each server, interleaved call by call, the order rotating (drift, noise and a previous
    server still finishing its call hit every mode alike)."""
    import grpc

    from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

    channels = {mode: grpc.insecure_channel(f"127.0.0.1:{port}") for mode, port in ports.items()}
    stubs = {mode: feed_service_pb2_grpc.FeedServiceStub(channel) for mode, channel in channels.items()}
    latencies: dict[str, list[float]] = {mode: [] for mode in ports}
    try:
        for i in range(feeds):
            request = feed_service_pb2.GetFeedRequest(user_id=users[i % len(users)], page_size=20, explain=True)
            modes = list(stubs)
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
                stub = stubs[mode]
                start = time.perf_counter()
                stub.GetFeed(request, timeout=5)
                latencies[mode].append((time.perf_counter() - start) * 1000)
    finally:
        for channel in channels.values():
            channel.close()
    return latencies


def wait_serving(port: int, process: subprocess.Popen) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 180
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            if process.poll() is not None:
                sys.exit(f"server exited with {process.returncode}")
            time.sleep(0.1)
    sys.exit("server did not become SERVING")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    home, _, users = build_registry(workdir, args.users, args.seed)
    ports = {mode: free_port() for mode in MODES}
    servers = {mode: subprocess.Popen([sys.executable, __file__, "--serve", mode, "--home", str(home), "--port",
                                       str(ports[mode])], stdout=subprocess.DEVNULL, env=dict(os.environ))
               for mode in MODES}
    try:
        for mode in MODES:
            wait_serving(ports[mode], servers[mode])
        measure(ports, users, 200)  # warm-up: caches, connections, the first span batch
        repeats: list[dict[str, dict[str, float]]] = []
        for repeat in range(args.repeats):
            latencies = measure(ports, users, args.feeds)
            row = {mode: {"p50_ms": statistics.median(latencies[mode]), "mean_ms": statistics.fmean(latencies[mode])}
                   for mode in MODES}
            repeats.append(row)
            log(f"repeat {repeat + 1}: " + ", ".join(f"{m} p50 {row[m]['p50_ms']:.3f} ms" for m in MODES))
    finally:
        for process in servers.values():
            process.send_signal(signal.SIGTERM)
        for process in servers.values():
            process.wait(timeout=30)
    summary: dict[str, Any] = {m: {k: spread([r[m][k] for r in repeats]) for k in ("p50_ms", "mean_ms")}
                               for m in MODES}
    for name, (a, b) in {"off_over_bare": ("off", "bare"), "on_over_off": ("on", "off"),
                         "on_all_over_off": ("on-all", "off")}.items():
        summary[name] = {k: spread([r[a][k] / r[b][k] for r in repeats]) for k in ("p50_ms", "mean_ms")}
    return {"config": {k: v for k, v in vars(args).items() if k not in ("out_json", "serve", "home", "port")},
            "repeats": repeats, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--feeds", type=int, default=2000, help="GetFeed calls per server per repeat.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-json", type=Path)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.home, args.port)
        return
    with tempfile.TemporaryDirectory(prefix="sharerank-tracing-") as workdir:
        emit(run(args, Path(workdir)), args.out_json)


if __name__ == "__main__":
    main()
