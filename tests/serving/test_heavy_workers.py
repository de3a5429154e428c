"""Seeding and audiences in worker processes, over real gRPC: the work runs outside the server's process at a
lower CPU priority, follows model swaps, and a worker that dies is replaced without losing the calls after it.

``bench/bench_faults.py`` measures what this buys feeds (p99 under heavy seeding, processes against threads).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator

import grpc
import numba
import numpy as np
import pytest

from sharerank.config import Settings
from sharerank.models.seeding.plan import SeedingContext
from sharerank.serving.errors import error_info, retry_info
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import Server, create_server
from sharerank.v1 import seeding_service_pb2, seeding_service_pb2_grpc

SMALL = seeding_service_pb2.GetSeedTargetsRequest(category="Beauty", budget=3)


@pytest.fixture
def server(registry, tmp_path) -> Iterator[Server]:
    settings: Settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events", "heavy_threads": 2})
    assert settings.heavy_processes, "worker processes are the default"
    server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture
def seeding(server: Server) -> Iterator[seeding_service_pb2_grpc.SeedingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield seeding_service_pb2_grpc.SeedingServiceStub(channel)


def worker_pids(server: Server) -> list[int]:
    return [p.pid for p in server.parts.seeding._pool._processes.values() if p.is_alive()]


def test_seeding_runs_in_a_worker_process_at_the_lowest_priority(server: Server, seeding) -> None:
    reply = seeding.GetSeedTargets(SMALL, timeout=120)
    assert len(reply.seeds) == 3
    [pid] = worker_pids(server)
    assert pid != os.getpid()
    # It computes with the configured numba threads (asked on the worker's own thread, where the work runs).
    assert server.parts.seeding._pool.submit(numba.get_num_threads).result(timeout=60) == min(
        2, numba.config.NUMBA_NUM_THREADS)
    # The idle scheduling class where the kernel has it (Linux), else a higher nice value than the server's.
    if hasattr(os, "sched_getscheduler"):
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    else:
        assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)


def test_the_worker_follows_a_model_swap(server: Server, seeding) -> None:
    before = {s.user_id for s in seeding.GetSeedTargets(SMALL, timeout=120).seeds}
    bundle = server.holder.current.bundle
    users = np.array([f"new-{u}" for u in bundle.users], dtype=object)
    seeding_context = bundle.seeding
    renamed = dataclasses.replace(bundle, users=users, seeding=SeedingContext(
        users, seeding_context.influence, seeding_context.community, seeding_context.activity))
    server.holder.serve_bundle(renamed, "2")
    after = {s.user_id for s in seeding.GetSeedTargets(SMALL, timeout=120).seeds}
    assert after == {f"new-{u}" for u in before}


def test_a_killed_worker_is_replaced_and_a_client_that_retries_as_told_is_answered(server: Server,
                                                                                      seeding) -> None:
    seeding.GetSeedTargets(SMALL, timeout=120)
    [pid] = worker_pids(server)
    os.kill(pid, signal.SIGKILL)  # fault injection: the worker dies between calls (the OOM killer, say)
    codes = []
    for _ in range(2):  # a call sent before the server noticed the death is UNAVAILABLE, with a retry hint
        try:
            assert len(seeding.GetSeedTargets(SMALL, timeout=120).seeds) == 3
            codes.append(grpc.StatusCode.OK)
            break
        except grpc.RpcError as error:
            codes.append(error.code())
            assert error_info(error).reason == "WORKER_DIED"
            time.sleep(retry_info(error).retry_delay.ToNanoseconds() / 1e9)  # as the server told
    assert codes[-1] == grpc.StatusCode.OK, codes
    assert pid not in worker_pids(server)


def test_a_call_whose_worker_dies_under_it_is_unavailable_with_a_retry_hint(server: Server, seeding) -> None:
    seeding.GetSeedTargets(SMALL, timeout=120)
    [pid] = worker_pids(server)
    heavy = seeding.GetSeedTargets.future(
        seeding_service_pb2.GetSeedTargetsRequest(category="Beauty", budget=200, epsilon=0.01), timeout=120)
    wait_until = time.monotonic() + 30
    while server.parts.seeding._slots._value == server.parts.seeding.workers + server.parts.seeding.queue:
        assert time.monotonic() < wait_until, "the heavy call never reached the bulkhead"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)  # fault injection: the worker dies during the call
    with pytest.raises(grpc.RpcError) as err:
        heavy.result()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(err.value).reason == "WORKER_DIED"
    assert retry_info(err.value).retry_delay.ToNanoseconds() > 0
    assert len(seeding.GetSeedTargets(SMALL, timeout=120).seeds) == 3
