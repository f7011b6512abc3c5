"""The command line being run, as recorded in ``perta_config.json`` and cards.

The CLI sets it around each command (:func:`invoked_as`); a library call sees the default, a note that the
Python API was used (naming the script). Nothing here reads the command line of a library call.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

_COMMAND: ContextVar[str | None] = ContextVar("perta_hub_command", default=None)


def command_line(args: Sequence[str]) -> str:
    """``perta-hub ARGS``, each argument shell-quoted."""
    return "perta-hub " + " ".join(shlex.quote(a) for a in args)


def current_command() -> str:
    """The command line that is running (``perta-hub ...``), or a note that the Python API was used."""
    command = _COMMAND.get()
    if command is not None:
        return command
    return "perta_hub Python API (" + " ".join(shlex.quote(a) for a in sys.argv[:1]) + ")"


@contextmanager
def invoked_as(args: Sequence[str]) -> Iterator[str]:
    """Within the block, :func:`current_command` is ``perta-hub ARGS``."""
    token = _COMMAND.set(command_line(args))
    try:
        yield _COMMAND.get() or ""
    finally:
        _COMMAND.reset(token)
