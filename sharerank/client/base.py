"""What every client shares: where the service is and how to reach it (arguments, else the settings), a deadline
on every call (per method, overridable), and failed calls raised as typed exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import grpc

from sharerank.client.channel import RetryPolicy, open_aio_channel, open_channel
from sharerank.client.errors import from_rpc_error
from sharerank.config import Settings

DEADLINES_S: Mapping[str, float] = MappingProxyType({
    "GetFeed": 2.0,  # a storefront page waits for it; the default retries (1.2 s) fit inside
    "GetSimilarProducts": 2.0,
    "RecordEvents": 5.0,  # appended and fsynced before the answer
    "GetAudience": 60.0,  # scores every user
    "GetSeedTargets": 300.0,  # seed plans on large worlds take tens of seconds, the first after a swap longer
    "GetModelInfo": 5.0,
    "ReloadModel": 300.0,  # answers once the version is loaded: a 1M-product index takes minutes to read
})
"""Each method's deadline in seconds when a call gives no ``timeout``."""


class ClientBase:
    """Resolves the connection and deadlines; subclasses open the sync or asyncio channel.

    Args:
        target: ``host:port`` of the service. (default: ``settings.grpc_target``)
        token: Bearer token, sent as ``authorization: Bearer <token>``. (default: ``settings.client_token``, else
            ``settings.console_token``)
        ca_file: PEM CA certificates to trust; set, the channel uses TLS. (default: ``settings.grpc_ca_file``)
        deadlines: Method name → seconds, over :data:`DEADLINES_S`. (default: none)
        retry: The retry policy of the methods safe to repeat. (default: ``RetryPolicy()``)
        settings: Where the defaults come from. (default: ``Settings()``, the environment)
    """

    def __init__(self, target: str | None = None, *, token: str | None = None, ca_file: Path | None = None,
                 deadlines: Mapping[str, float] | None = None, retry: RetryPolicy | None = None,
                 settings: Settings | None = None):
        settings = settings or Settings()
        self.target = target or settings.grpc_target
        self._token = token or settings.client_token or settings.console_token
        self._ca_file = ca_file or settings.grpc_ca_file
        unknown = sorted(set(deadlines or ()) - set(DEADLINES_S))
        if unknown:
            raise ValueError(f"no deadline to set for {unknown}; methods are {', '.join(DEADLINES_S)}")
        self.deadlines = {**DEADLINES_S, **(deadlines or {})}
        self._retry = retry or RetryPolicy()

    def _timeout(self, method: str, timeout: float | None) -> float:
        return self.deadlines[method] if timeout is None else timeout


class SyncClient(ClientBase):
    """A client on a blocking channel; close it, or use it as a context manager."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.channel = open_channel(self.target, self._token, self._ca_file, self._retry)

    def _call(self, stub: Any, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(stub, method)(request, timeout=self._timeout(method, timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(ClientBase):
    """A client on a ``grpc.aio`` channel, made inside the event loop that uses it; ``await close()``, or use it
    as an async context manager."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.channel = open_aio_channel(self.target, self._token, self._ca_file, self._retry)

    async def _call(self, stub: Any, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return await getattr(stub, method)(request, timeout=self._timeout(method, timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
