"""SeedingService from Python: seed sharers for a launch, and the audience most likely to buy a product. Both run
in the server's seeding bulkhead: slow (default deadlines of minutes), and refused with
:class:`~sharerank.client.errors.ResourceExhausted` and a ``retry_after`` when it is full."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sharerank.client.base import AsyncClient, SyncClient
from sharerank.v1 import seeding_service_pb2, seeding_service_pb2_grpc


def seed_request(budget: int, product_id: str | None, category: str | None, exclude_user_ids: Iterable[str],
                 min_activity: int, max_seeds_per_community: int, epsilon: float, max_fatigue: float | None,
                 ring_policy: int) -> seeding_service_pb2.GetSeedTargetsRequest:
    return seeding_service_pb2.GetSeedTargetsRequest(
        budget=budget, product_id=product_id, category=category, exclude_user_ids=exclude_user_ids,
        min_activity=min_activity, max_seeds_per_community=max_seeds_per_community, epsilon=epsilon,
        max_fatigue=max_fatigue, ring_policy=ring_policy)


class SeedingClient(SyncClient):
    """Seed targets and audiences (a ``growth`` token when the server has auth on). Arguments as
    :class:`~sharerank.client.base.ClientBase`."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = seeding_service_pb2_grpc.SeedingServiceStub(self.channel)

    def seed_targets(self, budget: int, *, product_id: str | None = None, category: str | None = None,
                     exclude_user_ids: Iterable[str] = (), min_activity: int = 0, max_seeds_per_community: int = 0,
                     epsilon: float = 0.0, max_fatigue: float | None = None,
                     ring_policy: int = seeding_service_pb2.RING_POLICY_UNSPECIFIED,
                     timeout: float | None = None) -> seeding_service_pb2.GetSeedTargetsResponse:
        """``budget`` seeds for launching ``product_id`` or ``category`` (fields as ``GetSeedTargetsRequest``)."""
        request = seed_request(budget, product_id, category, exclude_user_ids, min_activity,
                               max_seeds_per_community, epsilon, max_fatigue, ring_policy)
        return self._call(self.stub, "GetSeedTargets", request, timeout)

    def audience(self, product_id: str, k: int, *, exclude_user_ids: Iterable[str] = (),
                 timeout: float | None = None) -> seeding_service_pb2.GetAudienceResponse:
        """The ``k`` users (1..10,000) most likely to buy ``product_id`` soon, best first."""
        request = seeding_service_pb2.GetAudienceRequest(product_id=product_id, k=k, exclude_user_ids=exclude_user_ids)
        return self._call(self.stub, "GetAudience", request, timeout)


class AsyncSeedingClient(AsyncClient):
    """:class:`SeedingClient` on ``grpc.aio``: the same methods, awaited."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = seeding_service_pb2_grpc.SeedingServiceStub(self.channel)

    async def seed_targets(self, budget: int, *, product_id: str | None = None, category: str | None = None,
                           exclude_user_ids: Iterable[str] = (), min_activity: int = 0,
                           max_seeds_per_community: int = 0, epsilon: float = 0.0, max_fatigue: float | None = None,
                           ring_policy: int = seeding_service_pb2.RING_POLICY_UNSPECIFIED,
                           timeout: float | None = None) -> seeding_service_pb2.GetSeedTargetsResponse:
        request = seed_request(budget, product_id, category, exclude_user_ids, min_activity,
                               max_seeds_per_community, epsilon, max_fatigue, ring_policy)
        return await self._call(self.stub, "GetSeedTargets", request, timeout)

    async def audience(self, product_id: str, k: int, *, exclude_user_ids: Iterable[str] = (),
                       timeout: float | None = None) -> seeding_service_pb2.GetAudienceResponse:
        request = seeding_service_pb2.GetAudienceRequest(product_id=product_id, k=k, exclude_user_ids=exclude_user_ids)
        return await self._call(self.stub, "GetAudience", request, timeout)
