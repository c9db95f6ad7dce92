"""``for_each``: a step called once per item of a dependency's list result.

The step's own message *fans out*: it checks the list (a list, at most ``max_items``), writes
one step row per item (``parse[0]``, ``parse[1]``, ...), keeps the items in the run's result
hash, and publishes the item messages in batches of :data:`BATCH`, each batch led by a message
that publishes the next one. An item message carries its index, never the item (no message
grows with the number of items); its call claims, retries and is recorded like any step. Each
item's end is counted in a set; the item that completes it gathers the results in item order,
and the step ends with that list as its result, as if it had returned it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.codec import Encoded, encode
from orchestrator.engine.canvas import item_id, item_input, task_id
from orchestrator.engine.failure import NotRetryable
from orchestrator.engine.finish import builder_of, succeeded
from orchestrator.records import NewStep
from orchestrator.status import StepStatus

if TYPE_CHECKING:
    from orchestrator.engine.step import Step

BATCH = 500
"""Item messages one message publishes (the next batch is published by a message of its own)."""


class NotMappable(NotRetryable):
    """A ``for_each`` step's dependency did not return a list, or returned too many items."""


def items_join(step_id: str) -> str:
    """The set that counts a ``for_each`` step's finished items (across recoveries)."""
    return f"items:{step_id}"


def fan_out(step: Step, items: Any) -> None:
    """The step's own message: check the items, record and keep them, publish the first batch."""
    spec, name = step.spec, step.spec_id
    source = step.spec_step.for_each
    if not isinstance(items, list):
        raise NotMappable(
            f"workflow {spec.name!r}, step {name!r}: for_each needs a list, but step "
            f"{source!r} returned a value of type {type(items).__name__}"
        )
    limit = step.spec_step.max_items
    limit = step.rt.settings.max_items if limit is None else limit
    if len(items) > limit:
        raise NotMappable(
            f"workflow {spec.name!r}, step {name!r}: for_each over {len(items)} items of step "
            f"{source!r} is more than max_items={limit} (a step's max_items, or "
            "ORCHESTRATOR_MAX_ITEMS)"
        )
    rt = step.rt
    rt.leases.drop(step.lease_key)
    step.record(StepStatus.RUNNING)
    if not items:
        succeeded(step, [], encode([]))
        return
    task = step.spec_step.task
    rt.history.add_steps(
        step.run_id,
        [
            NewStep(item_id(name, i), task, task_id(step.run_id, item_id(name, i)))
            for i in range(len(items))
        ],
    )
    rt.state.restore_results(step.run_id, {item_input(name, i): v for i, v in enumerate(items)})
    publish_items(step, 0, len(items))
    rt.state.release(step.run_id, step.step_id, step.attempt, step.owner)


def publish_items(step: Step, start: int, count: int) -> None:
    """Publish items ``start`` to ``start + BATCH``, after the message that publishes the rest."""
    builder = builder_of(step)
    end = min(start + BATCH, count)
    with step.rt.app.producer_or_acquire() as producer:
        if end < count:
            builder.more_items(step.spec_id, end, count).apply_async(producer=producer)
        for index in range(start, end):
            builder.item(step.spec_id, index, count).apply_async(producer=producer)


def item_succeeded(step: Step, encoded: str, recheck: bool = False) -> None:
    """Count the item's end; the item that completes the set ends the mapped step."""
    counts, _ = step.rt.state.finish_step(  # Redis before history, as ``finish.succeeded``
        step.run_id,
        step.step_id,
        encoded,
        [items_join(step.spec_id)],
        False,
        step.attempt,
        step.owner,
    )
    if not recheck:
        step.record(StepStatus.SUCCEEDED, result=Encoded(encoded))
    added, size = counts[0]
    if size == step.count and (added or recheck):
        ids = [item_id(step.spec_id, i) for i in range(step.count)]
        results = step.rt.state.results(step.run_id, ids)
        succeeded(step, results, encode(results), recheck=recheck, step_id=step.spec_id)


def publish_more(step: Step) -> None:
    """A batch's leading message: publish the next batch, unless the run ended or failed."""
    if step.rt.state.failure(step.run_id) is None:
        publish_items(step, int(step.ctx["publish_from"]), step.count)


def item_done(step: Step, result: Any) -> Any:
    """A redelivered item that had succeeded (or an item a retried run inherited): record it
    and count it, which ends the mapped step if it was the last."""
    step.record(StepStatus.SUCCEEDED, result=result)
    item_succeeded(step, encode(result), recheck=True)
    return result
