"""Recipes: a whole unlearning experiment in one YAML file, run by ``perta-hub run`` (docs/recipes.md).

Modules: ``kinds`` (the step kinds and their keys, derived from the commands' options), ``values`` (one value
checked against its key; references ``${name}``), ``data`` (the ``data:`` entries), ``load`` (reading and checking a
recipe), ``plan`` (order, seeds, keys), ``state`` (what a run knows of each step), ``execute`` (running one step
as its command line), ``estimate`` (time estimates), ``report`` and ``tiny`` (the local steps), ``schema`` (JSON
Schema), ``run`` (the runner), ``bundled`` (the recipes shipped with perta-hub).
"""

from __future__ import annotations

from perta_hub.recipes.load import Recipe, load_recipe
from perta_hub.recipes.run import RunResult, run_recipe
from perta_hub.recipes.schema import recipe_schema

__all__ = ["Recipe", "RunResult", "load_recipe", "recipe_schema", "run_recipe"]
