"""What a request asks for, checked: a runs listing's filters, its page cursor and size.

Anything malformed raises :class:`BadInput` with the reason, which the console answers with
400 (a page or JSON): a filter is never silently dropped or half applied.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.records import RunQuery
from orchestrator.status import RunStatus

DEFAULT_LIMIT, MAX_LIMIT, MAX_SEARCH = 50, 500, 300


class BadInput(ValueError):
    """A request the console cannot serve as asked (answered with 400 and this reason)."""


@dataclass(frozen=True)
class RunFilters:
    """A runs listing's query parameters as the request gives them (``Depends(RunFilters)``
    reads them, for the API's listing and the page's alike); empty values mean no filter, as an
    HTML form sends them."""

    workflow: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    q: str | None = None
    after: str | None = None
    limit: str | None = None

    def query(self) -> RunQuery:
        """The listing asked for, checked."""
        search = (self.q or "").strip() or None
        if search is not None and len(search) > MAX_SEARCH:
            raise BadInput(f"q is {len(search)} characters long; at most {MAX_SEARCH}")
        return RunQuery(
            workflow=(self.workflow or "").strip() or None,
            status=_status(self.status),
            since=parse_time("since", self.since),
            until=parse_time("until", self.until),
            search=search,
            after=decode_cursor(self.after) if self.after else None,
        )

    def page_size(self) -> int:
        return limit(self.limit)

    def asked(self) -> dict[str, str | None]:
        """The filters a form shows (not the page's cursor or size)."""
        return {
            "workflow": self.workflow,
            "status": self.status,
            "since": self.since,
            "until": self.until,
            "q": self.q,
        }


def _status(value: str | None) -> RunStatus | None:
    if not value:
        return None
    try:
        return RunStatus(value)
    except ValueError:
        known = ", ".join(RunStatus)
        raise BadInput(f"status {value!r} is not a run status; one of {known}") from None


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 date or time (``2026-01-02``, ``2026-01-02T03:04``, with an offset or
    ``Z``); UTC when it names none."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"{name} {value!r} is not an ISO 8601 time such as 2026-01-02T03:04:05Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def limit(value: str | int | None) -> int:
    """A page size from 1 to ``MAX_LIMIT`` (``DEFAULT_LIMIT`` when not given)."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"limit {value!r} is not a whole number") from None
    if not 1 <= number <= MAX_LIMIT:
        raise BadInput(f"limit {number} is out of range; from 1 to {MAX_LIMIT}")
    return number


def encode_cursor(created_at: datetime, run_id: str) -> str:
    """Where the next page starts: after the run created at ``created_at`` with ``run_id``."""
    raw = f"{created_at.isoformat()}|{run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, run_id = raw.split("|")
        return datetime.fromisoformat(at), str(uuid.UUID(run_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadInput(
            f"after {cursor!r} is not a page cursor; use the `next` value of a listing"
        ) from None
