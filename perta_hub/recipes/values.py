"""A recipe value checked against its key: type, range, choices, references; one line naming the YAML path.

A reference is a whole string ``${name}``: a model or data entry, a step (its output: a folder, a file, or the
list of folders of a sweep) or ``${tofu}`` (the TOFU copy bundled with perta-hub). It stays a :class:`Ref` until
the step runs (:mod:`perta_hub.recipes.plan` replaces it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import RecipeError
from perta_hub.options.base import Choice, PathSpec, Range
from perta_hub.recipes.kinds import Key

#: a whole-value reference
REF = re.compile(r"^\$\{([^{}]*)\}$")
#: a name of a model, data entry or step
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: names every recipe knows
BUILTINS = ("tofu",)


@dataclass(frozen=True)
class Ref:
    """``${name}``: the value of a model or data entry, or the output of a step."""

    name: str

    def __str__(self) -> str:
        return "${" + self.name + "}"


def as_ref(value: Any, path: str) -> Ref | None:
    """The reference a value is, None for any other value; a malformed one (``${}``, ``x${a}``) is refused."""
    if not isinstance(value, str) or "${" not in value:
        return None
    match = REF.match(value)
    if match is None or not NAME.match(match.group(1)):
        raise RecipeError(f"{path}: {value!r} is not a reference; a reference is a whole value ${{name}} naming a "
                          "model, a data entry or a step")
    return Ref(match.group(1))


def shown(value: Any) -> str:
    """A value as a message quotes it."""
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__} {str(value)[:60]}"
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def range_text(spec: Range) -> str:
    """``> 0``, ``>= 1``, ``> 0 and <= 1``."""
    parts = []
    if spec.min is not None:
        parts.append(f"{'>' if spec.min_open else '>='} {spec.min:g}")
    if spec.max is not None:
        parts.append(f"{'<' if spec.max_open else '<='} {spec.max:g}")
    return " and ".join(parts)


def check_number(path: str, value: Any, kind: type, spec: Range | None = None) -> float | int:
    """An int or float (of ``kind``) within ``spec``."""
    wanted = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise RecipeError(f"{path}: must be {wanted} (got {shown(value)})")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{path}: must be a finite number (got {value})")
    if spec is not None and spec.problem(value) is not None:
        raise RecipeError(f"{path}: must be {range_text(spec)} (got {shown(value)})")
    return value


def check_string(path: str, value: Any, base_dir: Path | None = None) -> str | int | float | Ref:
    """A string, a reference, a number (a string option such as ``--alpha`` or ``--max-shard-size`` takes one;
    the command line gets its text), or, with ``base_dir``, a path resolved against it."""
    ref = as_ref(value, path)
    if ref is not None:
        return ref
    if isinstance(value, str):
        return str((base_dir / Path(value).expanduser()).resolve()) if base_dir is not None else value
    if base_dir is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise RecipeError(f"{path}: must be a string (got {shown(value)})")


def check_item(path: str, key: Key, value: Any, base_dir: Path) -> Any:
    """One value of an option (one item of a repeatable one)."""
    spec = key.flag.type if key.flag is not None else None
    if isinstance(spec, Range):
        return check_number(path, value, spec.kind, spec)
    if spec in (int, float):
        return check_number(path, value, spec)
    if isinstance(spec, Choice):
        if value not in spec.choices or isinstance(value, bool):
            raise RecipeError(f"{path}: must be one of {', '.join(spec.choices)} (got {shown(value)})")
        return value
    if isinstance(spec, tuple):  # (float, float): a list of that many numbers
        if not isinstance(value, list) or len(value) != len(spec):
            raise RecipeError(f"{path}: must be a list of {len(spec)} numbers (got {shown(value)})")
        return tuple(check_number(f"{path}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, spec, strict=True)))
    return check_string(path, value, base_dir if isinstance(spec, PathSpec) else None)


def check_value(path: str, key: Key, value: Any, base_dir: Path) -> Any:
    """The checked value of ``key`` (None: unset, the default). Repeatable options and many-valued arguments give a
    tuple (a single value is a list of one); references stay :class:`Ref`."""
    if value is None or value == []:
        if key.required:
            raise RecipeError(f"{path}: is required ({key.help})")
        return None
    if key.is_argument:
        if key.many:
            items = value if isinstance(value, list) else [value]
            return tuple(check_string(f"{path}[{i}]", v) for i, v in enumerate(items))
        return check_string(path, value)
    flag = key.flag
    assert flag is not None
    if key.boolean:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: must be true or false (got {shown(value)})")
        return value
    if flag.multiple:
        items = value if isinstance(value, list) else [value]
        return tuple(check_item(f"{path}[{i}]", key, v, base_dir) for i, v in enumerate(items))
    return check_item(path, key, value, base_dir)


def refs_in(value: Any) -> list[Ref]:
    """The references in a checked value."""
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (tuple, list)):
        return [r for v in value for r in refs_in(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs_in(v)]
    return []


def placeholder(value: Any) -> Any:
    """A checked value with each reference as its text (for the options classes' own checks, which need only
    whether a value is given)."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, tuple):
        return tuple(placeholder(v) for v in value)
    return value


def plain(value: Any) -> Any:
    """A checked value as YAML/JSON writes it (references as ``${name}``, tuples as lists)."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
