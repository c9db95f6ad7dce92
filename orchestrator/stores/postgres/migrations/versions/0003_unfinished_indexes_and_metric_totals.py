"""indexes of unfinished work, and metric totals kept as history is written

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

The reconciler's queries and ``/metrics`` must cost the same with 10 or 10 million rows of
history. So:

- partial indexes cover only unfinished runs, unfinished steps, unpublished pending runs and
  unreplayed dead letters; the reconciler starts from them and never reads finished history;
- the counters and histograms of ``/metrics`` are totals: statement-level triggers on
  ``workflow_runs``, ``task_runs`` and ``task_attempts`` append what each statement changed to
  ``metric_deltas`` (insert only: writers never wait on each other), and a scrape folds those
  rows into ``metric_totals`` (``orchestrator.ops.metrics``). Deleting history does not lower them.

Each row's contribution is defined once, by the ``orchestrator_*_metrics`` functions; the
triggers add the new rows' contributions and subtract the old rows', and this migration counts
the history that exists already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Upper bounds of the histogram buckets; orchestrator.ops.metrics RUN_BUCKETS / TASK_BUCKETS.
RUN_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

UNFINISHED_RUN = "status IN ('pending', 'running', 'paused')"
UNFINISHED_STEP = "status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')"


def _array(bounds: tuple[float, ...]) -> str:
    return "ARRAY[" + ", ".join(repr(b) for b in bounds) + "]::float8[]"


# A histogram observation is stored under the smallest bucket bound it fits in ('Infinity'
# above the last); the scrape makes the buckets cumulative.
_FUNCTIONS = [
    """
CREATE FUNCTION orchestrator_bucket(d float8, bounds float8[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE((SELECT min(b) FROM unnest(bounds) b WHERE d <= b), 'Infinity')::text
$$""",
    f"""
CREATE FUNCTION orchestrator_run_metrics(
    p_workflow text, p_status text, p_started timestamptz, p_finished timestamptz
) RETURNS TABLE (metric text, key text, part text, n bigint, amount float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'runs_ended', p_workflow, p_status, 1::bigint, 0::float8
    WHERE p_status IN ('succeeded', 'failed', 'cancelled')
    UNION ALL
    SELECT 'run_seconds', p_workflow, orchestrator_bucket(d, {_array(RUN_BUCKETS)}), 1, d
    FROM (SELECT EXTRACT(EPOCH FROM p_finished - p_started)::float8 AS d) s
    WHERE p_status IN ('succeeded', 'failed') AND d IS NOT NULL
$$""",
    # A step whose result a retried run carried over (succeeded, no attempt) was never scheduled.
    """
CREATE FUNCTION orchestrator_step_metrics(p_status text, p_attempts integer)
RETURNS TABLE (metric text, key text, part text, n bigint, amount float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'steps_scheduled', '', '', 1::bigint, 0::float8
    WHERE NOT (p_status = 'succeeded' AND p_attempts = 0)
    UNION ALL
    SELECT 'steps_completed', '', p_status, 1, 0
    WHERE p_status IN ('succeeded', 'failed', 'skipped', 'cancelled') AND p_attempts > 0
    UNION ALL
    SELECT 'retries', '', '', p_attempts - 1, 0 WHERE p_attempts > 1
$$""",
    f"""
CREATE FUNCTION orchestrator_attempt_metrics(
    p_task text, p_started timestamptz, p_finished timestamptz
) RETURNS TABLE (metric text, key text, part text, n bigint, amount float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'task_seconds', p_task, orchestrator_bucket(d, {_array(TASK_BUCKETS)}), 1::bigint, d
    FROM (SELECT EXTRACT(EPOCH FROM p_finished - p_started)::float8 AS d) s
    WHERE d IS NOT NULL
$$""",
]

# What a set of rows contributes, per table (``rows`` is the table or a transition table).
_CONTRIBUTIONS = {
    "workflow_runs": "SELECT m.* FROM {rows} r, "
    "orchestrator_run_metrics(r.workflow, r.status, r.started_at, r.finished_at) m",
    "task_runs": "SELECT m.* FROM {rows} r, orchestrator_step_metrics(r.status, r.attempts) m",
    "task_attempts": "SELECT m.* FROM {rows} a JOIN task_runs t ON t.id = a.task_run_id, "
    "orchestrator_attempt_metrics(t.task_name, a.started_at, a.finished_at) m",
}


def _trigger_function(table: str) -> str:
    contributions = _CONTRIBUTIONS[table]
    changed = (
        f"SELECT c.metric, c.key, c.part, sum(c.n), sum(c.amount) FROM ("
        f"{contributions.format(rows='new_rows')} UNION ALL "
        f"SELECT m.metric, m.key, m.part, -m.n, -m.amount FROM ("
        f"{contributions.format(rows='old_rows')}) m) c "
        "GROUP BY c.metric, c.key, c.part HAVING sum(c.n) <> 0 OR abs(sum(c.amount)) > 1e-9"
    )
    added = (
        f"SELECT c.metric, c.key, c.part, sum(c.n), sum(c.amount) FROM ("
        f"{contributions.format(rows='new_rows')}) c GROUP BY c.metric, c.key, c.part"
    )
    insert = "INSERT INTO metric_deltas (metric, key, part, n, amount) "
    return f"""
CREATE FUNCTION orchestrator_count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        {insert}{changed};
    ELSE
        {insert}{added};
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    # -- the reconciler's indexes: unfinished work only -------------------------------------
    op.create_index(
        "ix_workflow_runs_unfinished",
        "workflow_runs",
        ["status", "created_at"],
        postgresql_where=sa.text(UNFINISHED_RUN),
    )
    op.drop_index("ix_workflow_runs_unpublished", table_name="workflow_runs")
    op.create_index(
        "ix_workflow_runs_unpublished_pending",
        "workflow_runs",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending' AND published_at IS NULL"),
    )
    op.create_index(
        "ix_task_runs_unfinished",
        "task_runs",
        ["run_id", "status"],
        postgresql_where=sa.text(UNFINISHED_STEP),
    )
    op.create_index(
        "ix_dead_letters_unreplayed",
        "dead_letters",
        ["id"],
        postgresql_where=sa.text("replayed_at IS NULL"),
    )
    # -- metric totals ----------------------------------------------------------------------
    op.create_table(
        "metric_totals",
        sa.Column("metric", sa.Text(), primary_key=True),
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("part", sa.Text(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
    )
    op.create_table(
        "metric_deltas",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("part", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
    )
    for sql in _FUNCTIONS:
        op.execute(sql)
    for table in _CONTRIBUTIONS:
        op.execute(_trigger_function(table))
        op.execute(
            f"CREATE TRIGGER {table}_metrics_insert AFTER INSERT ON {table} "
            "REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION orchestrator_count_{table}()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_metrics_update AFTER UPDATE ON {table} "
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION orchestrator_count_{table}()"
        )
    # The history already there (the triggers hold their tables' locks until this commits,
    # so no write falls between the two).
    for table, contributions in _CONTRIBUTIONS.items():
        op.execute(
            "INSERT INTO metric_totals (metric, key, part, n, amount) "
            f"SELECT c.metric, c.key, c.part, sum(c.n), sum(c.amount) "
            f"FROM ({contributions.format(rows=table)}) c GROUP BY c.metric, c.key, c.part"
        )


def downgrade() -> None:
    for table in _CONTRIBUTIONS:
        op.execute(f"DROP TRIGGER {table}_metrics_update ON {table}")
        op.execute(f"DROP TRIGGER {table}_metrics_insert ON {table}")
        op.execute(f"DROP FUNCTION orchestrator_count_{table}()")
    op.execute("DROP FUNCTION orchestrator_attempt_metrics(text, timestamptz, timestamptz)")
    op.execute("DROP FUNCTION orchestrator_step_metrics(text, integer)")
    op.execute("DROP FUNCTION orchestrator_run_metrics(text, text, timestamptz, timestamptz)")
    op.execute("DROP FUNCTION orchestrator_bucket(float8, float8[])")
    op.drop_table("metric_deltas")
    op.drop_table("metric_totals")
    op.drop_index("ix_dead_letters_unreplayed", table_name="dead_letters")
    op.drop_index("ix_task_runs_unfinished", table_name="task_runs")
    op.drop_index("ix_workflow_runs_unpublished_pending", table_name="workflow_runs")
    op.create_index(
        "ix_workflow_runs_unpublished",
        "workflow_runs",
        ["created_at"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_workflow_runs_unfinished", table_name="workflow_runs")
