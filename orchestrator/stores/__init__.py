"""Redis adapters: per-run state, circuit breakers, and durably delayed messages."""

from orchestrator.stores.breakers import MemoryBreakerStore, RedisBreakerStore
from orchestrator.stores.delays import DelayedMessages
from orchestrator.stores.runs import RunState

__all__ = ["DelayedMessages", "MemoryBreakerStore", "RedisBreakerStore", "RunState"]
