"""Tasks and workflows of the run-time shapes' integration tests (conditions, on_failure,
for_each, child workflows); the shapes worker imports this module."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from orchestrator import Workflow, task

HOOK_KEY = "test:shapes:on_failure"


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


@task
def score(value: float, mode: str = "") -> dict[str, float]:
    return {"value": value}


@task
def review(result: dict[str, float]) -> str:
    return f"reviewed {result['value']}"


@task
def publish(result: dict[str, float]) -> str:
    return f"published {result['value']}"


@task
def report(parents: dict[str, Any]) -> dict[str, Any]:
    return parents


@task
def explode(value: float, mode: str = "") -> float:
    raise RuntimeError(f"cannot score {value}")


@task
def note_failure(failure: dict[str, Any]) -> None:
    redis_client().rpush(HOOK_KEY, json.dumps(failure))


BRANCHING = (
    Workflow("shapes_branching")
    .step("score", score)
    .step("review", review, after="score", when="score.value < 0.5 && inputs.mode == 'strict'")
    .step("publish", publish, after="score", when="score.value >= 0.5")
    .step("report", report, after=["review", "publish"], trigger="none_failed")
)
FAILING = Workflow("shapes_failing", on_failure=note_failure).step("score", explode)


@task
def numbers(count: int) -> list[int]:
    return list(range(count))


@task
def square(n: int) -> int:
    return n * n


@task
def tally(values: list[int]) -> dict[str, int]:
    return {"count": len(values), "sum": sum(values)}


FAN_OUT = (
    Workflow("shapes_fan_out")
    .step("list", numbers)
    .step("square", square, for_each="list")
    .step("tally", tally, after="square")
)


@task
def customers(count: int) -> list[dict[str, Any]]:
    return [{"customer": f"c{i}", "amount": i} for i in range(count)]


@task
def bill(customer: str, amount: int, seconds: float = 0.0) -> dict[str, Any]:
    time.sleep(seconds)
    return {"customer": customer, "billed": amount * 10}


@task
def billed(bills: list[dict[str, Any]]) -> int:
    return sum(b["billed"] for b in bills)


BILL_ONE = Workflow("shapes_bill_one").step("bill", bill)
PER_CUSTOMER = (
    Workflow("shapes_per_customer")
    .step("list", customers)
    .step("bill", workflow="shapes_bill_one", for_each="list")
    .step("total", billed, after="bill")
)
SLOW_CHILD = Workflow("shapes_slow_child").step("bill", workflow="shapes_bill_one", kwargs={})

FRAGILE_KEY = "test:shapes:fragile"


@task
def plus_one(n: int) -> int:
    return n + 1


@task
def fragile(n: int) -> int:
    """Fails for item 3 until the test mends it; counts each call per item."""
    client = redis_client()
    client.hincrby(f"{FRAGILE_KEY}:calls", str(n), 1)
    if n == 3 and not client.exists(FRAGILE_KEY):
        raise RuntimeError("item 3 is broken")
    return n


MAP_OVER_MAP = (
    Workflow("shapes_map_over_map")
    .step("list", numbers)
    .step("square", square, for_each="list")
    .step("plus_one", plus_one, for_each="square")
    .step("tally", tally, after="plus_one")
)
FRAGILE = (
    Workflow("shapes_fragile")
    .step("list", numbers)
    .step("item", fragile, for_each="list")
    .step("tally", tally, after="item")
)
NOT_A_LIST = (
    Workflow("shapes_not_a_list")
    .step("list", score)  # a dict
    .step("square", square, for_each="list")
    .step("tally", tally, after="square")
)
TOO_MANY = (
    Workflow("shapes_too_many")
    .step("list", numbers)
    .step("square", square, for_each="list", max_items=3)
    .step("tally", tally, after="square")
)
