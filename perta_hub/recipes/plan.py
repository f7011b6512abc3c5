"""The plan of a recipe: its steps in order, once or once per seed, each keyed by what it is made from.

**Order.** Steps run in the order of the file, a step moved after the steps whose outputs it names (a
topological order; a cycle is refused when the recipe is read).

**Seeds.** With ``seeds``, the unlearning stage runs once per seed into ``OUT/seed-<s>/``: the steps re-seeded
(their ``seed`` option set to ``s``) are ``task-vector`` when it fine-tunes (``MODEL --forget``: the data order),
``unlearn`` (the baselines' data order) and ``compute-weights`` when it subsamples its retain rows
(``retain-fraction``/``max-examples``: which rows; without a subsample its importances do not depend on a seed, so
it runs once), and any step with ``seeded: true``; every step that uses a seeded step's output runs once per seed
too, with its own options unchanged. The rest (the target and retain fine-tunes, weight maps at the target,
evaluations of unseeded models) runs once, in ``OUT/``.

**Keys.** A step's key is the sha256 of its command, its values with the defaults (references replaced by the
identity of what they name: a local file or folder by its content, a Hub id as written, a step by its outputs'
identity) and its seed. A finished step whose key is unchanged and whose outputs are there is reused, never run
again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import RecipeError
from perta_hub.recipes.data import DataSet, is_derived
from perta_hub.recipes.load import Recipe, Step
from perta_hub.recipes.state import read_state
from perta_hub.recipes.values import Ref


@dataclass(eq=False)
class Instance:
    """One run of a step: the step itself, or its run for one seed."""

    step: Step
    root: Path  # OUT, or OUT/seed-<s>
    seed: int | None = None  # the seed folder it runs in (None: once, in OUT)
    reseeded: bool = False  # its ``seed`` option is set to ``seed``
    needs: list[Instance] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def title(self) -> str:
        """``tv`` or ``tv (seed 1)``."""
        return self.name if self.seed is None else f"{self.name} (seed {self.seed})"

    @property
    def folder(self) -> Path:
        """Where its outputs go: ``<root>/<step>``."""
        return self.root / self.name

    def state(self) -> dict[str, Any] | None:
        return read_state(self.root, self.name)

    def need(self, name: str) -> Instance:
        """The instance of step ``name`` this one reads."""
        return next(i for i in self.needs if i.name == name)


@dataclass
class Plan:
    """Every instance of a recipe in run order, and what is needed to key and run them."""

    recipe: Recipe
    out: Path
    instances: list[Instance]
    data: DataSet

    def select(self, only: tuple[str, ...]) -> list[Instance]:
        """The instances of the named steps and every instance they need, in run order (all without names)."""
        if not only:
            return list(self.instances)
        unknown = [n for n in only if n not in self.recipe.steps]
        if unknown:
            raise RecipeError(f"--only {unknown[0]}: no such step; steps: {', '.join(self.recipe.steps)}")
        chosen: set[int] = set()

        def add(inst: Instance) -> None:
            if id(inst) not in chosen:
                chosen.add(id(inst))
                for dep in inst.needs:
                    add(dep)

        for inst in self.instances:
            if inst.name in only:
                add(inst)
        return [i for i in self.instances if id(i) in chosen]

    # -- references ------------------------------------------------------------------------------------------------
    def derived_path(self, name: str) -> Path:
        return self.out / "data" / f"{name}.json"

    def resolve(self, inst: Instance, ref: Ref) -> list[str]:
        """What a reference stands for when ``inst`` runs: a model, a data spec (a derived set's file), the bundled
        TOFU folder, or the outputs of a step (every needed instance has finished)."""
        recipe = self.recipe
        if ref.name in recipe.models:
            return [recipe.models[ref.name]]
        if ref.name in recipe.data:
            entry = recipe.data[ref.name]
            while isinstance(entry, Ref):
                ref, entry = entry, recipe.data[entry.name]
            return [str(self.derived_path(ref.name))] if is_derived(entry) else [entry.spec]  # type: ignore[union-attr]
        if ref.name == "tofu":
            from perta_hub.data.loading import BUNDLED_TOFU

            return [str(BUNDLED_TOFU)]
        state = inst.need(ref.name).state() or {}
        return [str(self.out / p) for p in state.get("outputs", [])]

    def identity(self, inst: Instance, ref: Ref) -> str | None:
        """What a step's key holds for a reference: the content identity of what it names (None: a step that has
        not finished)."""
        recipe = self.recipe
        if ref.name in recipe.data:
            return self.data.identity(ref.name)
        if ref.name in recipe.steps:
            state = inst.need(ref.name).state()
            return state.get("identity") if state and state.get("status") == "finished" else None
        return path_identity(self.resolve(inst, ref)[0])

    def values(self, inst: Instance) -> dict[str, Any]:
        """The step's values by field, defaults included, references resolved, the seed set when re-seeded; a key
        that takes one value and names a sweep is refused."""
        out = {}
        for name, value in inst.step.effective().items():
            key = next(k for k in inst.step.kind.keys.values() if k.field == name)
            many = key.many or (key.flag is not None and key.flag.multiple)
            resolved = self._resolve_value(inst, value)
            if not many and isinstance(resolved, list):
                if len(resolved) != 1:
                    raise RecipeError(f"{inst.step.paths.get(name, inst.step.path)}: {value} names {len(resolved)} "
                                      "outputs (a sweep); this key takes one")
                resolved = resolved[0]
            out[name] = resolved
        if inst.reseeded:
            out["seed"] = inst.seed
        return out

    def _resolve_value(self, inst: Instance, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.resolve(inst, value)
        if isinstance(value, tuple) and any(isinstance(v, Ref) for v in value):
            return tuple(item for v in value for item in (self.resolve(inst, v) if isinstance(v, Ref) else [v]))
        return value

    def key(self, inst: Instance) -> str | None:
        """The step's key; None while a step it needs has not finished."""
        values = {}
        for name, value in inst.step.effective().items():
            items = [self.identity(inst, v) if isinstance(v, Ref) else v
                     for v in (value if isinstance(value, tuple) else (value,))]
            if any(i is None for i, v in zip(items, value if isinstance(value, tuple) else (value,), strict=True)
                   if isinstance(v, Ref)):
                return None
            values[name] = items if isinstance(value, tuple) else items[0]
        payload = {"command": inst.step.kind.name, "values": values,
                   "label": inst.step.label if inst.step.kind.name == "report" else None,
                   "seed": inst.seed if inst.reseeded else None}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def path_identity(value: str) -> str:
    """A local file or folder by the sha256 of its content (cached by size and mtime), anything else (a Hub id) as
    written."""
    from perta_hub.recipes.state import output_identity

    path = Path(value).expanduser()
    return output_identity(path) if path.exists() else value


def make_plan(recipe: Recipe, out: Path) -> Plan:
    """The instances of every step in run order (see the module's docstring)."""
    steps = recipe.steps
    deps = {name: sorted({r.name for _, r in step.refs() if r.name in steps}, key=list(steps).index)
            for name, step in steps.items()}
    order: list[str] = []
    while len(order) < len(steps):  # the file's order, each step after the steps it needs
        order.append(next(n for n in steps if n not in order and all(d in order for d in deps[n])))
    seeds = recipe.seeds
    per_seed: dict[str, bool] = {}
    own_seed: dict[str, bool] = {}
    for name in order:
        own_seed[name] = bool(seeds) and steps[name].reseeded()
        per_seed[name] = bool(seeds) and (own_seed[name] or any(per_seed[d] for d in deps[name]))
    once = {name: Instance(steps[name], out) for name in order if not per_seed[name]}
    instances = [once[name] for name in order if name in once]
    for seed in seeds or ():
        mine: dict[str, Instance] = {}
        for name in order:
            if per_seed[name]:
                mine[name] = Instance(steps[name], out / f"seed-{seed}", seed, own_seed[name])
                instances.append(mine[name])
        for inst in mine.values():
            inst.needs = [mine.get(d) or once[d] for d in deps[inst.name]]
    for inst in once.values():
        inst.needs = [once[d] for d in deps[inst.name]]
    return Plan(recipe, out, instances, DataSet(recipe.data))
