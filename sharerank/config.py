"""One configuration for every command: code defaults, overridable by ``SHARERANK_*`` environment variables.

Every field documents its default; ``Settings()`` with an empty environment yields exactly these.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where models are tracked and served from, and how the server listens."""

    model_config = SettingsConfigDict(env_prefix="SHARERANK_", extra="ignore")

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
    host: str = Field("127.0.0.1", description="gRPC listen address.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    workers: int = Field(8, ge=1, le=256, description="gRPC worker threads (a small pool keeps p99 low).")
    reload_poll_seconds: float = Field(30.0, ge=0, description="Champion alias poll period; 0 disables polling.")

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or (self.home.resolve() / "mlartifacts").as_uri()

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"
