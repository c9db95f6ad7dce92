"""The event loop ``async def`` steps run on: one per process, on a daemon thread of its own.

Celery calls a task's ``run`` synchronously (it has no ``async def`` tasks, celery#3884), so an
``async def`` task's ``run`` is :func:`blocking`: it hands the coroutine to this process's loop
and waits for it. The caller's thread is the one Celery's time limits act on: its soft limit
(``SoftTimeLimitExceeded``, raised in the pool process's main thread) cancels the coroutine and
waits for it to end, its hard limit kills the process as for any task. The loop is made on first
use in each process, never inherited across a fork (the parent's loop thread does not exist in a
child), and it runs the coroutines of every thread of the process side by side (a worker with
``-P threads``). The coroutine runs in a copy of the caller's ``contextvars``, so
``current_run`` is the step's inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class EventLoopThread:
    """An asyncio loop on a daemon thread, made on first use; forgotten in a forked child."""

    def __init__(self, name: str = "orchestrator-event-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception).

        If the wait is interrupted (a soft time limit), the coroutine is cancelled and waited
        for: as a plain function may catch ``SoftTimeLimitExceeded``, it may handle its
        ``CancelledError`` and return or raise something else; if it ends cancelled, the
        interruption is raised.
        """
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "an async task was called from a coroutine on the event loop it needs (it would "
                "wait for itself): await the task's coroutine function instead "
                "(inspect.unwrap(the_task.run))"
            )
        started: list[asyncio.Task[T]] = []
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # the step's contextvars (current_run) go with the coroutine to the loop's thread
        loop.call_soon_threadsafe(_start, loop, coro, contextvars.copy_context(), started, future)
        try:
            return future.result()
        except BaseException as interrupted:
            if future.done():
                raise
            loop.call_soon_threadsafe(_cancel, started)  # after _start: the loop keeps order
            try:
                return future.result()
            except concurrent.futures.CancelledError:
                raise interrupted from None

    def loop(self) -> asyncio.AbstractEventLoop:
        """This process's loop, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=_serve, args=(loop,), name=self.name, daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def forget(self) -> None:
        """In a forked child: the parent's loop has no thread here; the next use makes one."""
        self._loop = None
        self._thread = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the loop, wait for its thread and close it (what it still runs is dropped)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    # signals go to the thread that waits for the coroutine (Celery's soft time limit must
    # interrupt its wait), never to this one or the threads it starts (run_in_executor)
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _start(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context,
    started: list[asyncio.Task[T]],
    future: concurrent.futures.Future[T],
) -> None:
    task = loop.create_task(coro, context=context)
    started.append(task)
    task.add_done_callback(functools.partial(_settle, future))


def _settle(future: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    """Hand the task's outcome to the waiting thread."""
    if task.cancelled():
        future.cancel()
    elif (exc := task.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(task.result())


def _cancel(started: list[asyncio.Task[Any]]) -> None:
    for task in started:
        task.cancel()


_process_loop = EventLoopThread()
os.register_at_fork(after_in_child=_process_loop.forget)


def blocking(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """``func`` as a plain function: it runs the coroutine on this process's loop and waits.

    The signature and annotations are ``func``'s (``inspect.signature`` follows ``__wrapped__``).
    """

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return _process_loop.run(func(*args, **kwargs))

    return run
