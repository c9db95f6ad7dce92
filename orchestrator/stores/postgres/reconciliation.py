"""The reconciler's questions to history (``orchestrator.ops.reconciler``): runs whose steps
have all ended, runs never published, steps whose worker may have died, runs that stalled,
retries that are overdue; and the two answers it writes back (finish a run, fail an orphan).

The queries cost the same with 10 or 10 million rows of history: they start from the runs not
yet ended (ix_workflow_runs_unfinished, or the index on status) and look at each one's steps by
run id, through the index of unfinished steps (ix_task_runs_unfinished) where they can;
unpublished runs have an index of their own (migration 0003). ``OFFSET 0`` keeps each look a
probe per run: without it the planner may turn it into a hash join over all of task_runs, or
start from the unfinished steps, which include those that runs ended without (a failed run's
steps that never started), and so grow with history.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text, update

from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.models import TaskRun, WorkflowRun
from orchestrator.stores.postgres.statuses import (
    RUNS_ENDED,
    SQL_RUNS_ENDED,
    SQL_RUNS_UNFINISHED,
    SQL_STEPS_ENDED,
)

SETTLED = text(f"""
SELECT r.id,
       -- skipped steps (a false `when`, and what follows them) end a run as succeeded
       CASE WHEN NOT EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id
                             AND t.status NOT IN ('succeeded', 'skipped') OFFSET 0)
            THEN 'succeeded'
            WHEN EXISTS (SELECT FROM task_runs t
                         WHERE t.run_id = r.id AND t.status = 'failed' OFFSET 0)
            THEN 'failed'
            ELSE 'cancelled' END
FROM workflow_runs r
WHERE r.status IN {SQL_RUNS_UNFINISHED}
  -- every step has ended (asked first: it rules out almost every run), and there is a step
  AND CASE WHEN EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id
                        AND t.status NOT IN {SQL_STEPS_ENDED}
                        OFFSET 0)
           THEN false
           ELSE EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id OFFSET 0) END
LIMIT :limit
""")
UNPUBLISHED = text("""
SELECT id FROM workflow_runs
WHERE published_at IS NULL AND status = 'pending'
  AND created_at < now() - make_interval(secs => :age)
ORDER BY created_at LIMIT :limit
""")
SUSPECT = text("""
SELECT r.id, t.step_id, t.attempts FROM workflow_runs r
CROSS JOIN LATERAL (SELECT t.step_id, t.attempts FROM task_runs t
                    WHERE t.run_id = r.id AND t.status = 'running'
                      AND t.started_at < now() - make_interval(secs => :age) OFFSET 0) t
WHERE r.status = 'running'
LIMIT :limit
""")
# from the unfinished-steps index (its predicate repeated so the planner uses it), never from
# the ended runs, which are most of the history
ORPHANED = text(f"""
SELECT t.run_id, t.step_id, t.attempts FROM task_runs t JOIN workflow_runs r ON r.id = t.run_id
WHERE t.status = 'running' AND t.status NOT IN {SQL_STEPS_ENDED}
  AND t.started_at < now() - make_interval(secs => :age)
  AND r.status IN {SQL_RUNS_ENDED}
LIMIT :limit
""")
LATE_RETRIES = text("""
SELECT r.id, t.step_id, t.attempts FROM workflow_runs r
CROSS JOIN LATERAL (SELECT t.step_id, t.attempts FROM task_runs t
                    WHERE t.run_id = r.id AND t.status = 'retrying'
                      AND t.finished_at < now() - make_interval(secs => :age) OFFSET 0) t
WHERE r.status IN ('pending', 'running')
LIMIT :limit
""")
# No step started or ended for :age: the latest of published_at and every step's start and end
# runs whose sinks reported (output and finished_at written) that have not succeeded: a step's
# success reached Redis but its history died with its process (a worker killed before it wrote)
OUTPUT_WRITTEN = text(f"""
SELECT r.id FROM workflow_runs r
WHERE r.status IN {SQL_RUNS_UNFINISHED} AND r.finished_at IS NOT NULL
  AND r.finished_at < now() - make_interval(secs => :age)
LIMIT :limit
""")

STALLED = text("""
SELECT r.id FROM workflow_runs r
WHERE r.status IN ('pending', 'running') AND r.published_at IS NOT NULL
  AND r.published_at < now() - make_interval(secs => :age)
  AND EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id AND t.status = 'pending' OFFSET 0)
  AND NOT EXISTS (SELECT FROM task_runs t
                  WHERE t.run_id = r.id AND t.status IN ('running', 'retrying') OFFSET 0)
  AND NOT EXISTS (SELECT FROM task_runs t
                  WHERE t.run_id = r.id
                    AND greatest(t.started_at, t.finished_at) >= now() - make_interval(secs => :age)
                  OFFSET 0)
ORDER BY random()
LIMIT :limit
""")


class Reconciliation(Database):
    """What the reconciler asks history, and the ends it records."""

    def settled_runs(self, limit: int = 100) -> list[tuple[str, RunStatus]]:
        """Unfinished runs whose steps have all ended, with the status the run should have."""
        rows = self._query(SETTLED, {"limit": limit})
        return [(str(r[0]), RunStatus(r[1])) for r in rows]

    def finish_settled(
        self, run_id: str, status: RunStatus, output: Any, error: str | None
    ) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == uuid.UUID(run_id), WorkflowRun.status.not_in(RUNS_ENDED))
                .values(status=status.value, output=output, error=error, finished_at=text("now()"))
                .returning(WorkflowRun.id)
            ).first()
        return changed is not None

    def unpublished_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Pending runs recorded over ``older_than`` seconds ago and never published, oldest
        first."""
        rows = self._query(UNPUBLISHED, {"age": older_than, "limit": limit})
        return [str(r[0]) for r in rows]

    def suspect_steps(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds, in unfinished runs."""
        rows = self._query(SUSPECT, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def orphaned_steps(self, older_than: float, limit: int = 100) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds in runs that ended
        (a failed run's branch whose worker died before recording its end)."""
        rows = self._query(ORPHANED, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def fail_orphan(self, run_id: str, step_id: str, error: str) -> bool:
        """End an orphaned running step as failed; False if it had ended meanwhile."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(TaskRun)
                .where(
                    TaskRun.run_id == uuid.UUID(str(run_id)),
                    TaskRun.step_id == step_id,
                    TaskRun.status == StepStatus.RUNNING.value,
                )
                .values(status=StepStatus.FAILED.value, error=error, finished_at=text("now()"))
                .returning(TaskRun.id)
            ).first()
        return changed is not None

    def output_written_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Unfinished runs whose output was written over ``older_than`` seconds ago."""
        rows = self._query(OUTPUT_WRITTEN, {"age": older_than, "limit": limit})
        return [str(r[0]) for r in rows]

    def stalled_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Running runs with nothing running and no step start or end for ``older_than`` s; at
        most ``limit``, drawn at random from all such runs, so that each is asked about in
        time however many there are."""
        rows = self._query(STALLED, {"age": older_than, "limit": limit})
        return [str(r[0]) for r in rows]

    def late_retries(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps ``retrying`` for longer than ``older_than`` seconds (since the failed attempt
        ended), in pending or running runs: (run id, step id, attempts)."""
        rows = self._query(LATE_RETRIES, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def _query(self, sql: Any, params: dict[str, Any]) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sql, params))
