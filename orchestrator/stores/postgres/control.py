"""Control of a run as history records it: end it (cancelled, failed), move it between
statuses (pause, resume), note that it was published, recovered, or what was done to it.

Each change is a conditional update: a run that has ended never changes status again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from sqlalchemy import insert, text, update

from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.models import RunEvent, TaskRun, WorkflowRun
from orchestrator.stores.postgres.statuses import RUNS_ENDED, STEPS_ENDED, STEPS_WAITING, values


class Control(Database):
    """End runs, move them between statuses, note what was done to them."""

    def cancel_run(self, run_id: str, reason: str) -> bool:
        """Cancel a run that has not ended: its unstarted steps become ``cancelled``."""
        return self.end_run(run_id, RunStatus.CANCELLED, reason, unstarted=StepStatus.CANCELLED)

    def fail_run(
        self, run_id: str, error: str, unstarted: StepStatus = StepStatus.CANCELLED
    ) -> bool:
        """End a run as failed (e.g. its deadline passed); steps not started get ``unstarted``."""
        return self.end_run(run_id, RunStatus.FAILED, error, unstarted)

    def end_run(self, run_id: str, status: RunStatus, error: str, unstarted: StepStatus) -> bool:
        """End a run that has not ended, in one transaction; its unstarted steps get
        ``unstarted``. False if the run had already ended."""
        key = uuid.UUID(str(run_id))
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == key, WorkflowRun.status.not_in(RUNS_ENDED))
                .values(status=status.value, error=error, finished_at=text("now()"))
                .returning(WorkflowRun.id)
            ).first()
            if changed is None:
                return False
            conn.execute(
                update(TaskRun)
                .where(TaskRun.run_id == key, TaskRun.status.in_(STEPS_WAITING))
                .values(status=unstarted.value, error=error, finished_at=text("now()"))
            )
        return True

    def end_failed(self, run_id: str, step_id: str | None, error: str) -> bool:
        """Fail a run whose failure was decided but not recorded: the failing step (if it has
        not ended) becomes ``failed``, steps not started ``skipped``. False if it had ended."""
        key = uuid.UUID(str(run_id))
        if step_id is not None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(TaskRun)
                    .where(
                        TaskRun.run_id == key,
                        TaskRun.step_id == step_id,
                        TaskRun.status.not_in(STEPS_ENDED),
                    )
                    .values(status=StepStatus.FAILED.value, error=error, finished_at=text("now()"))
                )
        if not self.end_run(run_id, RunStatus.FAILED, error, unstarted=StepStatus.SKIPPED):
            return False
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkflowRun).where(WorkflowRun.id == key).values(error_step=step_id)
            )
        return True

    def transition(
        self,
        run_id: str,
        source: tuple[RunStatus, ...],
        target: RunStatus,
        effect: Callable[[], None] | None = None,
    ) -> bool:
        """Move a run from one of ``source`` to ``target``; False if it was in no such status.

        ``effect`` (the same change in Redis) runs while the run's row is locked, before the
        commit: control actions on one run (pause, resume) are applied in one order everywhere,
        and an effect that fails leaves the status as it was.
        """
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(
                    WorkflowRun.id == uuid.UUID(str(run_id)),
                    WorkflowRun.status.in_(values(source)),
                )
                .values(status=target.value)
                .returning(WorkflowRun.id)
            ).first()
            if changed is not None and effect is not None:
                effect()
        return changed is not None

    def mark_published(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == uuid.UUID(str(run_id)))
                .values(published_at=text("now()"))
            )

    def add_recovery(self, run_id: str, done: list[str]) -> int:
        """Record an in-place recovery with the steps already done; returns its epoch (1, 2...)."""
        with self.engine.begin() as conn:
            length = conn.execute(
                text(
                    "UPDATE workflow_runs SET recoveries = recoveries || CAST(:done AS JSONB) "
                    "WHERE id = CAST(:id AS UUID) RETURNING jsonb_array_length(recoveries)"
                ),
                {"done": json.dumps([done]), "id": str(run_id)},
            ).scalar_one()
        return int(length)

    def add_event(self, run_id: str, kind: str, detail: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(RunEvent).values(run_id=uuid.UUID(str(run_id)), kind=kind, detail=detail)
            )
