"""Progress of perta-hub's phases, defined once: a bar on a terminal, log lines elsewhere.

Every phase that counts work (examples scored, optimizer steps, bytes written) is one :class:`Progress`:

- stderr is a terminal: one tqdm bar, and no lines (with ``-v`` a DEBUG line with the phase's time at its end);
- anything else (a log file, a pipe, a notebook): no bar frames. The ``perta_hub.progress`` logger gets one
  INFO line when the phase starts, at most one every :func:`interval` seconds with done/total and an estimate
  of the time left (``forget Q/A: 120/400 ex (30%), ~2m10s left``), and one when it ends.

Phases that cannot count (a model load, an upload) are :func:`phase`: a start and an end line off a terminal.
The CLI sends the ``perta_hub`` logger to stderr and passes ``progress=False`` with ``-q``; a library call
leaves logging to the application (``logging.basicConfig(level="INFO")`` shows the lines).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: seconds between two progress lines of one phase off a terminal
INTERVAL_S = 30.0
#: environment variable that replaces :data:`INTERVAL_S` (seconds, e.g. ``5`` for a chatty CI log)
INTERVAL_ENV = "PERTA_HUB_PROGRESS_INTERVAL"

log = logging.getLogger("perta_hub.progress")


def interval() -> float:
    """Seconds between two progress lines: ``$PERTA_HUB_PROGRESS_INTERVAL`` if set, else :data:`INTERVAL_S`."""
    value = os.environ.get(INTERVAL_ENV)
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return INTERVAL_S


def on_terminal() -> bool:
    """Whether bars are drawn: stderr is a terminal, or this runs in a Jupyter kernel (tqdm's widget)."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stream
        pass
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def duration(seconds: float) -> str:
    """``45s``, ``2m10s``, ``1h05m``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """One counted phase: a tqdm bar on a terminal, else rate-limited log lines (see the module).

    Use as a context manager (the end line, or ``stopped at`` after an exception) or call :meth:`close`.
    ``update`` may be called from another thread.
    """

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "it", unit_scale: bool = False,
                 enabled: bool = True, leave: bool = True) -> None:
        self.desc, self.total, self.unit, self.unit_scale = desc, total, unit, unit_scale
        self.n = 0
        self.postfix = ""
        self.enabled = enabled
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._closed = not enabled
        self._bar: Any = None
        if enabled and on_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                             dynamic_ncols=True, file=sys.stderr)
        elif enabled:
            size = f" ({self._amount(total)})" if total is not None else ""
            log.info("%s: started%s", desc, size)

    @property
    def drawn(self) -> bool:
        """Whether a bar is on the terminal (else the phase reports in log lines)."""
        return self._bar is not None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.close(failed=kind is not None)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        if self._closed:
            return
        with self._lock:
            self.n += n
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if now - self._last < interval():
                return
            self._last = now
        log.info("%s", self._line(now))

    def set_postfix(self, text: str) -> None:
        """Extra state shown after the counts (``loss 2.31``): in the bar, or at the end of the next line."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self, failed: bool = False) -> None:
        """End the phase: close the bar, or log the end line (``stopped at`` when ``failed``)."""
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self._start
        done = self._count()
        line = (f"{self.desc}: stopped at {done} after {duration(elapsed)}" if failed
                else f"{self.desc}: done, {done} in {duration(elapsed)}{self._rate(elapsed)}")
        if self._bar is not None:
            self._bar.close()
            log.debug("%s", line)  # the bar showed the rest; -v keeps the time
        else:
            log.info("%s", line)

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        extra = f" ({self.postfix})" if self.postfix else ""
        if not self.total:
            return f"{self.desc}: {self._count()}, {duration(elapsed)} elapsed{extra}"
        left = f"~{duration(elapsed * (self.total - self.n) / self.n)} left" if self.n else \
            f"{duration(elapsed)} elapsed"
        return f"{self.desc}: {self._count()} ({100 * self.n / self.total:.0f}%), {left}{extra}"

    def _count(self) -> str:
        done = self._amount(self.n, unit=False)
        return f"{done}/{self._amount(self.total)}" if self.total is not None else self._amount(self.n)

    def _amount(self, value: float | None, unit: bool = True) -> str:
        if self.unit_scale:
            from tqdm import tqdm

            return tqdm.format_sizeof(value or 0, self.unit if unit else "")
        return f"{value:,}{' ' + self.unit if unit else ''}"

    def _rate(self, elapsed: float) -> str:
        if elapsed <= 0 or not self.n:
            return ""
        return f" ({self._amount(self.n / elapsed) if self.unit_scale else f'{self.n / elapsed:,.1f} {self.unit}'}/s)"


@contextmanager
def phase(desc: str, *, enabled: bool = True, level: int = logging.INFO) -> Iterator[None]:
    """A phase that cannot count its work (a model load, an upload): a start and an end line with its time.

    Off a terminal the lines are logged at ``level``; on one (where other phases draw bars) at DEBUG (``-v``).
    Only the main process of a distributed launch (``RANK`` unset or 0) reports.
    """
    if not enabled or os.environ.get("RANK", "0") != "0":
        yield
        return
    level = logging.DEBUG if on_terminal() else level
    start = time.monotonic()
    log.log(level, "%s: started", desc)
    try:
        yield
    except BaseException:
        log.log(level, "%s: stopped after %s", desc, duration(time.monotonic() - start))
        raise
    log.log(level, "%s: done in %s", desc, duration(time.monotonic() - start))


# -- the libraries' own bars --------------------------------------------------------------------------------

#: the CLI's choice for the libraries' bars during one command (None: a library call leaves them alone)
_library_bars: bool | None = None


@contextmanager
def library_bars(enabled: bool) -> Iterator[None]:
    """huggingface_hub's, transformers' and datasets' own progress bars on or off for one command.

    The CLI turns them off unless ``-v`` (perta-hub draws one bar per phase). transformers reads the Hub's
    setting when it is imported, datasets through :func:`sync_datasets_bars`; both are restored after.
    """
    global _library_bars
    import huggingface_hub.utils as hub_utils

    before = _library_bars, hub_utils.are_progress_bars_disabled(), _transformers_bars(), _datasets_bars()
    _library_bars = enabled
    _set_hub_bars(enabled)
    _set_transformers_bars(enabled)
    sync_datasets_bars()
    try:
        yield
    finally:
        _library_bars, hub_disabled, transformers, datasets = before
        _set_hub_bars(not hub_disabled)
        _set_transformers_bars(not hub_disabled if transformers is None else transformers)
        if "datasets" in sys.modules:
            _set_datasets_bars(_datasets_default() if datasets is None else datasets)


def sync_datasets_bars() -> None:
    """Apply the command's choice (:func:`library_bars`) to datasets; call right after importing datasets."""
    if _library_bars is not None and "datasets" in sys.modules:
        _set_datasets_bars(_library_bars)


def _set_hub_bars(enabled: bool) -> None:
    import huggingface_hub.utils as hub_utils

    forced = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")  # the user's documented setting wins (no warning)
    if enabled == hub_utils.are_progress_bars_disabled() and forced is None:
        (hub_utils.enable_progress_bars if enabled else hub_utils.disable_progress_bars)()


def _transformers_bars() -> bool | None:
    if "transformers" not in sys.modules:
        return None  # not imported (0.5 s): it reads the Hub's setting when it is
    from transformers.utils import logging as tf_logging

    return bool(tf_logging.is_progress_bar_enabled())


def _set_transformers_bars(enabled: bool) -> None:
    if _transformers_bars() not in (None, enabled):
        from transformers.utils import logging as tf_logging

        (tf_logging.enable_progress_bar if enabled else tf_logging.disable_progress_bar)()


def _datasets_bars() -> bool | None:
    if "datasets" not in sys.modules:
        return None
    import datasets

    return bool(datasets.is_progress_bar_enabled())


def _datasets_default() -> bool:
    import datasets.config

    return datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not True


def _set_datasets_bars(enabled: bool) -> None:
    if _datasets_bars() not in (None, enabled):
        import datasets
        import datasets.config

        if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None:
            return  # the user's HF_DATASETS_DISABLE_PROGRESS_BARS wins (no warning)

        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
