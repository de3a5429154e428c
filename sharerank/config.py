"""One configuration for every command: code defaults, overridable by ``SHARERANK_*`` environment variables.

Every field documents its default; ``Settings()`` with an empty environment yields exactly these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["storefront", "growth", "admin"]
"""Who a bearer token speaks for: storefront (FeedService, EventService), growth (SeedingService), admin (all)."""


class Settings(BaseSettings):
    """Where models are tracked and served from, and how the server listens."""

    # Inputs stay out of validation errors: auth_tokens holds secrets.
    model_config = SettingsConfigDict(env_prefix="SHARERANK_", extra="ignore", hide_input_in_errors=True)

    home: Path = Field(Path(".sharerank"), description="Project-local folder for the MLflow store and artifacts.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking store; default sqlite:///<home>/mlflow.db. A PostgreSQL URI for teams."
    )
    artifact_root: str | None = Field(None, description="Where runs store artifacts; default <home>/mlartifacts.")
    experiment: str = Field("sharerank", description="MLflow experiment of training runs.")
    model_name: str = Field("sharerank", description="Registered model that serving loads.")
    alias: str = Field("champion", description="Registry alias that serving follows.")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SHARERANK_REDIS_URL", "REDIS_URL"),
        description="Online store. redis://... for Redis, memory:// for the in-process store; unset: Redis at "
        "redis://127.0.0.1:6379/0 when it answers, else in-process.",
    )
    catalogue_path: Path | None = Field(
        None,
        description="Optional catalogue for serving: a products.csv or products.parquet (dataset-folder format: "
        "product_id,category[,price,seller_id,in_stock]), or a dataset folder holding one. Applied at every model "
        "load: products the model never saw are served with their category's mean embedding. Unset: none.",
    )
    host: str = Field("127.0.0.1", description="gRPC listen address.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    workers: int = Field(8, ge=1, le=256, description="gRPC worker threads (a small pool keeps p99 low).")
    max_connection_age_seconds: float = Field(
        60.0, ge=0,
        description="Clients are asked (HTTP/2 GOAWAY) to reconnect after a connection is this old, calls in flight "
        "finishing first: with several server processes on one port the kernel spreads connections, not calls, so "
        "this is what brings load back to a restarted or added replica. 0: connections live for ever.",
    )
    reload_poll_seconds: float = Field(30.0, ge=0, description="Champion alias poll period; 0 disables polling.")
    auth_tokens: dict[str, Role] = Field(
        default_factory=dict,
        repr=False,  # secrets: keep them out of logs and tracebacks
        description="Bearer token → role, as JSON in SHARERANK_AUTH_TOKENS, e.g. "
        '{"s3cr3t-a": "storefront", "s3cr3t-b": "growth", "s3cr3t-c": "admin"}. Clients send '
        "`authorization: Bearer <token>`. Roles: storefront (FeedService, EventService), growth "
        "(SeedingService), admin (every service). Empty (the default): auth is off. Health checking and "
        "reflection never need a token.",
    )
    event_log_dir: Path | None = Field(
        None,
        description="Folder of the append-only event log that RecordEvents writes (the dataset-folder format: "
        "purchases.csv, shares.csv, views.csv; train on it with `sharerank train --data`); default <home>/events. "
        "One server process writes a folder at a time: a second one fails to start (it holds a lock file).",
    )
    event_stream_url: str | None = Field(
        None,
        description="Shared event stream, nats://host:port (NATS JetStream): RecordEvents acknowledges a batch once "
        "the stream stored it, any number of server processes write it, and `sharerank ingest` drains it into a "
        "dataset folder. Unset (the default): the file log in event_log_dir. `serve --processes N` needs it.",
    )
    event_stream_name: str = Field(
        "SHARERANK_EVENTS", pattern=r"^[A-Za-z0-9_-]+$",
        description="JetStream stream of the events (subjects <name>.>), created at first use.")
    event_stream_dedup_seconds: float = Field(
        3600.0, gt=0,
        description="How long the stream remembers event ids to drop a resent event (its duplicate window, set when "
        "the stream is created). A resend after that is stored again; `ingest` still logs each event id once.",
    )
    page_token_key: str | None = Field(
        None,
        repr=False,  # a secret
        description="Key that signs feed page tokens (HMAC-SHA256). Unset: a random key per server process, so "
        "tokens stop working after a restart and across processes (clients start again from the first page).",
    )
    heavy_workers: int = Field(
        1, ge=1, le=64,
        description="Workers for heavy calls (GetSeedTargets and GetAudience; ReloadModel has one of its own), "
        "apart from the gRPC workers that serve feeds, at a lower CPU priority.",
    )
    heavy_processes: bool = Field(
        True,
        description="Run seeding and audiences in worker processes of their own (own GIL, lower CPU priority), "
        "which load the serving model on their first call after it changed; off: threads of the server process.",
    )
    heavy_threads: int = Field(
        1, ge=1, le=256,
        description="Threads each heavy worker process computes with (numba): heavy calls take at most "
        "heavy_workers x heavy_threads cores, the rest are the feeds'.",
    )
    heavy_queue: int = Field(
        2, ge=0, le=1024,
        description="Heavy calls that may wait for a heavy worker; past workers + queue a call fails "
        "RESOURCE_EXHAUSTED with a retry hint. Keep workers + queue below `workers` so feeds always keep threads.",
    )
    store_failures_to_open: int = Field(
        3, ge=1, description="Consecutive online-store failures (timeouts, refused connections) that open its "
        "circuit breaker: then calls skip the store at once until a background probe finds it answering.",
    )
    store_probe_seconds: float = Field(
        0.5, gt=0, description="How often an open circuit breaker probes the online store.")
    heal_seconds: float = Field(
        5.0, gt=0, description="How often the event log's tail is re-applied to the online store when writes were "
        "missed, and the store checked for lost state (a restarted Redis).",
    )
    fatigue_window_seconds: float = Field(
        7 * 24 * 3600.0, gt=0,
        description="Share fatigue window: RecordEvents keeps, per recipient, the shares received in the last this "
        "many seconds (distinct event ids, in all and per sharer); the feed down-weights shares to a user by them.",
    )
    feed_shares_per_sharer: int = Field(
        3, ge=1,
        description="Products shared to the user by one sharer that one feed session (a first page and the pages "
        "its tokens lead to) shows at most; the rest are held back, with a reason on that sharer's items.",
    )
    fatigue_half_shares: float = Field(
        20.0, gt=0,
        description="Shares received in the fatigue window at which the social-proof boost of a share to the user "
        "halves; shares from the same sharer count twice.",
    )
    pin_file: Path | None = Field(
        None,
        description="Where a version pinned by ReloadModel is remembered across restarts. Unset (the default): a "
        "pin lasts until the alias moves, an unpin, or the server stops.",
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535,
        description="Prometheus /metrics HTTP port, on `host`; 0 disables metrics. If the port is taken the "
        "server logs an error and serves without metrics.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="How commands log to stderr: text for people (rich), json for a log pipeline (one JSON object "
        "per line, with the request fields of sharerank.requests as keys).",
    )
    log_level: Literal["debug", "info", "warning", "error"] | None = Field(
        None,
        description="Log level; unset: warning (info with --verbose). debug adds one line per gRPC call.",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector (OTLP over gRPC, e.g. http://127.0.0.1:4317) that gets a trace of every "
        "call: a span per call, per feed stage and per online-store round trip; replies carry x-trace-id. Unset "
        "(the default): tracing is off and costs nothing.",
    )
    trace_sample_ratio: float = Field(
        0.1, ge=0, le=1,
        description="Share of calls traced when otlp_endpoint is set (a caller's sampled traceparent is always "
        "followed): a traced feed costs ~10 spans of Python time, an untraced one almost nothing.",
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the gRPC server presents (its own certificate first); with tls_key_file "
        "the server listens with TLS. Unset (the default): plaintext, which auth_tokens allow on loopback only.",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key (unencrypted) of tls_cert_file; set both or neither. Unset: no TLS.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates that must have signed a client's certificate (mutual TLS; needs "
        "tls_cert_file and tls_key_file). Unset (the default): clients need no certificate.",
    )

    grpc_target: str = Field(
        "127.0.0.1:50051", description="Where the growth console (`sharerank console`) finds the gRPC service.")
    grpc_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the growth console trusts for grpc_target; set: it connects with TLS. "
        "Unset (the default): plaintext.",
    )
    console_token: str | None = Field(
        None,
        repr=False,  # a secret
        description="Bearer token the growth console sends (a `growth` token of the server's auth_tokens when auth "
        "is on; the console can do no more than it allows). Unset: no token.",
    )

    client_token: str | None = Field(
        None,
        repr=False,  # a secret
        description="Bearer token sharerank.client sends by default (a storefront or growth token of the server's "
        "auth_tokens); unset: console_token, then none.",
    )

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _check_tokens(cls, tokens: object) -> object:
        # Checked here, before pydantic's own checks, so no error names a token (its location would).
        if isinstance(tokens, dict):
            roles = get_args(Role)
            for token, role in tokens.items():
                if not (isinstance(token, str) and token.isprintable()) or not token or any(c.isspace() for c in token):
                    raise ValueError("auth tokens must be non-empty printable strings without whitespace")
                if role not in roles:
                    raise ValueError(f"unknown role {role!r} in auth_tokens; roles are {', '.join(roles)}")
        return tokens

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set tls_cert_file and tls_key_file together (the server's certificate and its key), "
                             "or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or (self.home.resolve() / "mlartifacts").as_uri()

    @property
    def resolved_event_log_dir(self) -> Path:
        return self.event_log_dir or self.home / "events"

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"
