"""The run history in PostgreSQL (the ``RunHistory`` port), read and written synchronously.

One class made of one part per concern: submit and read (:mod:`.runs`), control
(:mod:`.control`), the reconciler's questions (:mod:`.reconciliation`), dead letters
(:mod:`.dead_letters`), housekeeping (:mod:`.housekeeping`), the console's listings
(:mod:`.listing`) and schedule control (:mod:`.schedules`), over one per-process engine
(:mod:`.connection`). The hot path of a step never calls it; workers write through
:class:`orchestrator.stores.postgres.writer.HistoryWriter`.
"""

from __future__ import annotations

from orchestrator.stores.postgres.connection import reachable
from orchestrator.stores.postgres.context import Contexts
from orchestrator.stores.postgres.control import Control
from orchestrator.stores.postgres.dead_letters import DeadLetters
from orchestrator.stores.postgres.housekeeping import Housekeeping
from orchestrator.stores.postgres.listing import Listing
from orchestrator.stores.postgres.reconciliation import Reconciliation
from orchestrator.stores.postgres.runs import Runs
from orchestrator.stores.postgres.schedules import ScheduleStates


@reachable
class HistoryStore(
    Runs, Control, Reconciliation, DeadLetters, Housekeeping, Listing, ScheduleStates, Contexts
):
    """The run-history tables, through a per-process SQLAlchemy engine; every public method
    raises ``ServiceUnavailable`` when PostgreSQL cannot be reached."""
