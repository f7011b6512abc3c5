"""The command line being run, as recorded in ``perta_config.json`` and cards, and the recipe step running it.

The CLI sets the command around each command (:func:`invoked_as`); a library call sees the default, a note that
the Python API was used (naming the script). Nothing here reads the command line of a library call.
``perta-hub run`` sets the recipe step around each step (:func:`in_recipe_step`); every output folder finished
within it records the step (:class:`perta_hub.records.RecipeRef`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_COMMAND: ContextVar[str | None] = ContextVar("perta_hub_command", default=None)
_RECIPE: ContextVar[Any] = ContextVar("perta_hub_recipe_step", default=None)


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


def current_recipe_step() -> Any:
    """The :class:`~perta_hub.records.RecipeRef` of the recipe step running, or None outside ``perta-hub run``."""
    return _RECIPE.get()


@contextmanager
def in_recipe_step(ref: Any) -> Iterator[None]:
    """Within the block, :func:`current_recipe_step` is ``ref`` (a :class:`~perta_hub.records.RecipeRef`)."""
    token = _RECIPE.set(ref)
    try:
        yield
    finally:
        _RECIPE.reset(token)
