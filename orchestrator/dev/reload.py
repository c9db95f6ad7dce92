"""``orchestrator dev --reload``: which of the project's files changed, from ``watchfiles``.

A thread watches the project directory (recursively) and the workflows path for changes to
Python and YAML files, leaving out the data directory, virtualenvs, caches and VCS folders
(``watchfiles.DefaultFilter``); changes that arrive together (an editor's save, a ``git
checkout``) are reported as one set. ``orchestrator.dev.server`` restarts the worker and beat
on each set, so the code that runs is the code on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import watchfiles

log = logging.getLogger("orchestrator.dev")
SUFFIXES = (".py", ".yaml", ".yml")
DEBOUNCE_MS = 400


class SourceFilter(watchfiles.DefaultFilter):
    """Python and YAML files outside the ignored directories and paths."""

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return path.endswith(SUFFIXES) and super().__call__(change, path)


class Watcher:
    """Watches ``roots`` in a thread; :meth:`changed` returns what changed since it was last
    asked."""

    def __init__(self, roots: list[Path], ignore: list[Path]) -> None:
        self.roots = _outermost([r.resolve() for r in roots if r.exists()])
        self._filter = SourceFilter(ignore_paths=[p.resolve() for p in ignore])
        self._changes: queue.Queue[set[Path]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dev-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def changed(self) -> set[Path]:
        """The files changed since the last call (empty if none)."""
        found: set[Path] = set()
        while True:
            try:
                found |= self._changes.get_nowait()
            except queue.Empty:
                return found

    def _run(self) -> None:
        try:
            for changes in watchfiles.watch(
                *self.roots,
                watch_filter=self._filter,
                debounce=DEBOUNCE_MS,
                stop_event=self._stop,
                raise_interrupt=False,
            ):
                self._changes.put({Path(path) for _, path in changes})
        except Exception:  # the watcher failed (no inotify, say): dev keeps running
            log.exception("watching the project's files stopped; --reload no longer reloads")


def _outermost(paths: list[Path]) -> list[Path]:
    """``paths`` without those inside another of them (watched already)."""
    return [
        p for p in dict.fromkeys(paths) if not any(p != o and p.is_relative_to(o) for o in paths)
    ]
