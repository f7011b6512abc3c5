"""What a command prints, and the process-wide settings the CLI (never a library call) turns on.

By default: one perta-hub bar per phase on a terminal, and off a terminal progress lines instead (no bar
frames in a log file; :mod:`perta_hub.runtime.progress`); the libraries' own bars are off.
``-q/--quiet``: no progress and no status lines; only the final result lines, warnings and errors.
``-v/--verbose``: debug logging on the ``perta_hub`` logger (devices, dtypes, shard plans, files, timings),
transformers and huggingface_hub at info level, and the libraries' own progress bars.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import click

from perta_hub.options.common import OutputOptions

log = logging.getLogger("perta_hub")


@dataclass(frozen=True)
class Console:
    """Where a command's lines go, given ``-q``/``-v``."""

    options: OutputOptions

    @property
    def progress(self) -> bool:
        """Progress reported (a bar on a terminal, lines elsewhere: :mod:`perta_hub.runtime.progress`)."""
        return self.options.progress

    def result(self, line: str) -> None:
        """A final result line (stdout; always printed)."""
        click.echo(line)

    def status(self, line: str) -> None:
        """A status line (stderr; not with ``-q``)."""
        if not self.options.quiet:
            click.echo(line, err=True)

    def warning(self, line: str) -> None:
        """A warning (stderr; always printed)."""
        click.echo(line, err=True)

    def status_echo(self) -> Callable[[str], None] | None:
        """The ``echo`` argument for an API call: None (its own default, stderr) or a no-op with ``-q``."""
        return (lambda _line: None) if self.options.quiet else None


@contextmanager
def _logger_level(logger: logging.Logger, level: int, handler: logging.Handler) -> Iterator[None]:
    """``logger`` at ``level`` into ``handler`` only (not propagated: a root handler another library adds, such
    as a ``basicConfig`` at import, would print every line twice); a command run inside another (a recipe step)
    keeps the outer command's handler."""
    before = logger.level, logger.propagate
    nested = any(getattr(h, "perta_cli", False) for h in logger.handlers)  # a command run by `perta-hub run`
    handler.perta_cli = True  # type: ignore[attr-defined]
    logger.setLevel(level)
    logger.propagate = False
    if not nested:
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(before[0])
        logger.propagate = before[1]
        logger.removeHandler(handler)


@contextmanager
def _hub_verbosity(level: int) -> Iterator[None]:
    """huggingface_hub's log level (also read by transformers and datasets at import)."""
    from huggingface_hub import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity(level)
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)


@contextmanager
def _transformers_verbosity(level: int) -> Iterator[None]:
    """transformers' log level, without importing it (0.5 s) if the command does not."""
    name = logging.getLevelName(level).lower()
    saved = None
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        saved = tf_logging.get_verbosity()
        tf_logging.set_verbosity(level)
    env_before = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = name  # read when transformers configures its logger
    try:
        yield
    finally:
        if env_before is None:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = env_before
        if "transformers" in sys.modules:
            from transformers.utils import logging as tf_logging

            tf_logging.set_verbosity(logging.WARNING if saved is None else saved)


@contextmanager
def configured(options: OutputOptions) -> Iterator[Console]:
    """Apply ``-q``/``-v`` for the length of one command and restore the libraries' settings after.

    The ``perta_hub`` logger goes to stderr: INFO (the progress lines off a terminal) by default, DEBUG with
    ``-v``, warnings only with ``-q``. The libraries' own progress bars are off unless ``-v``.
    """
    from perta_hub.runtime.buffers import skip_exit_collection, tune_allocator
    from perta_hub.runtime.progress import library_bars

    tune_allocator()  # process-wide, once: the CLI owns its process (a library call leaves it alone)
    skip_exit_collection()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if options.verbose
                                           else "%(message)s"))
    level = logging.DEBUG if options.verbose else logging.WARNING if options.quiet else logging.INFO
    with ExitStack() as stack:
        stack.enter_context(_logger_level(log, level, handler))
        stack.enter_context(library_bars(options.verbose))
        if options.verbose:
            stack.enter_context(_hub_verbosity(logging.INFO))
            stack.enter_context(_transformers_verbosity(logging.INFO))
        elif options.quiet:
            stack.enter_context(_hub_verbosity(logging.ERROR))
            stack.enter_context(_transformers_verbosity(logging.ERROR))
        from perta_hub.runtime.invocation import current_command

        log.debug("running %s", current_command())
        yield Console(options)
