"""Signals: a named JSON payload sent to a run (``run.signal``, ``orchestrator signal``).

A signal is checked (a name, a JSON payload, a run that exists and has not ended: nothing is
written otherwise), kept in PostgreSQL with who sent it, when and its size, and recorded as a
``signal`` event of the run; then every ``wait_for`` step of the run parked on that name is
woken. A ``wait_for`` step reached later finds it there (it is kept); a running step reads the
payloads so far with ``current_run.signals(name)``.

The order of the two writes closes the race with a step that parks at the same moment: the
step records that it waits, then looks for its signal; the sender records the signal, then looks
for steps that wait. Whichever comes second sees the other (and the reconciler wakes anything
left, ``engine.sleeping.wake_due``).
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from typing import Any

from orchestrator.codec import UnencodableValue, encode
from orchestrator.core.wait_checks import SIGNAL_NAME
from orchestrator.engine.services import Services
from orchestrator.engine.sleeping import wake
from orchestrator.errors import InvalidTransition, RunNotFound, SignalError
from orchestrator.records import SignalRecord

MAX_PAYLOAD = 1024 * 1024
"""The largest payload a signal carries, in bytes of JSON (a signal steers, it is no transfer)."""


def default_sender() -> str:
    """Who sends a signal when no one is named: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def send_signal(
    rt: Services, run_id: str, name: str, payload: Any = None, sender: str | None = None
) -> SignalRecord:
    """Send signal ``name`` with ``payload`` to run ``run_id``; its record.

    Raises ``SignalError`` (no or a bad name, a payload that is not JSON), ``RunNotFound`` or
    ``InvalidTransition`` (the run has ended); nothing is written then."""
    size = _checked(run_id, name, payload)
    sender = sender or default_sender()
    rt.ends_ahead.settle([run_id])  # a run whose wait() returned here is seen ended
    record = rt.history.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    kept = (
        None if record.status.terminal else rt.waits.add_signal(run_id, name, payload, sender, size)
    )
    if kept is None:
        status = rt.history.get_run(run_id)
        raise InvalidTransition(
            f"run {run_id} of workflow {record.workflow!r} is "
            f"{status.status if status else record.status}; a signal goes only to a run that "
            "has not ended"
        )
    rt.history.add_event(run_id, "signal", f"{name} from {sender} ({size} bytes)")
    for parked in rt.waits.waiting_for_signal(run_id, name):
        wake(rt, parked, "signal")
    return kept


def _checked(run_id: str, name: str, payload: Any) -> int:
    """The payload's size in bytes; ``SignalError`` for a bad name or payload."""
    if not isinstance(name, str) or not re.match(SIGNAL_NAME, name):
        raise SignalError(
            f"signal to run {run_id}: {'no name' if not name else f'bad name {name!r}'}; give "
            "the name a wait_for step waits for (letters, digits, _ . : -, at most 200)"
        )
    try:
        body = encode(payload)
        json.loads(body)
    except (UnencodableValue, TypeError, ValueError) as exc:
        raise SignalError(
            f"signal {name!r} to run {run_id}: the payload is not JSON data ({exc}); send "
            "dicts, lists, strings, numbers, booleans or None"
        ) from exc
    size = len(body.encode())
    if size > MAX_PAYLOAD:
        raise SignalError(
            f"signal {name!r} to run {run_id}: the payload is {size} bytes of JSON, more than "
            f"{MAX_PAYLOAD}; keep large data elsewhere and send a reference to it"
        )
    return size
