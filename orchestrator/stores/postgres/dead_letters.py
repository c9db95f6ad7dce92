"""Dead letters: messages that failed for good, listed, shown and marked replayed (once)."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from orchestrator.records import DeadLetterRecord
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.mapping import dead_letter_record
from orchestrator.stores.postgres.models import DeadLetter


class DeadLetters(Database):
    """The ``dead_letters`` table."""

    def dead_letters(
        self, limit: int = 50, include_replayed: bool = False
    ) -> list[DeadLetterRecord]:
        """The newest first; only those not replayed unless ``include_replayed``."""
        query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        with Session(self.engine) as session:
            return [dead_letter_record(row) for row in session.scalars(query)]

    def dead_letter(self, letter_id: int) -> DeadLetterRecord | None:
        with Session(self.engine) as session:
            row = session.get(DeadLetter, letter_id)
            return None if row is None else dead_letter_record(row)

    def mark_replayed(self, letter_id: int, replayed: bool = True) -> bool:
        """Mark a dead letter replayed (or not, after a replay that failed); False if it
        already was (so one letter is replayed once, however many replay it at once)."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(DeadLetter)
                .where(
                    DeadLetter.id == letter_id,
                    DeadLetter.replayed_at.is_(None)
                    if replayed
                    else DeadLetter.replayed_at.is_not(None),
                )
                .values(replayed_at=text("now()") if replayed else None)
                .returning(DeadLetter.id)
            ).first()
        return changed is not None
