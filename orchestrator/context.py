"""``current_run``: what the running step can know about its run."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol


class ContextValues(Protocol):
    """A run's shared context as a step sees it (``current_run.context``): JSON values by key,
    shared by every step of the run (``orchestrator.engine.run_context``)."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...


@dataclass
class RunContext:
    """The run, step and attempt a step is executing for."""

    run_id: str
    step_id: str
    attempt: int
    workflow: str
    task_id: str
    _inputs: Callable[[], dict[str, Any]] = field(repr=False)
    item: Any = None
    """The item this call of a ``for_each`` step maps (None outside one)."""
    item_index: int | None = None
    """The item's position in the list it comes from (None outside a ``for_each``)."""
    _context: ContextValues | None = field(default=None, repr=False)
    _signals: Callable[[str], list[Any]] | None = field(default=None, repr=False)

    def signals(self, name: str) -> list[Any]:
        """The payloads of the signals named ``name`` sent to this run so far, oldest first
        (``run.signal(name, payload)``): a running step reads them again to be steered."""
        if self._signals is None:
            return []
        return self._signals(name)

    @property
    def context(self) -> ContextValues:
        """The run's shared context: ``get(key, default)`` and ``set(key, value)`` (a JSON
        value; each set is atomic per key, and kept in the run's history)."""
        if self._context is None:
            raise RuntimeError("this step's run has no shared context")
        return self._context

    @property
    def inputs(self) -> dict[str, Any]:
        """The run's inputs (fetched on first use)."""
        return self._inputs()

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_id:attempt``, for effects that must happen once per attempt."""
        return f"{self.run_id}:{self.step_id}:{self.attempt}"


_current: ContextVar[RunContext | None] = ContextVar("orchestrator_current_run", default=None)


class _CurrentRun:
    """Proxy to the context of the step running in this thread; raises outside a step."""

    def _get(self) -> RunContext:
        ctx = _current.get()
        if ctx is None:
            raise RuntimeError(
                "current_run is only available inside a step that runs as part of a workflow run"
            )
        return ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __bool__(self) -> bool:
        return _current.get() is not None

    def __repr__(self) -> str:
        return f"<current_run {_current.get()!r}>"


current_run = _CurrentRun()


def set_current(ctx: RunContext | None) -> object:
    """Bind ``ctx`` as the current run; returns a token for :func:`reset_current`."""
    return _current.set(ctx)


def reset_current(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
