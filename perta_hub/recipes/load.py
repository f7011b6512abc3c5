"""Reading a recipe: YAML, ``--set`` changes, every key and value checked (one line naming its YAML path).

A recipe is a YAML mapping with the keys of :data:`TOP_KEYS`. Each step is a mapping with ``command`` (a
``perta-hub`` command or a local kind, :mod:`perta_hub.recipes.kinds`), the keys of that command (its arguments
and options, with the command line's dashes: ``retain-fraction``), ``label`` (the report's name for its rows) and
``seeded`` (re-seed it under ``seeds``). ``defaults`` gives
values to every step of a command (``defaults.evaluate.max-examples``) or to every step that has the key
(``defaults.all.device``); a step's own value wins. Paths are relative to the recipe's folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, RecipeError
from perta_hub.recipes import data as data_mod
from perta_hub.recipes.bundled import bundled_recipes
from perta_hub.recipes.kinds import EXCLUSIVE, RECIPE_KEYS, StepKind, fields_of, kinds, owned_name
from perta_hub.recipes.values import BUILTINS, NAME, Ref, check_number, check_value, placeholder, plain, refs_in, shown

#: the top-level keys of a recipe and what each holds
TOP_KEYS = {
    "description": "What the experiment is (free text; the report shows it).",
    "output": "Default output folder of `perta-hub run` (relative to the recipe; -o wins).",
    "seeds": "Seeds of the unlearning stage: K (seeds 0..K-1) or a list; each seed runs into OUT/seed-<s>/ "
             "(--seeds K wins). Not given: one run with the steps' own seeds.",
    "torch-threads": "torch's CPU threads during the run (1 is fastest for models of a few million parameters).",
    "models": "Name -> Hub id (org/name[@revision]) or model folder; steps refer to it as ${name}.",
    "data": "Name -> data spec (tofu:CONFIG, org/name:config, a .json/.jsonl/.parquet file) or derived data "
            "({from: SPEC, rows: START:STOP}, {concat: [...]}); steps refer to it as ${name}.",
    "defaults": "Values for every step of a command (defaults.COMMAND.KEY) or every step that has the key "
                "(defaults.all.KEY); a step's own value wins.",
    "steps": "Name -> step: `command` and that command's keys; ${name} is the output of step `name`.",
}
#: names the runner keeps for itself (OUT/data holds the derived data, OUT/seed-<s> each seed's steps)
RESERVED = re.compile(r"^(data|seed-.*)$")


@dataclass
class Step:
    """One step as written: its kind, checked values by field (references as :class:`Ref`), recipe keys."""

    name: str
    kind: StepKind
    values: dict[str, Any]
    paths: dict[str, str]  # field -> where it was set (for messages)
    label: str | tuple[str, ...] | None = None
    seeded: bool | None = None

    @property
    def path(self) -> str:
        return f"steps.{self.name}"

    def refs(self) -> list[tuple[str, Ref]]:
        """Every reference with the YAML path of its key."""
        return [(self.paths[f], r) for f, v in self.values.items() for r in refs_in(v)]

    def reseeded(self) -> bool:
        """Whether ``seeds`` sets this step's own ``seed``: ``seeded`` when given, else a task vector made by
        fine-tuning, an unlearn baseline, or a weight map with a retain subsample (:mod:`perta_hub.recipes.plan`)."""
        if self.seeded is not None:
            return self.seeded
        kind, values = self.kind.name, self.values
        return (kind == "unlearn" or (kind == "task-vector" and "forget" in values)
                or (kind == "compute-weights" and ("retain_fraction" in values or "max_examples" in values)))

    def effective(self) -> dict[str, Any]:
        """Every key's value, the defaults of the keys not set included (by field)."""
        out = {k.field: k.default for k in self.kind.keys.values()}
        out.update(self.values)
        return out

    def resolved(self, seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The step as ``recipe.resolved.yaml`` writes it: every key with a value, defaults included (not the seed
        of a step that ``seeds`` re-seeds)."""
        doc: dict[str, Any] = {"command": self.kind.name}
        if self.label is not None:
            doc["label"] = plain(self.label)
        if self.seeded is not None:
            doc["seeded"] = self.seeded
        values = self.effective()
        if seeds and self.reseeded():
            values.pop("seed", None)
        for key in self.kind.keys.values():
            value = values.get(key.field)
            if value is not None and value != () and value is not False:
                doc[key.name] = plain(value)
        return doc


@dataclass
class Recipe:
    """A checked recipe."""

    source: Path | None
    base_dir: Path
    description: str | None
    output: str | None
    seeds: tuple[int, ...] | None
    torch_threads: int | None
    models: dict[str, str]
    data: dict[str, data_mod.Entry]
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The recipe's file name without ``.yaml`` (``.resolved`` dropped)."""
        return (self.source.name.split(".")[0] if self.source else "recipe") or "recipe"

    def resolved(self, output: Path | None = None) -> dict[str, Any]:
        """The recipe with every value resolved (``recipe.resolved.yaml``): defaults merged into the steps, paths
        absolute, seeds explicit, ``--set`` changes applied."""
        doc: dict[str, Any] = {}
        if self.description is not None:
            doc["description"] = self.description
        if output is not None:
            doc["output"] = str(output)
        if self.seeds is not None:
            doc["seeds"] = list(self.seeds)
        if self.torch_threads is not None:
            doc["torch-threads"] = self.torch_threads
        doc["models"] = dict(self.models)
        doc["data"] = {name: data_mod.plain(entry) for name, entry in self.data.items()}
        doc["steps"] = {name: step.resolved(self.seeds) for name, step in self.steps.items()}
        return doc

    def sha256(self) -> str:
        """The recipe's identity: sha256 of its resolved form (the output folder left out)."""
        return hashlib.sha256(json.dumps(self.resolved(), sort_keys=True).encode()).hexdigest()


# -- YAML ------------------------------------------------------------------------------------------------------------
def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML 1.1's safe loader with ``1e-4`` read as a number (YAML 1.2, as JSON) and duplicate keys refused."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in ``text``; a syntax error is one line naming ``where`` and the line."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = ' (a reference inside [ ] or { } is quoted: "${name}")' if "${" in text else ""
        raise RecipeError(f"{where}:{at}: not valid YAML: {problem}{hint}") from None


def dump_yaml(doc: Any) -> str:
    """YAML text of a plain document (keys in order)."""
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def apply_sets(doc: dict[str, Any], sets: Sequence[str]) -> None:
    """``--set a.b.c=VALUE``: put the YAML value at that dotted path (mappings made as needed)."""
    for item in sets:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        if not sep or not all(parts):
            raise RecipeError(f"--set {item!r}: use KEY=VALUE with a dotted key, e.g. steps.target.epochs=3")
        value = parse_yaml(text, f"--set {path}")
        node = doc
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {path}: {'.'.join(parts[:i + 1])} is not a mapping (got {shown(child)})")
            node = child
        node[parts[-1]] = value


def unknown_key(path: str, key: Any, allowed: Sequence[str], what: str) -> RecipeError:
    """One line for a key that is not allowed: a close match, the CLI spelling of an underscore key, every key."""
    text = str(key)
    hint = ""
    dashed = text.replace("_", "-")
    if dashed != text and dashed in allowed:
        hint = f" (keys are written as on the command line: {dashed})"
    else:
        close = difflib.get_close_matches(text, allowed, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
    return RecipeError(f"{path + '.' if path else ''}{text}: unknown key{hint}; {what}: {', '.join(allowed)}")


# -- the recipe --------------------------------------------------------------------------------------------------------
def load_recipe(path: str | Path, *, sets: Sequence[str] = (), seeds: int | None = None) -> Recipe:
    """Read and check a recipe file, with ``--set`` changes and ``--seeds K``."""
    source = Path(path).expanduser()
    try:
        text = source.read_text()
    except IsADirectoryError:
        raise RecipeError(f"{path}: a folder, not a recipe file (a run's folder holds recipe.resolved.yaml)") from None
    except (FileNotFoundError, NotADirectoryError):
        raise RecipeError(f"{path}: no such recipe file (bundled recipes: {', '.join(bundled_recipes())})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (UTF-8)") from None
    doc = parse_yaml(text, str(path))
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of {', '.join(TOP_KEYS)} (got {shown(doc)})")
    apply_sets(doc, sets)
    if seeds is not None:
        doc["seeds"] = seeds
    return parse_recipe(doc, source.resolve().parent, source)


def parse_recipe(doc: dict[str, Any], base_dir: Path, source: Path | None = None) -> Recipe:
    """Check a recipe document (paths relative to ``base_dir``)."""
    for key in doc:
        if key not in TOP_KEYS:
            raise unknown_key("", key, list(TOP_KEYS), "a recipe has the keys")
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise RecipeError(f"description: must be text (got {shown(description)})")
    output = doc.get("output")
    if output is not None and not isinstance(output, str):
        raise RecipeError(f"output: must be a folder path (got {shown(output)})")
    threads = doc.get("torch-threads")
    if threads is not None:
        check_number("torch-threads", threads, int)
        if threads < 1:
            raise RecipeError(f"torch-threads: must be >= 1 (got {threads})")
    recipe = Recipe(source, base_dir, description,
                    str((base_dir / output).resolve()) if output is not None else None,
                    parse_seeds(doc.get("seeds")), threads, {}, {})
    names: dict[str, str] = {b: "built in" for b in BUILTINS}
    for section in ("models", "data", "steps"):
        entries = doc.get(section) or {}
        if not isinstance(entries, dict):
            raise RecipeError(f"{section}: must be a mapping of name -> {section[:-1] if section != 'data' else 'data'}"
                              f" (got {shown(entries)})")
        for name in entries:
            where = f"{section}.{name}"
            if not isinstance(name, str) or not NAME.match(name) or (section == "steps" and RESERVED.match(name)):
                raise RecipeError(f"{where}: a name is letters, digits, '-' and '_' (not 'data' or 'seed-...' for a "
                                  "step)")
            if name in names:
                raise RecipeError(f"{where}: the name {name!r} is already {names[name]}; every model, data entry and "
                                  "step needs its own name")
            names[name] = f"used in {section}"
    for name, value in (doc.get("models") or {}).items():
        recipe.models[name] = parse_model(f"models.{name}", value, base_dir)
    for name, value in (doc.get("data") or {}).items():
        recipe.data[name] = data_mod.parse_entry(f"data.{name}", value, base_dir)
    check_data_refs(recipe)
    defaults = parse_defaults(doc.get("defaults"))
    for name, raw in (doc.get("steps") or {}).items():
        recipe.steps[name] = parse_step(name, raw, defaults, base_dir)
    check_step_refs(recipe)
    for step in recipe.steps.values():
        check_seed(step, recipe.seeds)
    reports = [s.name for s in recipe.steps.values() if s.kind.name == "report"]
    if len(reports) > 1:
        raise RecipeError(f"steps.{reports[1]}: a recipe has one report step (it writes results.* into the output "
                          f"folder), and {reports[0]} is one")
    return recipe


def check_seed(step: Step, seeds: tuple[int, ...] | None) -> None:
    """``seeded: true`` only on a step with a seed option; under ``seeds`` a re-seeded step sets no seed itself."""
    if step.seeded and "seed" not in {k.field for k in step.kind.keys.values()}:
        raise RecipeError(f"{step.path}.seeded: {step.kind.name} has no seed option; it runs once per seed when it "
                          "uses the output of a seeded step")
    if seeds and step.reseeded() and "seed" in step.values:
        raise RecipeError(f"{step.paths['seed']}: set by seeds (each seed runs the step with its own seed); drop it, "
                          "or drop seeds")


def parse_seeds(value: Any) -> tuple[int, ...] | None:
    """``seeds: K`` -> 0..K-1; a list of distinct integers as it is; null -> None."""
    if value is None:
        return None
    if isinstance(value, list):
        seeds = tuple(check_number(f"seeds[{i}]", v, int) for i, v in enumerate(value))
        if not seeds or len(set(seeds)) != len(seeds):
            raise RecipeError(f"seeds: must be K >= 1 or a list of distinct integers (got {shown(value)})")
        return seeds  # type: ignore[return-value]
    count = check_number("seeds", value, int)
    if count < 1:
        raise RecipeError(f"seeds: must be >= 1 (got {count})")
    return tuple(range(int(count)))


def parse_model(path: str, value: Any, base_dir: Path) -> str:
    """A Hub id ``org/name[@revision]`` as it is, or a model folder made absolute (relative to the recipe)."""
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"{path}: must be a Hub id org/name[@revision] or a model folder (got {shown(value)})")
    local = base_dir / Path(value).expanduser()
    if value.startswith((".", "/", "~")) or local.exists():
        return str(local.resolve())
    return value


def check_data_refs(recipe: Recipe) -> None:
    """Data entries refer only to data entries, without a cycle."""
    for name, entry in recipe.data.items():
        for ref in data_mod.refs_of(entry):
            if ref not in recipe.data:
                raise RecipeError(f"data.{name}: ${{{ref}}} names no data entry; known: {', '.join(recipe.data)}")
    cycle = find_cycle({n: data_mod.refs_of(e) for n, e in recipe.data.items()})
    if cycle:
        raise RecipeError(f"data: the entries refer to each other in a cycle: {' -> '.join(cycle)}")


def parse_defaults(value: Any) -> dict[str, dict[str, tuple[str, Any]]]:
    """``defaults``: command (or ``all``) -> key -> (YAML path, raw value), each key checked to exist."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"defaults: must be a mapping of command (or all) -> keys (got {shown(value)})")
    table = kinds()
    out: dict[str, dict[str, tuple[str, Any]]] = {}
    for command, keys in value.items():
        where = f"defaults.{command}"
        if command != "all" and command not in table:
            raise unknown_key("defaults", command, ["all", *table], "defaults are given for")
        if not isinstance(keys, dict):
            raise RecipeError(f"{where}: must be a mapping of key -> value (got {shown(keys)})")
        for key in keys:
            if command == "all":
                if not any(canonical(kind, str(key)) for kind in table.values()):
                    every = sorted({k for kind in table.values() for k in kind.keys})
                    raise unknown_key(where, key, every, "no command has it; keys")
            else:
                key_name(table[command], str(key), where)
        out[command] = {str(k): (f"{where}.{k}", v) for k, v in keys.items()}
    return out


def canonical(kind: StepKind, key: str) -> str | None:
    """The canonical name of a key of ``kind`` (a flag's other name mapped), None if it has none."""
    if key in kind.keys:
        return key
    return kind.aliases.get(key)


def key_name(kind: StepKind, key: str, where: str) -> str:
    """The canonical key, or one line: owned by the runner, or unknown (with the allowed keys)."""
    name = canonical(kind, key)
    if name is not None:
        return name
    why = owned_name(kind, key)
    if why is not None:
        raise RecipeError(f"{where}.{key}: not set in a recipe: {why}")
    allowed = [*RECIPE_KEYS, *kind.keys]
    raise unknown_key(where, key, allowed, f"{kind.name} takes")


def parse_step(name: str, raw: Any, defaults: dict[str, dict[str, tuple[str, Any]]], base_dir: Path) -> Step:
    """One step: its kind, its keys merged over the defaults and checked, the options' own cross-checks run."""
    where = f"steps.{name}"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: must be a mapping with `command` and its keys (got {shown(raw)})")
    table = kinds()
    command = raw.get("command")
    if command not in table:
        got = "missing" if command is None else f"got {shown(command)}"
        raise RecipeError(f"{where}.command: must be one of {', '.join(table)} ({got})")
    kind = table[command]
    given: dict[str, tuple[str, Any]] = {}
    for key, (path, value) in defaults.get("all", {}).items():
        known = canonical(kind, key)
        if known is not None and not difference_form(kind, raw, known):
            given[known] = (path, value)
    for key, (path, value) in defaults.get(command, {}).items():
        given[key_name(kind, key, f"defaults.{command}")] = (path, value)
    step = Step(name, kind, {}, {})
    own: set[str] = set()
    for key, value in raw.items():
        key = str(key)
        if key == "command":
            continue
        if key == "label":
            step.label = parse_label(f"{where}.label", value)
        elif key == "seeded":
            if not isinstance(value, bool):
                raise RecipeError(f"{where}.seeded: must be true or false (got {shown(value)})")
            step.seeded = value
        else:
            own.add(key_name(kind, key, where))
            given[key_name(kind, key, where)] = (f"{where}.{key}", value)
    for pair in EXCLUSIVE.get(command, ()):  # a step's own alpha drops a default step, and the other way round
        for mine, other in (pair, pair[::-1]):
            if mine in own and other not in own:
                given.pop(other, None)
    for key_id, (path, value) in given.items():
        key = kind.keys[key_id]
        step.values[key.field] = check_value(path, key, value, base_dir)
        step.paths[key.field] = path
    step.values = {f: v for f, v in step.values.items() if v is not None}
    check_required(step)
    check_options(step)
    return step


def difference_form(kind: StepKind, raw: dict[str, Any], key: str) -> bool:
    """Whether ``key`` is a training option of a ``task-vector --base A --finetuned B`` step (the form that
    fine-tunes nothing refuses them, so ``defaults.all`` does not give them to it)."""
    from perta_hub.options.training import TrainingOptions

    return (kind.name == "task-vector" and ("base" in raw or "finetuned" in raw)
            and kind.keys[key].owner is TrainingOptions)


def parse_label(path: str, value: Any) -> str | tuple[str, ...]:
    """A label, or one label per output (a list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RecipeError(f"{path}: must be a name or a list of names, one per output (got {shown(value)})")


def check_required(step: Step) -> None:
    """Every required key given."""
    for key in step.kind.keys.values():
        if key.required and key.field not in step.values:
            raise RecipeError(f"{step.path}.{key.name}: is required: {key.help}")


def check_options(step: Step) -> None:
    """The options classes' own checks (ranges across fields, ``needs``, a method's rules) and apply's choice of
    alpha or step, on the given values."""
    try:
        for cls in step.kind.options:
            names = set(fields_of(cls))
            cls(**{f: placeholder(v) for f, v in step.values.items() if f in names})
        if step.kind.name == "apply":
            from perta_hub.merge.spec import check_alphas, check_steps, requested

            asked = requested(step.values.get("alphas"), step.values.get("steps"))
            if asked["alphas"]:
                check_alphas(asked["alphas"], allow_negative=step.values.get("allow_negative_alpha", False))
            else:
                check_steps(asked["steps"])
    except InputError as err:
        raise RecipeError(f"{step.path}: {err}") from None


def check_step_refs(recipe: Recipe) -> None:
    """Every reference names a model, data entry, step or built-in; the steps form no cycle."""
    known = [*recipe.models, *recipe.data, *recipe.steps, *BUILTINS]
    for step in recipe.steps.values():
        for path, ref in step.refs():
            if ref.name not in known:
                close = difflib.get_close_matches(ref.name, known, n=1)
                hint = f"; did you mean ${{{close[0]}}}?" if close else ""
                raise RecipeError(f"{path}: {ref} names no model, data entry or step{hint}; known: {', '.join(known)}")
    cycle = find_cycle({name: [r.name for _, r in step.refs() if r.name in recipe.steps]
                        for name, step in recipe.steps.items()})
    if cycle:
        raise RecipeError(f"steps: the steps need each other's outputs in a cycle: {' -> '.join(cycle)}")


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> nodes it needs) as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
