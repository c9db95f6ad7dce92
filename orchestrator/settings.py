"""The one configuration class: environment variables with the ``ORCHESTRATOR_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class Settings(BaseSettings):
    """Everything orchestrator reads from its environment (``ORCHESTRATOR_*``)."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Celery broker (Redis or RabbitMQ)."
    )
    result_backend: str | None = Field(
        None, description="Celery result backend; defaults to the Redis broker URL."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for joins, run state and breakers; defaults to the result backend.",
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/orchestrator",
        description="PostgreSQL for run history (a plain postgresql:// URL; psycopg 3 is used).",
    )
    task_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tasks"],
        description="Comma-separated modules the worker and client import to register tasks.",
    )
    workflows_path: str = Field(
        "config/workflows", description="Directory (or file) of YAML workflows to load."
    )
    result_expires: int = Field(
        7 * 24 * 3600, description="Seconds Celery results and per-run Redis state are kept."
    )
    visibility_timeout: int = Field(
        3600,
        description="Seconds before Redis redelivers an unacknowledged message; retry delays "
        "longer than half of it are kept durably in Redis instead of as broker ETAs.",
    )
    retention_days: float = Field(
        30, description="Runs older than this many days are deleted by the periodic cleanup."
    )
    lease_seconds: float = Field(
        30,
        description="A running step's lease; a step whose lease lapses (its worker died) "
        "is recovered by the reconciler.",
    )
    max_deliveries: int = Field(
        5, description="Deliveries of one attempt (worker crashes) before it is dead-lettered."
    )
    max_items: int = Field(
        10000, ge=0, description="Most items one for_each step maps over (a step's max_items wins)."
    )
    context_max_bytes: int = Field(
        65536,
        ge=1,
        description="Largest a run's context may grow (keys and JSON values, in bytes); a "
        "`current_run.context.set` past it raises ContextError and writes nothing.",
    )
    reconcile_interval: float = Field(5.0, description="Seconds between reconciler passes.")
    priority_queues: bool = Field(
        True,
        description="On RabbitMQ, declare queues with x-max-priority=9 so run and step "
        "priorities order them; false for queues declared before without it (RabbitMQ refuses "
        "to declare a queue again with other arguments: PRECONDITION_FAILED).",
    )
    stall_timeout: float = Field(
        300,
        description="A run with nothing running and nothing finishing for this long, "
        "while a step is ready, is recovered.",
    )
    history_flush_interval: float = Field(
        0.1,
        description="Longest a history event waits in a worker before it is written (events "
        "that arrive while a batch is being written form the next batch); a run's end is "
        "written at once, and `wait()` does not wait for history.",
    )
    history_batch_size: int = Field(1000, description="Most history events written at once.")
    history_queue_size: int = Field(
        10000,
        ge=1,
        description="Most history events a process holds unwritten; when they are that many, "
        "a step's process waits for them to be written (PostgreSQL away: it stops taking work) "
        "rather than grow its memory or drop events.",
    )
    flower_url: str = Field("http://127.0.0.1:5555", description="Where Flower is served.")
    flower_basic_auth: SecretStr | None = Field(
        None, description="Flower credentials as user:password (required to start Flower)."
    )
    ui_auth: SecretStr | None = Field(
        None, description="Console credentials as user:password (required to start the console)."
    )
    ui_port: int = Field(8765, description="Port of the console (`orchestrator ui`).")
    ui_host: str = Field(
        "127.0.0.1", description="Address the console binds (0.0.0.0 in a container)."
    )
    metrics_port: int | None = Field(None, description="Port for /metrics, /health and /ready.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics endpoint binds (0.0.0.0 in a container)."
    )
    task_events: bool = Field(
        False,
        description="Workers send task events from the start, as `celery worker -E` (Celery's "
        "default is off: each event costs a Redis round trip). Flower turns them on in the "
        "workers it watches by itself, and `orchestrator dev` starts its worker with them.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Worker log line format.")
    worker_concurrency: int | None = Field(None, description="Default worker concurrency.")

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def backend_url(self) -> str:
        """The Celery result backend actually used."""
        if self.result_backend:
            return self.result_backend
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"

    @property
    def state_url(self) -> str:
        """The Redis URL for run state, joins and breakers."""
        return self.redis_url or self.backend_url

    @property
    def sqlalchemy_url(self) -> str:
        """``database_url`` with the psycopg 3 driver named, as SQLAlchemy wants it."""
        url = self.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
