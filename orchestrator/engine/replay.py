"""Replaying a dead letter: a workflow step's retries its run, a plain task's is sent again.

A letter is marked replayed before anything is started, so two replays of it (from the CLI and
the console at once) start one run; if starting fails, the mark is taken back and it can be
replayed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.engine.handle import RunHandle
from orchestrator.engine.services import Services
from orchestrator.errors import OrchestratorError
from orchestrator.records import DeadLetterRecord


@dataclass(frozen=True)
class Replayed:
    """What replaying a letter started: a new run of its run, or its task's message again."""

    letter: DeadLetterRecord
    run_id: str | None = None
    task_id: str | None = None

    def __str__(self) -> str:
        if self.run_id is not None:
            return (
                f"dead letter {self.letter.id}: run {self.letter.run_id} retried as run "
                f"{self.run_id}"
            )
        return f"dead letter {self.letter.id}: task {self.letter.task} sent again as {self.task_id}"


def replay(rt: Services, letter_id: int) -> Replayed:
    """Replay dead letter ``letter_id`` once; ``OrchestratorError`` if it does not exist or was
    replayed already."""
    letter = rt.history.dead_letter(letter_id)
    if letter is None:
        raise OrchestratorError(f"dead letter {letter_id} does not exist; `orchestrator dlq list`")
    if not rt.history.mark_replayed(letter.id):
        raise OrchestratorError(
            f"dead letter {letter.id} was already replayed (`orchestrator dlq list --all`)"
        )
    try:
        return _start(rt, letter)
    except BaseException:
        rt.history.mark_replayed(letter.id, replayed=False)  # it can be replayed again
        raise


def _start(rt: Services, letter: DeadLetterRecord) -> Replayed:
    if letter.run_id is not None:
        return Replayed(letter, run_id=RunHandle(letter.run_id, rt).retry().id)
    rt.load_modules()
    sent = rt.app.send_task(letter.task, args=letter.args or [], kwargs=letter.kwargs or {})
    return Replayed(letter, task_id=sent.id)
