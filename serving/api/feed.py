"""FeedService (GetFeed, GetSimilarProducts): the servicer, and the proto ↔ domain mapping of its messages.

Requests become :class:`FeedRequest` (validated, ids still external), the pipeline
(:mod:`sharerank.serving.feed`) ranks, and its page becomes the response with a stateless page token that
carries the products served so far, so pages never repeat, and how many of them each sharer's shares put there,
so the per-sharer cap holds across pages (signed and bounded: :mod:`.page_token`). Every id
follows the one id rule (:mod:`sharerank.serving.ids`), checked before any work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sharerank.serving import observability
from sharerank.serving.api.page_token import PageTokenCodec
from sharerank.serving.api.spec import ServiceSpec, ServingContext, service_name, serving_model
from sharerank.serving.errors import ServiceError, abort, invalid_argument, not_found
from sharerank.serving.feed.pipeline import FeedPage, FeedPipeline
from sharerank.serving.feed.query import Candidate
from sharerank.serving.feed.similar import similar_products
from sharerank.serving.ids import check_id, check_ids, quote
from sharerank.serving.model_holder import ModelHolder
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc, internal_pb2, reason_pb2


class FeedService(feed_service_pb2_grpc.FeedServiceServicer):
    """Personalised feeds and similar products from the serving model."""

    def __init__(self, holder: ModelHolder, pipeline: FeedPipeline, tokens: PageTokenCodec):
        self.holder, self.pipeline, self.tokens = holder, pipeline, tokens

    def GetFeed(self, request, context):
        try:
            parsed = parse_feed_request(request, self.tokens)
        except ServiceError as error:
            abort(context, error)
        model = serving_model(self.holder, context)
        bundle = model.bundle
        rows = bundle.product_rows
        page = self.pipeline.run(
            model=bundle, user_id=parsed.user_id, page_size=parsed.page_size, categories=parsed.categories,
            exclude_products=frozenset(rows[p] for p in parsed.exclude_product_ids if p in rows),
            served=frozenset(rows[p] for p in parsed.served_product_ids if p in rows),
            served_by_sharer=parsed.served_by_sharer, explain=parsed.explain)
        observability.record_feed_degraded(page.degraded)
        return feed_response(page, parsed, bundle.category, bundle.products, model.version, self.tokens)

    def GetSimilarProducts(self, request, context):
        model = serving_model(self.holder, context)
        bundle = model.bundle
        try:
            row, page_size, categories = parse_similar_request(request, bundle.product_rows)
        except ServiceError as error:
            abort(context, error)
        items = similar_products(bundle, row, page_size, categories)
        return similar_response(items, bundle.category, bundle.products, model.version)


def _build(ctx: ServingContext) -> FeedService:
    settings = ctx.holder.settings
    pipeline = FeedPipeline(ctx.store, shares_per_sharer=settings.feed_shares_per_sharer,
                            fatigue_half_shares=settings.fatigue_half_shares)
    return FeedService(ctx.holder, pipeline, PageTokenCodec(settings.page_token_key))


SERVICE = ServiceSpec(name=service_name(feed_service_pb2, "FeedService"), roles=frozenset({"storefront"}),
                      build=_build, register=feed_service_pb2_grpc.add_FeedServiceServicer_to_server)


MAX_PAGE_SIZE = 500
MAX_SERVED = 1000
"""Products one feed serves across its pages, at most. The page token carries every served id (pages are
stateless and never repeat), so this bounds the token: about ``MAX_SERVED × (id length + 2)`` bytes before
base64 (and :data:`~sharerank.serving.api.page_token.MAX_PAGE_TOKEN_CHARS` bounds it whatever the ids). The
page that reaches it is cut to fit and has no next page token."""
MAX_CATEGORIES = 100
"""Most categories one request may filter by."""


@dataclass(frozen=True)
class FeedRequest:
    """A validated GetFeed request in domain terms (product ids still external)."""

    user_id: str
    page_size: int
    categories: frozenset[str]
    exclude_product_ids: frozenset[str]
    explain: bool
    request_hash: int
    served_product_ids: tuple[str, ...] = ()
    served_by_sharer: Mapping[str, int] = field(default_factory=dict)


def parse_feed_request(request: feed_service_pb2.GetFeedRequest, tokens: PageTokenCodec) -> FeedRequest:
    """Validates a GetFeedRequest (ids by the one id rule, the page token by its signature); ``page_size`` comes
    back cut to what the feed may still serve.

    Raises:
        ServiceError: INVALID_ARGUMENT naming the bad field.
    """
    user_id = check_id(request.user_id.strip(), "user_id", "EMPTY_USER_ID", "INVALID_USER_ID")
    _check_page_size(request.page_size)
    categories = frozenset(check_ids(request.categories, "categories", MAX_CATEGORIES))
    excluded = frozenset(check_ids(request.exclude_product_ids, "exclude_product_ids", MAX_SERVED))
    request_hash = _request_hash(user_id, categories, excluded)
    served: tuple[str, ...] = ()
    by_sharer: dict[str, int] = {}
    if request.page_token:
        token = tokens.decode(request.page_token)
        if token.offset < 0 or len(token.served_product_ids) >= MAX_SERVED:
            raise invalid_argument("page_token is not a token this service issued", "INVALID_PAGE_TOKEN")
        if token.request_hash != request_hash:
            raise invalid_argument("page_token was issued for a different user or filters; start from the first "
                                   "page", "PAGE_TOKEN_MISMATCH")
        served = tuple(token.served_product_ids)
        by_sharer = dict(token.served_by_sharer)
        if any(count < 0 for count in by_sharer.values()) or sum(by_sharer.values()) > len(served):
            raise invalid_argument("page_token is not a token this service issued", "INVALID_PAGE_TOKEN")
    page_size = min(request.page_size, MAX_SERVED - len(served))
    return FeedRequest(user_id, page_size, categories, excluded, request.explain, request_hash, served, by_sharer)


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise invalid_argument(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}",
                               "PAGE_SIZE_OUT_OF_RANGE", page_size=str(page_size))


def parse_similar_request(request: feed_service_pb2.GetSimilarProductsRequest,
                          product_rows: dict[str, int]) -> tuple[int, int, frozenset[str]]:
    """Validates a GetSimilarProductsRequest into ``(product_row, page_size, categories)``.

    Raises:
        ServiceError: INVALID_ARGUMENT for a bad field, NOT_FOUND for a product the model does not know.
    """
    product_id = check_id(request.product_id.strip(), "product_id", "EMPTY_PRODUCT_ID", "INVALID_PRODUCT_ID")
    _check_page_size(request.page_size)
    categories = frozenset(check_ids(request.categories, "categories", MAX_CATEGORIES))
    if product_id not in product_rows:
        raise not_found(f"product {quote(product_id)} is not in the serving model's catalogue", "UNKNOWN_PRODUCT",
                        product_id=product_id)
    return product_rows[product_id], request.page_size, categories


def similar_response(items: list[Candidate], categories: np.ndarray, products: np.ndarray, model_version: str
                     ) -> feed_service_pb2.GetSimilarProductsResponse:
    response = feed_service_pb2.GetSimilarProductsResponse(model_version=model_version)
    _add_items(response.items, items, categories, products, True)
    return response


def feed_response(page: FeedPage, request: FeedRequest, categories: np.ndarray, products: np.ndarray,
                  model_version: str, tokens: PageTokenCodec) -> feed_service_pb2.GetFeedResponse:
    """The response for ``page``; ``categories`` and ``products`` are the bundle's arrays (indexed by row)."""
    rows = [c.product for c in page.items]
    ids = products[rows].tolist()  # one array look-up for the page, not one per item
    next_token = ""
    served = len(request.served_product_ids) + len(rows)
    if page.has_more and served < MAX_SERVED:
        next_token = tokens.encode(internal_pb2.FeedPageToken(
            offset=served, request_hash=request.request_hash, model_version=model_version,
            served_product_ids=[*request.served_product_ids, *ids], served_by_sharer=page.served_by_sharer))
    response = feed_service_pb2.GetFeedResponse(next_page_token=next_token, model_version=model_version)
    _add_items(response.items, page.items, categories, products, request.explain, rows, ids)
    return response


def _add_items(items, candidates: list[Candidate], categories: np.ndarray, products: np.ndarray, explain: bool,
               rows: list[int] | None = None, ids: list[str] | None = None) -> None:
    """Appends one FeedItem per candidate to the repeated field ``items``, in place (``add`` builds each item
    where it lives: building them apart and passing the list copies every one). ``rows`` and ``ids``: the
    candidates' product rows and ids, when the caller has them."""
    if rows is None:
        rows = [c.product for c in candidates]
    if ids is None:
        ids = products[rows].tolist()
    add = items.add
    for candidate, product_id, category in zip(candidates, ids, categories[rows].tolist(), strict=True):
        item = add(product_id=product_id, score=candidate.score, category=category)
        if explain and candidate.reasons:
            add_reason = item.reasons.add
            for reason in candidate.reasons:
                add_reason(kind=_reason_kind(reason.kind), text=reason.text)


_REASON_KINDS: dict[str, int] = {}


def _reason_kind(kind: str) -> int:
    """The ``ReasonKind`` number of a reason kind (``PERSONALIZED`` → ``REASON_KIND_PERSONALIZED``), cached."""
    number = _REASON_KINDS.get(kind)
    if number is None:
        number = _REASON_KINDS[kind] = reason_pb2.ReasonKind.Value(f"REASON_KIND_{kind}")
    return number


def _request_hash(user_id: str, categories: frozenset[str], excluded: frozenset[str]) -> int:
    # Each part followed by a separator, hashed in one update (the same bytes as one update per part).
    parts = (user_id, *sorted(categories), "\x00", *sorted(excluded), "")
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")
