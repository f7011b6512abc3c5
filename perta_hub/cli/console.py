"""What a command prints, and the process-wide settings the CLI (never a library call) turns on.

``-q/--quiet``: no progress bars and no status lines; only the final result lines, warnings and errors.
``-v/--verbose``: debug logging on the ``perta_hub`` logger, transformers and huggingface_hub at info level.
Progress bars are drawn only on a terminal (tqdm's ``disable=None``), so a log file holds no bar frames.
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
        """Progress bars allowed (the library still draws them only on a terminal)."""
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
def _logger_level(logger: logging.Logger, level: int, handler: logging.Handler | None) -> Iterator[None]:
    before = logger.level
    logger.setLevel(level)
    if handler is not None:
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(before)
        if handler is not None:
            logger.removeHandler(handler)


@contextmanager
def _hub_verbosity(level: int, bars: bool) -> Iterator[None]:
    """huggingface_hub's log level and progress bars (also read by transformers and datasets at import)."""
    import huggingface_hub.utils as hub_utils
    from huggingface_hub import logging as hub_logging

    verbosity, disabled = hub_logging.get_verbosity(), hub_utils.are_progress_bars_disabled()
    hub_logging.set_verbosity(level)
    if not bars:
        hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
        if not bars and not disabled:
            hub_utils.enable_progress_bars()


@contextmanager
def _transformers_verbosity(level: int, bars: bool) -> Iterator[None]:
    """transformers' log level and progress bars, without importing it (0.5 s) if the command does not."""
    name = logging.getLevelName(level).lower()
    imported = "transformers" in sys.modules
    saved = None
    if imported:
        from transformers.utils import logging as tf_logging

        saved = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
        tf_logging.set_verbosity(level)
        if not bars:
            tf_logging.disable_progress_bar()
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

            verbosity, enabled = saved or (logging.WARNING, True)
            tf_logging.set_verbosity(verbosity)
            if enabled:
                tf_logging.enable_progress_bar()


@contextmanager
def configured(options: OutputOptions) -> Iterator[Console]:
    """Apply ``-q``/``-v`` for the length of one command and restore the libraries' settings after."""
    from perta_hub.runtime.buffers import tune_allocator

    tune_allocator()  # process-wide, once: the CLI owns its process (a library call leaves it alone)
    with ExitStack() as stack:
        if options.verbose:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            stack.enter_context(_logger_level(log, logging.DEBUG, handler))
            stack.enter_context(_hub_verbosity(logging.INFO, bars=True))
            stack.enter_context(_transformers_verbosity(logging.INFO, bars=True))
        elif options.quiet:
            stack.enter_context(_logger_level(log, logging.WARNING, None))
            stack.enter_context(_hub_verbosity(logging.ERROR, bars=False))
            stack.enter_context(_transformers_verbosity(logging.ERROR, bars=False))
        from perta_hub.runtime.invocation import current_command

        log.debug("running %s", current_command())
        yield Console(options)
