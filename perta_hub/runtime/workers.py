"""Background threads of one run that fail together (the shard writer's pipeline, a Hub source's downloads, a Hub
sink's uploads).

The first error any of them raises is kept and stops the others: they see :meth:`Workers.check` raise (or
their queues give up, :class:`Stopping`), and whoever waits on them gets the error itself; the block that
runs them joins them and raises it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Stopping(Exception):
    """Raised in a worker (or a thread waiting on one) when the run is stopping without an error of its own."""


class Workers:
    """Threads that fail together; use as a context manager around the work they overlap with.

    Attributes:
        cond: the condition the workers and their waiters share (notified when the run stops).
        stop: set when the run stops (an error, or the block ended with one).
        error: the first error a worker raised.
    """

    def __init__(self, cond: threading.Condition | None = None) -> None:
        self.cond = cond or threading.Condition()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []

    def guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` for a thread: its error is kept and stops the others; :class:`Stopping` ends it quietly."""
        def run() -> None:
            try:
                fn()
            except Stopping:
                pass
            except BaseException as err:  # handed to the threads that wait on the workers
                self.fail(err)
        return run

    def fail(self, err: BaseException) -> None:
        """Keep ``err`` (the first one wins) and stop every worker."""
        with self.cond:
            self.error = self.error or err
            self.stop.set()
            self.cond.notify_all()

    def check(self) -> None:
        """Raise the workers' error (or :class:`Stopping`) once the run is stopping."""
        if self.error is not None or self.stop.is_set():
            raise self.error or Stopping()

    def start(self, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` in a daemon thread of its own (guarded, see :meth:`guard`)."""
        thread = threading.Thread(target=self.guard(fn), name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> None:
        """Stop the workers if the block failed; join them; raise their error if the block did not fail."""
        if kind is not None:
            with self.cond:
                self.stop.set()
                self.cond.notify_all()
        self.join()
        if kind is None and self.error is not None:
            raise self.error
