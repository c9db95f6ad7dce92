"""Run history in PostgreSQL: models, migrations, the synchronous store and the batched writer."""

from orchestrator.tracking.models import (
    Base,
    DeadLetter,
    TaskAttempt,
    TaskRun,
    WorkflowRun,
    WorkflowSpecRow,
)
from orchestrator.tracking.store import HistoryStore, NewRun, NewStep, RunRecord, StepRecord
from orchestrator.tracking.writer import HistoryWriter

__all__ = [
    "Base",
    "DeadLetter",
    "HistoryStore",
    "HistoryWriter",
    "NewRun",
    "NewStep",
    "RunRecord",
    "StepRecord",
    "TaskAttempt",
    "TaskRun",
    "WorkflowRun",
    "WorkflowSpecRow",
]
