"""The recipe format as JSON Schema (draft 2020-12), generated from the same options as the command line.

``perta-hub run --schema > perta-recipe.schema.json``; an editor with a YAML language server then completes and
checks a recipe (``# yaml-language-server: $schema=perta-recipe.schema.json`` as its first line). Each step is one
of the kinds, told apart by ``command``; its keys, types, ranges, choices, defaults and help are the options'.
The schema cannot say what the runner checks besides (the keys a step needs, which ``defaults`` may give; a
reference names something that exists; no cycle; the options' cross-field rules); ``perta-hub run --dry-run`` does.
"""

from __future__ import annotations

from typing import Any

from perta_hub.options.base import Choice, PathSpec, Range
from perta_hub.recipes.kinds import Key, StepKind, kinds
from perta_hub.recipes.load import TOP_KEYS

REF = {"type": "string", "pattern": r"^\$\{[A-Za-z0-9][A-Za-z0-9_-]*\}$"}


def item_schema(key: Key) -> dict[str, Any]:
    """The schema of one value of a key."""
    spec = key.flag.type if key.flag is not None else None
    if isinstance(spec, Range):
        out: dict[str, Any] = {"type": "integer" if spec.kind is int else "number"}
        if spec.min is not None:
            out["exclusiveMinimum" if spec.min_open else "minimum"] = spec.min
        if spec.max is not None:
            out["exclusiveMaximum" if spec.max_open else "maximum"] = spec.max
        return out
    if spec is int:
        return {"type": "integer"}
    if spec is float:
        return {"type": "number"}
    if isinstance(spec, Choice):
        return {"enum": list(spec.choices)}
    if isinstance(spec, tuple):
        items = [{"type": "number"} for _ in spec]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if isinstance(spec, PathSpec) or key.is_argument:
        return {"type": "string"}
    return {"type": ["string", "number"]}  # a string option; numbers are written as they are (alpha, shard size)


def key_schema(key: Key) -> dict[str, Any]:
    """The schema of a key: its values, its help and default."""
    if key.boolean:
        out: dict[str, Any] = {"type": "boolean"}
    elif key.many or (key.flag is not None and key.flag.multiple):
        item = item_schema(key)
        out = {"anyOf": [item, {"type": "array", "items": item}]}
    else:
        out = item_schema(key)
    out = nullable(out)  # null: the default (unsets a value of the defaults)
    out["description"] = key.help
    if key.default not in (None, (), False):
        out["default"] = list(key.default) if isinstance(key.default, tuple) else key.default
    return out


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null."""
    if "type" in schema:
        kinds_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds_, "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}


def step_schema(kind: StepKind) -> dict[str, Any]:
    """The schema of a step of one kind."""
    props: dict[str, Any] = {
        "command": {"const": kind.name},
        "label": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                  "description": "The report's name for this step's rows (one per output, or one for all)."},
        "seeded": {"type": "boolean", "description": "Run it once per seed with its seed option set (see seeds)."},
    }
    for key in kind.keys.values():
        props[key.name] = key_schema(key)
    for alias, name in kind.aliases.items():
        props[alias] = {**key_schema(kind.keys[name]), "description": f"Another name of {name}."}
    required = [k.name for k in kind.keys.values() if k.required]
    return {"type": "object", "properties": props, "additionalProperties": False, "required": ["command"],
            "description": f"perta-hub {kind.name}" + (f"; needs {', '.join(required)} (here or in defaults)"
                                                      if required else "")}


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe."""
    table = kinds()
    recipe_keys = ("command", "label", "seeded")
    defaults = {name: {"type": "object", "additionalProperties": False,
                       "properties": {k: v for k, v in step_schema(kind)["properties"].items() if k not in recipe_keys}}
                for name, kind in table.items()}
    every: dict[str, Any] = {}
    for kind in table.values():
        for key in kind.keys.values():
            every.setdefault(key.name, {"description": key.help})
    defaults["all"] = {"type": "object", "properties": every, "additionalProperties": False}
    data_item: dict[str, Any] = {"anyOf": [
        {"type": "string"},
        {"type": "object", "properties": {"from": {"$ref": "#/$defs/data"}, "rows": {"type": ["string", "integer"]}},
         "required": ["from", "rows"], "additionalProperties": False},
        {"type": "object", "properties": {"concat": {"type": "array", "items": {"$ref": "#/$defs/data"},
                                                     "minItems": 1}},
         "required": ["concat"], "additionalProperties": False}]}
    names = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]*$"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/perta-hub/perta-hub/docs/recipes.md",
        "title": "perta-hub recipe",
        "description": "An unlearning experiment for `perta-hub run` (docs/recipes.md).",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"data": data_item, "ref": REF},
        "properties": {
            "description": {"type": "string", "description": TOP_KEYS["description"]},
            "output": {"type": "string", "description": TOP_KEYS["output"]},
            "seeds": {"anyOf": [{"type": "integer", "minimum": 1},
                                {"type": "array", "items": {"type": "integer"}, "minItems": 1, "uniqueItems": True}],
                      "description": TOP_KEYS["seeds"]},
            "torch-threads": {"type": "integer", "minimum": 1, "description": TOP_KEYS["torch-threads"]},
            "models": {"type": "object", "propertyNames": names, "additionalProperties": {"type": "string"},
                       "description": TOP_KEYS["models"]},
            "data": {"type": "object", "propertyNames": names, "additionalProperties": {"$ref": "#/$defs/data"},
                     "description": TOP_KEYS["data"]},
            "defaults": {"type": "object", "properties": defaults, "additionalProperties": False,
                         "description": TOP_KEYS["defaults"]},
            "steps": {"type": "object", "propertyNames": names, "description": TOP_KEYS["steps"],
                      "additionalProperties": {"oneOf": [step_schema(kind) for kind in table.values()]}},
        },
    }
