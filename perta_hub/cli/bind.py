"""click options generated from an options dataclass (:mod:`perta_hub.options`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from perta_hub.options.base import Choice, Flag, PathSpec, Range, flags_of

log = logging.getLogger("perta_hub.cli")


def click_type(spec: Any) -> Any:
    """The click parameter type of a :class:`Flag` type."""
    if isinstance(spec, Range):
        kind = click.IntRange if spec.kind is int else click.FloatRange
        return kind(min=spec.min, max=spec.max, min_open=spec.min_open, max_open=spec.max_open)
    if isinstance(spec, Choice):
        return click.Choice(list(spec.choices))
    if isinstance(spec, PathSpec):
        return click.Path(file_okay=spec.file_okay, dir_okay=spec.dir_okay, exists=spec.exists)
    return spec


def option_kwargs(flag: Flag, default: Any) -> dict[str, Any]:
    """The keywords of ``click.option`` / ``click.Option`` for one field."""
    kwargs: dict[str, Any] = {"help": flag.help}
    if flag.is_flag:
        kwargs["is_flag"] = True
    if flag.type is not None:
        kwargs["type"] = click_type(flag.type)
    if flag.multiple:
        kwargs["multiple"] = True
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    if flag.required:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    if flag.show_default:
        kwargs["show_default"] = True
    return kwargs


def click_option(name: str, flag: Flag, default: Any) -> Callable[[Any], Any]:
    """The ``click.option`` decorator of one field (parameter name ``name``)."""
    return click.option(*flag.decls, name, **option_kwargs(flag, default))


def bind(cls: type, dest: str, *, given: str | None = None) -> Callable[[Any], Any]:
    """Add the options of dataclass ``cls`` (its :func:`~perta_hub.options.base.option` fields) to a click
    command; the command receives them as one ``cls`` object in the keyword ``dest`` (and, with ``given``,
    the flags set on the command line as a list in that keyword). The callback lists the options classes bound
    to it, outermost first, in ``options_classes`` (what a recipe step of the command may set:
    :mod:`perta_hub.recipes.kinds`)."""
    fields = flags_of(cls)

    def decorate(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f, _ in fields}
            if given is not None:
                ctx = click.get_current_context()
                kwargs[given] = [flag.name for f, flag in fields
                                 if ctx.get_parameter_source(f.name) not in (ParameterSource.DEFAULT, None)]
            kwargs[dest] = cls(**values)
            log.debug("%r", kwargs[dest])
            return func(*args, **kwargs)

        wrapper.options_classes = (cls, *getattr(func, "options_classes", ()))  # type: ignore[attr-defined]
        for f, flag in reversed(fields):
            wrapper = click_option(f.name, flag, f.default)(wrapper)
        return wrapper

    return decorate
