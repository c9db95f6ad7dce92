"""``RunState.lapsed_claims`` on Redis keeps the rules of its in-memory twin (one Lua script
per run: claimed attempts with no result, no live lease and no later attempt)."""

from __future__ import annotations

import time

import pytest

from orchestrator.stores.redis.runs import RunState
from tests.unit.engine.test_lapsed_claims import check_lapsed_claim_rules

pytestmark = pytest.mark.integration


def test_the_redis_store_keeps_the_lapsed_claim_rules(servers: dict[str, str]) -> None:
    state = RunState(servers["ORCHESTRATOR_REDIS_URL"], ttl=60, ended_ttl=60)
    try:
        check_lapsed_claim_rules(state, time.sleep, lease_ms=300)
    finally:
        for found in state.client.scan_iter("orch:{rules-*", count=1000):
            state.client.delete(found)
        state.client.close()
