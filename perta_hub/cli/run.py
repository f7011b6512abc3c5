"""``perta-hub run``: a whole experiment described in one YAML file (docs/recipes.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.errors import InputError
from perta_hub.options.run import RunOptions


@command("run")
@click.argument("recipe", required=False)
@bind(RunOptions, "options")
def run_command(recipe: str | None, options: RunOptions, console: Console) -> None:
    """Run the experiment of RECIPE (YAML): its steps in order, each finished step reused.

    \b
    A step is a perta-hub command with exactly its options (as on the command line, without the dashes);
    ${name} names the output of step `name`, a model or a data entry. Re-running resumes: a step whose
    options and inputs did not change is not run again. RECIPE is a file, or the name of a bundled
    recipe (a file of perta_hub/resources/recipes/ without .yaml: quick, smollm2, smollm2-memorised, ...).
    Examples:
      perta-hub run quick -o quick_out
      perta-hub run smollm2.yaml --set models.base=/tmp/smollm2 --dry-run
      perta-hub run OUT/recipe.resolved.yaml          (the run as it was, every finished step reused)
    """
    from perta_hub.recipes import load_recipe, recipe_schema, run_recipe
    from perta_hub.recipes.bundled import find_recipe

    if options.schema:
        console.result(json.dumps(recipe_schema(), indent=2))
        return
    if recipe is None:
        raise InputError("pass a RECIPE.yaml (or --schema for the recipe format)")
    loaded = load_recipe(find_recipe(recipe), sets=options.set, seeds=options.seeds)
    flags = ["-q"] if console.options.quiet else ["-v"] if console.options.verbose else []
    echo = console.result if options.dry_run else console.status
    result = run_recipe(loaded, options.out_dir, only=options.only, dry_run=options.dry_run, echo=echo,
                        command_flags=flags)
    if not options.dry_run:
        console.result(f"{len(result.ran)} step(s) run, {len(result.reused)} reused; outputs in {result.out}")
        if result.reports:  # the report's results.json (with seeds: the one gathering every seed's, last)
            print_report(console, json.loads(result.reports[-1].read_text()), result.reports[-1].parent)


def print_report(console: Console, summary: dict[str, Any], folder: Path) -> None:
    """An experiment's end: its report's summary and where the report is (``summary``: a ``results.json``; with
    seeds, ``{"seeds": {seed: results.json}}``: where each seed's report is and the page gathering them)."""
    from perta_hub.evaluation.report import report_location, terminal_summary

    reports = list(summary["seeds"].values()) if "seeds" in summary else [summary]
    if len(reports) == 1:
        console.result(terminal_summary(reports[0]))
    files = [f for report in reports for f in report.get("report_files", [])]
    if "seeds" in summary:
        files.append(str(folder / "results.md"))
    if files:
        console.result(report_location(files))
