"""``perta-hub demo``: TOFU-mini unlearning end to end, offline."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.options.demo import DemoOptions


@command("demo")
@bind(DemoOptions, "options")
def demo_command(options: DemoOptions, console: Console) -> None:
    """TOFU-mini unlearning end to end, offline: train, forget with TV / PerTA-grad / PerTA-fisher, evaluate.

    With --model MODEL: fine-tune that pretrained model instead (target and retain model), and compare TV and
    PerTA with GradAscent, GradDiff and NPO in one table and plot (docs/results.md). Ends by printing where its
    report is (results.md, results.png and a self-contained report.html in the output folder).
    """
    from perta_hub.demo import run_demo
    from perta_hub.evaluation.report import report_location, terminal_summary

    if console.options.quiet:  # only the final summary and where the report is
        summary = run_demo(options.out_dir, quick=options.quick, device=options.device, model=options.model,
                           echo=lambda _line: None)
        console.result(terminal_summary(summary))
        console.result(report_location(summary["report_files"]))
    else:
        run_demo(options.out_dir, quick=options.quick, device=options.device, model=options.model, echo=click.echo)
