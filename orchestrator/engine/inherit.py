"""What a retried run inherits from the run it retries: the steps that succeeded, with their
results.

History is written in batches off the steps' path, by each worker process, so just after a run
failed or was cancelled it may not know everything yet: a step that was running when the run
ended may still run (its ``running`` event unwritten, the run's end recorded it ``skipped`` or
``cancelled``), or may have succeeded a moment ago (its event still queued). Redis knows both: a
running step holds its lease, and a step that succeeded has its result in the run's results,
which a failed or cancelled run keeps after its end (``RunStateStore.end``). So a retry is
refused while a step history does not show succeeded holds a lease, and a step whose result
Redis has is inherited, as history records it once its event is written. The leases are read
before the results: a step that ends in between is seen by one of the two reads.
"""

from __future__ import annotations

from typing import Any

from orchestrator.engine.conditions import is_skipped
from orchestrator.engine.services import Services
from orchestrator.errors import InvalidTransition
from orchestrator.records import StepRecord
from orchestrator.status import StepStatus


def inherited(rt: Services, run_id: str, steps: list[StepRecord]) -> dict[str, Any]:
    """The steps of ``run_id`` that succeeded, by step id, with their results;
    ``InvalidTransition`` while a step that may still succeed is running (its effects would
    happen twice)."""
    unsure = [s for s in steps if s.status != StepStatus.SUCCEEDED]
    # the attempt history counted, and the next one (a retrying step's)
    leases = [(s.step_id, a) for s in unsure for a in {max(1, s.attempts), s.attempts + 1}]
    running = rt.state.leased(run_id, leases)
    if running:
        raise InvalidTransition(
            f"run {run_id} still has steps running ({', '.join(sorted(running))}); retry it "
            "once they end, or their effects would happen twice"
        )
    done = {s.step_id: s.result for s in steps if s.status == StepStatus.SUCCEEDED}
    late = rt.state.stored(run_id, [s.step_id for s in unsure]) if unsure else {}
    done.update({step: result for step, result in late.items() if not is_skipped(result)})
    return done
