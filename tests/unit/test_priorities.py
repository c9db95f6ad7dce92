"""Priorities 0..9 of runs and steps: validation, and the number each broker is given."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from kombu.transport.redis import Channel as RedisChannel

from orchestrator import PriorityError, Workflow
from orchestrator.app import celery_config
from orchestrator.core.planner import build_plan
from orchestrator.core.priorities import (
    REDIS_PRIORITY_STEPS,
    broker_priority,
    check_priority,
    effective,
    redis_list,
    reversed_by,
)
from orchestrator.core.spec import WorkflowSpec, parse_spec
from orchestrator.engine.canvas import CTX_KEY, QUEUE_TIMEOUT_KEY, CanvasBuilder
from orchestrator.engine.priorities import queue_refused
from orchestrator.ops.metrics import queue_family
from orchestrator.ops.queue_depth import known_queues
from orchestrator.records import WorkerInfo
from orchestrator.settings import Settings
from orchestrator.stores.memory.workers import MemoryWorkers

RUN_ID = "6f1c2b1e-5a4d-4c3b-8a29-0123456789ab"


@pytest.mark.parametrize("value", [None, 0, 5, 9])
def test_priorities_from_0_to_9_are_accepted(value: int | None) -> None:
    assert check_priority(value, "etl") == value


@pytest.mark.parametrize("value", [-1, 10, 1.5, True, "9"])
def test_other_priorities_are_refused_naming_workflow_and_step(value: Any) -> None:
    with pytest.raises(PriorityError, match=r"workflow 'etl', step 'load': priority .* 0 .* 9"):
        check_priority(value, "etl", "load")


def test_a_step_priority_out_of_range_is_refused_in_python_and_yaml() -> None:
    # Given a step option of 12 / When the step is added or the YAML parsed / Then PriorityError
    with pytest.raises(PriorityError, match="step 'x'"):
        Workflow("prio_bad").step("x", "tasks.etl.extract", priority=12)
    doc = {"name": "prio_yaml", "steps": [{"id": "x", "task": "t.x", "priority": 10}]}
    with pytest.raises(PriorityError, match="workflow 'prio_yaml', step 'x'"):
        parse_spec(doc)


def test_yaml_priority_and_queue_timeout_are_step_options() -> None:
    doc = {"name": "p", "steps": [{"id": "x", "task": "t.x", "priority": 5, "queue_timeout": 30}]}
    step = parse_spec(doc).steps[0]
    assert (step.priority, step.queue_timeout) == (5, 30)


def test_celerys_priority_option_is_the_step_priority_on_the_same_scale() -> None:
    spec = WorkflowSpec(name="p", steps=[{"id": "x", "task": "t.x", "options": {"priority": 7}}])
    assert spec.steps[0].priority == 7 and "priority" not in spec.steps[0].options


def test_a_step_priority_wins_over_the_run_priority() -> None:
    assert effective(None, None) == 0
    assert effective(None, 9) == 9
    assert effective(2, 9) == 2


@pytest.mark.parametrize(
    ("url", "reverse"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("rediss://h:6380/1", True),
        ("sentinel://h:26379;sentinel://h2:26379", True),
        ("amqp://guest:guest@127.0.0.1:5672//", False),
        ("pyamqp://h//", False),
        ("memory://localhost/", False),
        (None, False),
    ],
)
def test_redis_is_the_broker_that_reads_priorities_reversed(url: str | None, reverse: bool) -> None:
    assert reversed_by(url) is reverse


def test_on_redis_priority_9_goes_to_the_list_kombu_pops_first() -> None:
    # Given kombu's own Redis channel logic with our priority steps
    channel = RedisChannel.__new__(RedisChannel)
    channel.priority_steps = REDIS_PRIORITY_STEPS
    # Then the list of priority 9 is the bare queue (step 0, popped first) and 0's is step 9
    lists = [channel._q_for_pri("q", broker_priority(p, True)) for p in range(9, -1, -1)]
    assert lists == [redis_list("q", p) for p in range(9, -1, -1)]
    assert lists[0] == "q" and lists[-1] == "q\x06\x169"
    pop_order = [channel._q_for_pri("q", step) for step in channel.priority_steps]
    assert pop_order == lists  # kombu pops step 0 first: 9, 8, ..., 0 in our scale


def test_on_rabbitmq_priorities_are_given_as_they_are() -> None:
    assert [broker_priority(p, False) for p in (0, 5, 9)] == [0, 5, 9]


def test_celery_config_orders_by_priority_on_each_broker() -> None:
    redis_conf = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert redis_conf["broker_transport_options"]["priority_steps"] == list(range(10))
    assert redis_conf["task_default_priority"] == 9  # a message without one is priority 0
    assert "priority_steps" not in redis_conf["result_backend_transport_options"]
    amqp = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert celery_config(amqp)["task_queue_max_priority"] == 9
    kept = celery_config(amqp.model_copy(update={"priority_queues": False}))
    assert "task_queue_max_priority" not in kept  # queues declared before without it


def _signatures(broker: str, priority: int | None) -> dict[str, Any]:
    app = Celery("t", set_as_current=False, broker=broker)
    spec = WorkflowSpec(
        name="p",
        steps=[
            {"id": "a", "task": "t.a"},
            {"id": "b", "task": "t.b", "priority": 2, "queue_timeout": 30},
        ],
    )
    plan = build_plan(spec)
    builder = CanvasBuilder(app, spec, plan, RUN_ID, {}, priority=priority)
    return {s: builder.signature(s) for s in ("a", "b")}


def test_the_canvas_gives_each_step_its_priority_as_the_broker_reads_it() -> None:
    # Given a run of priority 9 with a step of priority 2, on Redis and on RabbitMQ
    on_redis = _signatures("redis://127.0.0.1:6379/0", 9)
    on_rabbit = _signatures("amqp://guest@127.0.0.1//", 9)
    # Then the broker numbers are reversed on Redis only, and the step's own wins
    assert on_redis["a"].options["priority"] == 0 and on_redis["b"].options["priority"] == 7
    assert on_rabbit["a"].options["priority"] == 9 and on_rabbit["b"].options["priority"] == 2
    # And the run's priority and the step's queue timeout ride in the step's context
    assert on_redis["a"].kwargs[CTX_KEY]["priority"] == 9
    assert on_redis["b"].kwargs[CTX_KEY][QUEUE_TIMEOUT_KEY] == 30
    assert QUEUE_TIMEOUT_KEY not in on_redis["a"].kwargs[CTX_KEY]


def test_a_run_without_priority_publishes_priority_0() -> None:
    sigs = _signatures("redis://127.0.0.1:6379/0", None)
    assert sigs["a"].options["priority"] == 9  # Redis's number for our 0
    assert "priority" not in sigs["a"].kwargs[CTX_KEY]


def test_queue_depth_names_the_default_workflow_and_worker_queues() -> None:
    # Given a workflow step on "gpu" and a live worker consuming "io"
    assert Workflow("prio_depth_names").step("x", "t.x", queue="gpu").spec  # registers it
    workers = MemoryWorkers()
    workers.publish(WorkerInfo("w1@h", ("io",), (), 1, 1, 0.0, 0.0), 600)
    app = Celery("t", set_as_current=False)
    # Then the queues measured are the default one, the workflow's and the worker's
    assert {"celery", "gpu", "io"} <= set(known_queues(app, workers))
    # And the metric has one sample per queue
    family = queue_family([("celery", 3), ("gpu", 0)])
    assert {s.labels["queue"]: s.value for s in family.samples} == {"celery": 3.0, "gpu": 0.0}


def test_a_queue_rabbitmq_refuses_for_its_priorities_is_named_with_the_fix() -> None:
    class PreconditionFailed(Exception):
        code = 406

    refused = PreconditionFailed(
        "Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue"
    )
    assert "ORCHESTRATOR_PRIORITY_QUEUES=false" in (queue_refused(refused) or "")
    assert queue_refused(ConnectionError("refused")) is None


def test_task_events_are_off_unless_asked_for_as_in_celery() -> None:
    # Flower turns them on in the workers it watches; -E or the setting from the start
    assert celery_config(Settings())["worker_send_task_events"] is False
    assert celery_config(Settings(task_events=True))["worker_send_task_events"] is True
    assert celery_config(Settings())["task_send_sent_event"] is False
