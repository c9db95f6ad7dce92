"""The delay pump: a thread in each worker's main process that publishes delayed messages
(``DelayStore``) once they are due. Taking a message is atomic, so only one pump publishes it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.ports import DelayStore

log = logging.getLogger("orchestrator.delays")


class DelayPump:
    """A thread that publishes due delayed messages every ``interval`` seconds."""

    def __init__(
        self,
        delays: DelayStore,
        publish: Callable[[dict[str, Any]], None],
        interval: float = 0.5,
    ) -> None:
        self.delays = delays
        self.publish = publish
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orchestrator-delays", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.pump_once()
            except Exception as exc:  # Redis or the broker away: kept for the next pass
                log.warning("delayed messages not pumped: %s", exc)

    def pump_once(self) -> int:
        due = self.delays.take_due(time.time())
        for index, message in enumerate(due):
            try:
                self.publish(message)
            except Exception:
                log.exception("publishing a delayed message failed; kept for the next pass")
                for rest in due[index:]:
                    self.delays.add(rest, time.time())
                raise
        return len(due)
