"""Deferring a step: its delivery given back unused, the same attempt delivered again later.

An open circuit breaker and a full rate-limit window both defer a step this way. The delivery
is not an attempt: its lease and claim are released and the delivery is not counted. The same
attempt's message is published again for ``wait`` seconds later: by a broker countdown, or,
past what a broker may hold (a longer ETA would be delivered twice, field notes "Delivery"), by
the delay store that the delay pump (``orchestrator.ops.delays``) publishes from, as a retry's
delay is. No worker sleeps or polls meanwhile.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from celery.exceptions import Retry

if TYPE_CHECKING:
    from orchestrator.engine.step import Step


def defer(step: Step, wait: float) -> NoReturn:
    """Give ``step``'s delivery back and have the same attempt delivered in ``wait`` seconds;
    raises Celery's ``Retry``."""
    rt = step.rt
    rt.leases.drop(step.lease_key)
    rt.state.release(step.run_id, step.step_id, step.attempt, step.owner)
    rt.state.undo_delivery(step.run_id, step.step_id, step.attempt)
    if wait < rt.longest_broker_delay:
        raise step.task.retry(countdown=wait, max_retries=None)
    request = step.task.request
    sig = step.task.signature_from_request(
        request, request.args, request.kwargs, retries=request.retries + 1
    )
    due = time.time() + wait
    rt.delays.add(dict(sig), due)
    raise Retry(when=datetime.fromtimestamp(due, UTC))
