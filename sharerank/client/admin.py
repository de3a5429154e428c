"""AdminService from Python: which model is serving, and reloading (or pinning) a version. An ``admin`` token when
the server has auth on; the growth console reads GetModelInfo with its own token."""

from __future__ import annotations

from typing import Any

from sharerank.client.base import AsyncClient, SyncClient
from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc


class AdminClient(SyncClient):
    """The serving model's facts, and ReloadModel. Arguments as :class:`~sharerank.client.base.ClientBase`."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    def model_info(self, *, timeout: float | None = None) -> admin_service_pb2.GetModelInfoResponse:
        """The version serving, its run, sizes, index, whether it is pinned and the alias it follows."""
        return self._call(self.stub, "GetModelInfo", admin_service_pb2.GetModelInfoRequest(), timeout)

    def reload_model(self, model_version: str = "", *, timeout: float | None = None
                     ) -> admin_service_pb2.ReloadModelResponse:
        """Loads ``model_version`` and pins it (a rollback that sticks); with none, unpins and loads the champion.
        Never retried by the client: a reload is not a read."""
        return self._call(self.stub, "ReloadModel", admin_service_pb2.ReloadModelRequest(model_version=model_version),
                          timeout)


class AsyncAdminClient(AsyncClient):
    """:class:`AdminClient` on ``grpc.aio``: the same methods, awaited."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    async def model_info(self, *, timeout: float | None = None) -> admin_service_pb2.GetModelInfoResponse:
        return await self._call(self.stub, "GetModelInfo", admin_service_pb2.GetModelInfoRequest(), timeout)

    async def reload_model(self, model_version: str = "", *, timeout: float | None = None
                           ) -> admin_service_pb2.ReloadModelResponse:
        return await self._call(self.stub, "ReloadModel",
                                admin_service_pb2.ReloadModelRequest(model_version=model_version), timeout)
