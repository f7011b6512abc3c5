"""Options of ``perta-hub run`` and the defaults of :func:`perta_hub.recipes.run.run_recipe`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, Range, option
from perta_hub.options.common import FOLDER


@dataclass(frozen=True)
class RunOptions(Options):
    """Where a recipe runs, which of its steps, with which changes."""

    command = "run"

    out_dir: str | None = option(
        "-o", "--output", type=FOLDER,
        help="Folder of every step's output, the recipe as run (recipe.resolved.yaml) and the report [default: "
             "the recipe's 'output' key, else ./<recipe name>_out]. A re-run reuses every finished step.")
    dry_run: bool = option("--dry-run", is_flag=True, default=False,
                           help="Print the plan (steps in order, what is reused, estimated time and where the rates "
                                "come from); write nothing.")
    only: tuple[str, ...] = option(
        "--only", multiple=True, default=(), metavar="STEP",
        help="Run this step (repeatable), and the steps it needs that are not finished; nothing after it.")
    set: tuple[str, ...] = option(
        "--set", multiple=True, default=(), metavar="KEY=VALUE",
        help="Change one value of the recipe before it runs: a dotted YAML path and a YAML value, e.g. "
             "--set steps.target.epochs=3 --set models.base=/tmp/smollm2 (repeatable).")
    seeds: int | None = option(
        "--seeds", type=Range(int, min=1),
        help="Run the unlearning stage (task-vector fine-tune, subsampled weight maps, unlearn baselines and "
             "everything after them) once per seed 0..K-1, into OUT/seed-<s>/ [default: the recipe's 'seeds'].")
    schema: bool = option("--schema", is_flag=True, default=False,
                          help="Print the recipe format as JSON Schema (for editors) and exit; needs no RECIPE.")


RUN = RunOptions()
