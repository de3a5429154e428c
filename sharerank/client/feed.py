"""FeedService from Python: one feed page, every page in turn (following ``next_page_token``), similar products."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from sharerank.client.base import AsyncClient, SyncClient
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc


def feed_request(user_id: str, page_size: int, page_token: str, categories: Iterable[str],
                 exclude_product_ids: Iterable[str], explain: bool) -> feed_service_pb2.GetFeedRequest:
    return feed_service_pb2.GetFeedRequest(user_id=user_id, page_size=page_size, page_token=page_token,
                                           categories=categories, exclude_product_ids=exclude_product_ids,
                                           explain=explain)


class FeedClient(SyncClient):
    """Feeds and similar products (a ``storefront`` token when the server has auth on). Arguments as
    :class:`~sharerank.client.base.ClientBase`."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = feed_service_pb2_grpc.FeedServiceStub(self.channel)

    def get_feed(self, user_id: str, *, page_size: int = 20, page_token: str = "", categories: Iterable[str] = (),
                 exclude_product_ids: Iterable[str] = (), explain: bool = False,
                 timeout: float | None = None) -> feed_service_pb2.GetFeedResponse:
        """One page of ``user_id``'s feed (``page_size`` 1..500); pass the last page's ``next_page_token`` with the
        same filters for the next one."""
        request = feed_request(user_id, page_size, page_token, categories, exclude_product_ids, explain)
        return self._call(self.stub, "GetFeed", request, timeout)

    def pages(self, user_id: str, *, page_size: int = 20, categories: Iterable[str] = (),
              exclude_product_ids: Iterable[str] = (), explain: bool = False,
              timeout: float | None = None) -> Iterator[feed_service_pb2.GetFeedResponse]:
        """``user_id``'s feed page by page until the service has no more (each page its own call and deadline);
        pages never repeat a product."""
        categories, excluded, token = tuple(categories), tuple(exclude_product_ids), ""
        while True:
            page = self.get_feed(user_id, page_size=page_size, page_token=token, categories=categories,
                                 exclude_product_ids=excluded, explain=explain, timeout=timeout)
            yield page
            token = page.next_page_token
            if not token:
                return

    def similar_products(self, product_id: str, *, page_size: int = 20, categories: Iterable[str] = (),
                         timeout: float | None = None) -> feed_service_pb2.GetSimilarProductsResponse:
        """In-stock products nearest ``product_id``; :class:`~sharerank.client.errors.NotFound` for one the model
        does not know."""
        request = feed_service_pb2.GetSimilarProductsRequest(product_id=product_id, page_size=page_size,
                                                             categories=categories)
        return self._call(self.stub, "GetSimilarProducts", request, timeout)


class AsyncFeedClient(AsyncClient):
    """:class:`FeedClient` on ``grpc.aio``: the same methods, awaited; :meth:`pages` is an async iterator."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = feed_service_pb2_grpc.FeedServiceStub(self.channel)

    async def get_feed(self, user_id: str, *, page_size: int = 20, page_token: str = "",
                       categories: Iterable[str] = (), exclude_product_ids: Iterable[str] = (), explain: bool = False,
                       timeout: float | None = None) -> feed_service_pb2.GetFeedResponse:
        request = feed_request(user_id, page_size, page_token, categories, exclude_product_ids, explain)
        return await self._call(self.stub, "GetFeed", request, timeout)

    async def pages(self, user_id: str, *, page_size: int = 20, categories: Iterable[str] = (),
                    exclude_product_ids: Iterable[str] = (), explain: bool = False,
                    timeout: float | None = None) -> AsyncIterator[feed_service_pb2.GetFeedResponse]:
        categories, excluded, token = tuple(categories), tuple(exclude_product_ids), ""
        while True:
            page = await self.get_feed(user_id, page_size=page_size, page_token=token, categories=categories,
                                       exclude_product_ids=excluded, explain=explain, timeout=timeout)
            yield page
            token = page.next_page_token
            if not token:
                return

    async def similar_products(self, product_id: str, *, page_size: int = 20, categories: Iterable[str] = (),
                               timeout: float | None = None) -> feed_service_pb2.GetSimilarProductsResponse:
        request = feed_service_pb2.GetSimilarProductsRequest(product_id=product_id, page_size=page_size,
                                                             categories=categories)
        return await self._call(self.stub, "GetSimilarProducts", request, timeout)
