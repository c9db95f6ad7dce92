"""What a fault test measured, printed and appended to ``artifacts/faults.json`` (conftest.py)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "artifacts" / "faults.json"


@dataclass
class Outcome:
    """The counts of the conftest docstring, and notes."""

    test: str
    submitted: int
    terminal: int
    succeeded: int
    failed: int
    cancelled: int
    lost: int
    stuck: int
    duplicated_effects: int
    re_executions: int
    absorbed: int
    recovery_seconds: float | None
    elapsed_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (
            f"{self.test}: {self.terminal}/{self.submitted} runs terminal "
            f"({self.succeeded} succeeded, {self.failed} failed, {self.cancelled} cancelled), "
            f"lost {self.lost}, stuck {self.stuck}, duplicated effects "
            f"{self.duplicated_effects}, re-executions {self.re_executions} "
            f"({self.absorbed} absorbed by the key), recovery time {recovery}"
        )

    def publish(self) -> None:
        print("\n" + self.line() + (f"  {self.notes}" if self.notes else ""), flush=True)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(ARTIFACT.read_text())
            if not isinstance(entries, list):
                entries = [entries]
        except (OSError, ValueError):
            entries = []
        entries.append(
            {**asdict(self), "line": self.line(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
        ARTIFACT.write_text(json.dumps(entries, indent=1, default=str) + "\n")

    def assert_pass(self, all_succeed: bool = True) -> None:
        assert self.lost == 0, self.line()
        assert self.stuck == 0, self.line()
        assert self.duplicated_effects == 0, self.line()
        overlapping = self.notes.get("overlapping_executions")
        assert not overlapping, f"one step executed twice at the same time: {self.line()}"
        if all_succeed:
            assert self.succeeded == self.submitted, self.line()
        died = self.notes.get("workers_died")
        assert not died, f"a worker exited by itself (restarted as a supervisor would): {died}"
