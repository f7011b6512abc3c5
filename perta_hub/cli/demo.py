"""``perta-hub demo``: a bundled recipe (TOFU-mini, or the real-model experiment of docs/results-weak-target.md) end to end."""

from __future__ import annotations

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.options.demo import DemoOptions


@command("demo")
@bind(DemoOptions, "options")
def demo_command(options: DemoOptions, console: Console) -> None:
    """TOFU-mini unlearning end to end, offline: train, forget with TV / PerTA-grad / PerTA-fisher, evaluate.

    With --model MODEL: fine-tune that pretrained model instead (target and retain model), and compare TV and
    PerTA with GradAscent, GradDiff and NPO in one table and plot (docs/results-weak-target.md). The demo is a bundled
    recipe (`perta-hub run quick|tiny|smollm2|smollm2-quick`, perta_hub/resources/recipes/): the same steps,
    resumable, each reused when it is finished.
    """
    from pathlib import Path

    from perta_hub.cli.run import print_report
    from perta_hub.demo import run_demo

    flags = ["-q"] if console.options.quiet else ["-v"] if console.options.verbose else []
    summary = run_demo(options.out_dir, quick=options.quick, device=options.device, model=options.model,
                       seeds=options.seeds, echo=console.status, command_flags=flags)
    print_report(console, summary, Path(options.out_dir).resolve())
