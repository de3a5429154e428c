"""The console's gRPC side: one channel to ``grpc_target`` (TLS when ``grpc_ca_file`` is set), the console token
on every call, errors turned into one readable line (code, reason, message) for the page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc, seeding_service_pb2, seeding_service_pb2_grpc

SEED_TIMEOUT_S = 300.0
"""Seed plans on large worlds take tens of seconds; past this the page says the service did not answer."""
QUICK_TIMEOUT_S = 30.0


class ServiceProblem(Exception):
    """A call the service refused or did not answer: what the page shows instead of results."""

    def __init__(self, code: str, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code, self.reason, self.message = code, reason, message


def _problem(error: grpc.RpcError) -> ServiceProblem:
    reason = ""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
    return ServiceProblem(error.code().name, reason, error.details() or "")


@dataclass
class GrowthClient:
    """Calls SeedingService (and AdminService's GetModelInfo, which only an admin token may read); over TLS,
    trusting the PEM CA certificates in ``ca_file``, when that is set."""

    target: str
    token: str | None = None
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        self.channel = (grpc.insecure_channel(self.target) if self.ca_file is None else grpc.secure_channel(
            self.target, grpc.ssl_channel_credentials(root_certificates=Path(self.ca_file).read_bytes())))
        self.seeding = seeding_service_pb2_grpc.SeedingServiceStub(self.channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def seed_targets(self, request: seeding_service_pb2.GetSeedTargetsRequest):
        return self._call(self.seeding.GetSeedTargets, request, SEED_TIMEOUT_S)

    def audience(self, request: seeding_service_pb2.GetAudienceRequest):
        return self._call(self.seeding.GetAudience, request, QUICK_TIMEOUT_S)

    def model_info(self):
        return self._call(self.admin.GetModelInfo, admin_service_pb2.GetModelInfoRequest(), QUICK_TIMEOUT_S)

    def _call(self, method, request, timeout: float):
        try:
            return method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise _problem(error) from None

    def close(self) -> None:
        self.channel.close()
