"""``perta-hub evaluate``: TOFU forget quality, model utility, extraction strength, MIA AUCs and PrivLeak."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.options.evaluate import EvaluateOptions


@command("evaluate")
@click.argument("models", nargs=-1, required=True)
@bind(EvaluateOptions, "options")
def evaluate_command(models: tuple[str, ...], options: EvaluateOptions, console: Console) -> None:
    """TOFU forget quality, model utility, extraction strength, membership-inference AUCs (forget vs holdout)
    and PrivLeak of one or more MODELs.

    Each MODEL is a folder or a Hub id org/name[@revision]; several (e.g. apply outputs for several
    alphas) give one table and, with --plot, one PNG. --bootstrap N adds 95 % intervals; compare two
    results JSONs with `perta-hub compare A.json B.json`.
    """
    from perta_hub.evaluation import run_evaluation

    o = options
    run = run_evaluation(
        list(models), benchmark=o.benchmark, forget_split=o.forget_split, retain_logs=o.retain_logs,
        retain_model=o.retain_model, output=o.output, write_card=o.write_card, plot=o.plot, overwrite=o.overwrite,
        echo=console.status,
        data_dir=o.data_dir, max_examples=o.max_examples, device=o.device, dtype=o.dtype, batch_size=o.batch_size,
        max_new_tokens=o.max_new_tokens, max_length=o.max_length, mia_k=o.mia_k, bootstrap=o.bootstrap, seed=o.seed,
        progress=console.progress,
    )
    console.result(run["table"])
    for label, path in (("results", run["output"]), ("plot", run["plot"])):
        if path is not None:
            console.result(f"Wrote {label} to {path}")
    for card in run["cards"]:
        console.result(f"Wrote eval results into {card}")
