"""Options as data: a command's options are the fields of one frozen dataclass.

Each field's metadata (:func:`option`) holds the command-line flag, the help text (with unit and default),
the value type (:class:`Range`, :class:`Choice`, :class:`PathSpec` or a Python type), whether the flag
is required and which other option it needs (``needs``). The Python API reads its keyword defaults from
these classes and the click layer (:mod:`perta_hub.cli.bind`) generates its options from them, so each
default is written once. Every object checks its fields when it is made (:meth:`Options.__post_init__`):
a value out of its declared range or choices, or an option given without the one it needs, is refused
with one line naming the flag, the same from the command line and from Python. Nothing here imports click.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from perta_hub.errors import InputError


@dataclass(frozen=True)
class Range:
    """A number in ``[min, max]`` (``min_open``/``max_open``: the bound itself is excluded)."""

    kind: type  # int or float
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.kind is int and not isinstance(value, int)):
            return f"expected {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        if self.kind is float and math.isnan(value):
            return "got NaN"
        low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        high = self.max is not None and (value >= self.max if self.max_open else value > self.max)
        if low or high:
            lo = "" if self.min is None else f"{self.min} {'<' if self.min_open else '<='} "
            hi = "" if self.max is None else f" {'<' if self.max_open else '<='} {self.max}"
            return f"{value} is not in the range {lo}x{hi}"
        return None


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    choices: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a choice, or None."""
        return None if value in self.choices else f"{value!r} is not one of {', '.join(self.choices)}"


@dataclass(frozen=True)
class PathSpec:
    """A file system path (as click.Path: which kinds are accepted, must it exist)."""

    file_okay: bool = True
    dir_okay: bool = True
    exists: bool = False


@dataclass(frozen=True)
class Flag:
    """What the command line knows about one field."""

    decls: tuple[str, ...]  # click declarations: ("-o", "--output") or ("--private/--public",)
    help: str
    type: Any = None  # Range | Choice | PathSpec | int | float | None (a string)
    is_flag: bool = False
    multiple: bool = False
    required: bool = False
    metavar: str | None = None
    show_default: bool = False
    needs: str | None = None  # the field that must be set for this option to apply

    @property
    def name(self) -> str:
        """The flag as messages name it (``--output``, ``--private/--public``)."""
        return max(self.decls, key=len)


def option(*decls: str, help: str, default: Any = None, type: Any = None, is_flag: bool = False,  # noqa: A002
           multiple: bool = False, required: bool = False, metavar: str | None = None,
           show_default: bool | None = None, needs: str | None = None) -> Any:
    """A dataclass field that is also a command-line option (``default`` is the API's default too).

    ``show_default`` (default: when the default is neither None nor False and the option takes a value)
    adds click's ``[default: X]`` to the help; otherwise the help text states the default itself.
    ``needs``: the name of another field that must be set (not None, False or empty) whenever this one is.
    """
    if show_default is None:
        show_default = not is_flag and not required and default is not None and default is not False \
            and default != ()
    flag = Flag(tuple(decls), help, type, is_flag, multiple, required, metavar, show_default, needs)
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"flag": flag})


def flags_of(cls: type) -> list[tuple[dataclasses.Field[Any], Flag]]:
    """``(field, Flag)`` of every field of dataclass ``cls`` made with :func:`option`, in ``--help`` order."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(cls) if "flag" in f.metadata]


OptionsT = TypeVar("OptionsT", bound="Options")


def _is_set(value: Any) -> bool:
    """Whether an option was given a value (None, False, an empty string or tuple are "not given"; 0 is a value)."""
    return value is not None and value is not False and not (isinstance(value, (str, tuple)) and not value)


@dataclass(frozen=True)
class Options:
    """Base of every options class: fields from :func:`option`, checked when an object is made.

    The declared checks run first, in field order: each value against its :class:`Range` or :class:`Choice`
    (``--flag: why``), then each ``needs`` (``--flag only applies with --other``); then :meth:`check`.
    """

    command: ClassVar[str] = ""

    def __post_init__(self) -> None:
        flags = self.flags()
        for f, flag in flags:
            value = getattr(self, f.name)
            if value is None or not isinstance(flag.type, (Range, Choice)):
                continue
            for item in (value if flag.multiple else (value,)):
                problem = flag.type.problem(item)
                if problem:
                    raise InputError(f"{flag.name}: {problem}")
        for f, flag in flags:
            if flag.needs is not None and _is_set(getattr(self, f.name)) and not _is_set(getattr(self, flag.needs)):
                raise InputError(f"{flag.name} only applies with {self.flag(flag.needs).name}")
        self.check()

    def check(self) -> None:
        """Checks across fields that no declaration states (override); raise :class:`InputError` naming the flags."""

    @classmethod
    def resolve(cls: type[OptionsT], options: Options | None, overrides: Mapping[str, Any]) -> OptionsT:
        """``options`` (default: ``cls()``) as a ``cls``, with single fields replaced by ``overrides``.

        The keyword form of the Python API (``finetune(m, d, o, options=opts, epochs=3)``); names that are not
        fields are refused. The result is checked like any other object.
        """
        base = options if options is not None else cls()
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; see {cls.__name__}")
        return cls(**{name: overrides[name] if name in overrides else getattr(base, name) for name in names})

    @classmethod
    def pick(cls: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
        """A checked ``cls`` of the entries of ``values`` that are its fields (a function's ``locals()``: its
        keyword arguments, checked as the command line checks them)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    @classmethod
    def flags(cls) -> list[tuple[dataclasses.Field[Any], Flag]]:
        """``(field, Flag)`` of every command-line field, in ``--help`` order."""
        return flags_of(cls)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name``."""
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def flag(cls, name: str) -> Flag:
        """The :class:`Flag` of field ``name``."""
        return next(flag for f, flag in cls.flags() if f.name == name)
