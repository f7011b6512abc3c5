"""``perta-hub compare``: paired bootstrap comparison of two TOFU evaluations."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.options.compare import CompareOptions


@command("compare")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@bind(CompareOptions, "options")
def compare_command(a: str, b: str, options: CompareOptions, console: Console) -> None:
    """Is model A better than model B? A and B are results JSONs of `perta-hub evaluate -o` (same forget split,
    rows and --retain-logs).

    Resamples the question rows (the same rows for both) and prints, for forget quality, model utility and
    PrivLeak, the difference with its 95 % percentile interval and "A beats B", "B beats A" or "no measurable
    difference" (whether the interval of A's advantage excludes 0).
    """
    from perta_hub.evaluation.bootstrap import compare_files

    run = compare_files(a, b, bootstrap=options.bootstrap, seed=options.seed, output=options.output,
                        overwrite=options.overwrite)
    console.result(run["text"])
    if run["output"] is not None:
        console.result(f"Wrote the comparison to {run['output']}")
