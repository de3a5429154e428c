"""Malformed-request fuzzing of every RPC, shared by ``test_fuzz.py`` (a small count in ``make test``) and
``bench/bench_fuzz.py`` (≥ 10,000 requests).

One function per RPC draws a request, half of them *wild* (any field may be anything :data:`ids` and friends
draw) and half *tame* (real ids, valid ranges, so the deep paths run too), calls the real server and checks
the answer: a code documented for that RPC, and a failure's message and ErrorInfo bounded
in size and in the service's domain. :data:`DOCUMENTED` lists the codes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import event
from hypothesis import strategies as st

from sharerank.serving.api import feed as marshal
from sharerank.serving.api.page_token import PageTokenCodec
from sharerank.serving.errors import error_info
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    feed_service_pb2,
    feed_service_pb2_grpc,
    internal_pb2,
    seeding_service_pb2,
    seeding_service_pb2_grpc,
)

PAGE_TOKEN_KEY = "fuzz-key"
"""The key the fuzzed server signs page tokens with, so the fuzzer can also send well-signed odd tokens."""

_OK, _INVALID, _NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
DOCUMENTED: dict[str, frozenset[grpc.StatusCode]] = {
    "GetFeed": frozenset({_OK, _INVALID}),
    "GetSimilarProducts": frozenset({_OK, _INVALID, _NOT_FOUND}),
    "GetSeedTargets": frozenset({_OK, _INVALID, _NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                                 grpc.StatusCode.RESOURCE_EXHAUSTED}),
    "GetAudience": frozenset({_OK, _INVALID, _NOT_FOUND}),
    "RecordEvents": frozenset({_OK, _INVALID}),
    "GetModelInfo": frozenset({_OK}),
    "ReloadModel": frozenset({_OK, _INVALID, grpc.StatusCode.FAILED_PRECONDITION}),
}
"""Codes each RPC may answer with to any request (the server up, a model loaded, one call at a time)."""


@dataclass(frozen=True)
class Catalogue:
    """Real ids of the served model, so drawn requests reach past validation."""

    users: list[str]
    products: list[str]
    categories: list[str]
    versions: list[str]

    @classmethod
    def of(cls, bundle, versions: list[str]) -> Catalogue:
        return cls([str(u) for u in bundle.users[:50]], [str(p) for p in bundle.products[:50]],
                   sorted(set(bundle.category.astype(str).tolist())), versions)


ids = st.one_of(st.just(""), st.text(alphabet=" \t\n\r\u00a0\u3000", max_size=5), st.text(max_size=40),
                st.text(alphabet=st.characters(min_codepoint=0x80, exclude_categories=("Cs",)), max_size=10),
                st.integers(500, 700).map(lambda n: "x" * n), st.just("y" * 20_000))
page_sizes = st.one_of(st.integers(1, 500), st.integers(1, 30), st.integers(1, 30), st.integers(1, 30),
                       st.integers(min_value=-(2**31), max_value=2**31 - 1), st.integers(-2, 3), st.integers(495, 505))
small_ints = st.one_of(st.integers(-3, 30), st.integers(min_value=-(2**31), max_value=2**31 - 1))


def known(values: list[str], wild: bool) -> st.SearchStrategy[str]:
    """A real id; when ``wild``, anything :data:`ids` draws one time in four."""
    return st.one_of(ids, *[st.sampled_from(values)] * 3) if wild else st.sampled_from(values)


def sizes(wild: bool) -> st.SearchStrategy[int]:
    return page_sizes if wild else st.integers(1, 50)


@st.composite
def page_tokens(draw, user: str, categories: list[str], excluded: list[str], wild: bool) -> str:
    kinds = ["none"] * 6 + ["text", "base64", "unsigned", "signed", "signed"] if wild else ["none", "signed"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return ""
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "base64":
        return base64.urlsafe_b64encode(draw(st.binary(max_size=80))).decode()
    token = internal_pb2.FeedPageToken(
        offset=draw(st.integers(-(2**31), 2**31 - 1)),
        request_hash=marshal._request_hash(user.strip(), frozenset(categories), frozenset(excluded))
        if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1)),
        model_version=draw(st.text(max_size=5)),
        served_product_ids=draw(st.lists(st.text(max_size=12), max_size=draw(st.sampled_from([5, 1200])))))
    if kind == "unsigned":
        return base64.urlsafe_b64encode(token.SerializeToString()).decode()
    return PageTokenCodec(PAGE_TOKEN_KEY).encode(token)


def call(method: str, invoke: Callable[[], object]) -> grpc.StatusCode:
    """Makes the call and checks its answer against :data:`DOCUMENTED`; returns the code."""
    try:
        invoke()
        code = _OK
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
        assert code in DOCUMENTED[method], (method, code, details[:200])
        info = error_info(error)
        assert details and len(details) <= 1100, (method, code, len(details))
        assert info is not None and info.domain == "sharerank.v1" and info.reason, (method, code, details[:200])
        assert all(len(v) <= 128 for v in info.metadata.values()), (method, info.reason)
    assert code in DOCUMENTED[method], (method, code)
    event(f"{method} {code.name}")
    return code


def fuzz_get_feed(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    wild = data.draw(st.booleans(), "wild")
    user = data.draw(known(catalogue.users, wild), "user_id")
    wanted = data.draw(st.lists(known(catalogue.categories, wild), max_size=3), "categories")
    excluded = data.draw(st.lists(known(catalogue.products, wild), max_size=6), "exclude")
    request = feed_service_pb2.GetFeedRequest(
        user_id=user, page_size=data.draw(sizes(wild), "page_size"), categories=wanted, exclude_product_ids=excluded,
        page_token=data.draw(page_tokens(user, wanted, excluded, wild), "page_token"), explain=data.draw(st.booleans()))
    stub = feed_service_pb2_grpc.FeedServiceStub(channel)
    return call("GetFeed", lambda: stub.GetFeed(request, timeout=30))


def fuzz_get_similar_products(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    wild = data.draw(st.booleans(), "wild")
    request = feed_service_pb2.GetSimilarProductsRequest(
        product_id=data.draw(known(catalogue.products, wild), "product_id"), page_size=data.draw(sizes(wild), "size"),
        categories=data.draw(st.lists(known(catalogue.categories, wild), max_size=3), "categories"))
    stub = feed_service_pb2_grpc.FeedServiceStub(channel)
    return call("GetSimilarProducts", lambda: stub.GetSimilarProducts(request, timeout=30))


def fuzz_get_seed_targets(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    wild = data.draw(st.booleans(), "wild")
    target = data.draw(st.sampled_from(["product_id", "category", "none"]), "target")
    fields = {}
    if target == "product_id":
        fields["product_id"] = data.draw(known(catalogue.products, wild), "product_id")
    elif target == "category":
        fields["category"] = data.draw(known(catalogue.categories, wild), "category")
    request = seeding_service_pb2.GetSeedTargetsRequest(
        budget=data.draw(st.one_of(st.integers(1, 5), small_ints) if wild else st.integers(1, 5), "budget"),
        exclude_user_ids=data.draw(st.lists(known(catalogue.users, wild), max_size=4), "exclude"),
        min_activity=data.draw(st.one_of(st.just(0), small_ints) if wild else st.integers(0, 2), "min_activity"),
        max_seeds_per_community=data.draw(st.one_of(st.just(0), small_ints) if wild else st.integers(0, 3), "cap"),
        epsilon=data.draw(st.one_of(st.just(0.0), st.floats(allow_nan=True, allow_infinity=True)) if wild
                          else st.sampled_from([0.0, 0.1, 0.3]), "epsilon"),
        **fields)
    stub = seeding_service_pb2_grpc.SeedingServiceStub(channel)
    return call("GetSeedTargets", lambda: stub.GetSeedTargets(request, timeout=60))


def fuzz_get_audience(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    wild = data.draw(st.booleans(), "wild")
    request = seeding_service_pb2.GetAudienceRequest(
        product_id=data.draw(known(catalogue.products, wild), "product_id"),
        k=data.draw(st.one_of(st.integers(1, 50), small_ints) if wild else st.integers(1, 50), "k"),
        exclude_user_ids=data.draw(st.lists(known(catalogue.users, wild), max_size=4), "exclude"))
    stub = seeding_service_pb2_grpc.SeedingServiceStub(channel)
    return call("GetAudience", lambda: stub.GetAudience(request, timeout=60))


@st.composite
def events(draw, catalogue: Catalogue, wild: bool) -> event_service_pb2.Event:
    kind = draw(st.sampled_from(["purchase", "share", "view", "none"] if wild else ["purchase", "share", "view"]))
    body = {}
    if kind == "purchase":
        body["purchase"] = event_service_pb2.PurchaseEvent(
            user_id=draw(known(catalogue.users, wild)), product_id=draw(known(catalogue.products, wild)),
            share_id=draw(st.one_of(st.just(""), ids) if wild else st.just("")))
    elif kind == "share":
        body["share"] = event_service_pb2.ShareEvent(
            sharer_id=draw(known(catalogue.users, wild)), recipient_id=draw(known(catalogue.users, wild)),
            product_id=draw(known(catalogue.products, wild)))
    elif kind == "view":
        body["view"] = event_service_pb2.ViewEvent(user_id=draw(known(catalogue.users, wild)),
                                                   product_id=draw(known(catalogue.products, wild)))
    if not wild:
        body["event_time"] = Timestamp(seconds=draw(st.integers(1_600_000_000, 1_700_000_000)))
    elif draw(st.booleans()):
        body["event_time"] = Timestamp(
            seconds=draw(st.one_of(st.integers(1_600_000_000, 1_800_000_000),
                                   st.integers(min_value=-(2**40), max_value=2**40))),
            nanos=draw(st.one_of(st.just(0), st.integers(-5, 10**9 + 5))))
    event_id = draw(st.one_of(st.uuids().map(str), ids) if wild else st.uuids().map(str))
    return event_service_pb2.Event(event_id=event_id, **body)


def fuzz_record_events(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    wild = data.draw(st.booleans(), "wild")
    batch = data.draw(st.lists(events(catalogue, wild), max_size=4), "events")
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    return call("RecordEvents", lambda: stub.RecordEvents(event_service_pb2.RecordEventsRequest(events=batch),
                                                          timeout=30))


def fuzz_admin(channel: grpc.Channel, catalogue: Catalogue, data) -> grpc.StatusCode:
    """GetModelInfo (its only input is none), then ReloadModel with a drawn version."""
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    call("GetModelInfo", lambda: stub.GetModelInfo(admin_service_pb2.GetModelInfoRequest(), timeout=30))
    wild = data.draw(st.booleans(), "wild")
    sane = st.one_of(st.just(""), st.sampled_from(catalogue.versions))
    version = data.draw(st.one_of(sane, ids) if wild else sane, "model_version")
    return call("ReloadModel", lambda: stub.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version=version),
                                                        timeout=120))


FUZZERS = {"GetFeed": fuzz_get_feed, "GetSimilarProducts": fuzz_get_similar_products,
           "GetSeedTargets": fuzz_get_seed_targets, "GetAudience": fuzz_get_audience,
           "RecordEvents": fuzz_record_events, "Admin": fuzz_admin}
"""Every RPC; the admin fuzzer makes two calls an example (GetModelInfo, then ReloadModel)."""
CALLS_PER_EXAMPLE = {"Admin": 2}


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, in MB (Linux)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
