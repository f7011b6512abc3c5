"""``perta-hub tune``: choose alpha within a utility budget, write only the chosen model."""

from __future__ import annotations

import dataclasses

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.options.push import PushOptions
from perta_hub.options.tune import TuneOptions


@command("tune")
@click.argument("model")
@bind(TuneOptions, "options")
@push_options
def tune_command(model: str, options: TuneOptions, push_options: PushOptions, console: Console) -> None:
    """Choose alpha: the largest forgetting whose retain utility stays >= budget x the target's.

    The target is loaded once and set in place for each alpha (coarse grid, then bisection); only the chosen
    model is written, byte-identical to `apply` with that alpha, with the search in perta_config.json (tune)
    and in the card (table and tune.png).
    """
    from perta_hub.tuning.command import tune
    from perta_hub.tuning.report import PLOT_NAME

    o = options
    push_options.check_outputs(max(1, len(o.weights)))
    run = tune(model, o.task_vector, forget=o.forget, retain=o.retain, out_dir=o.out_dir, weights=list(o.weights),
               p=o.p, lam=o.lam, eps=o.eps, utility_budget=o.utility_budget, alphas=list(o.alphas),
               alpha_range=o.alpha_range, grid_points=o.grid_points, max_evals=o.max_evals,
               forget_examples=o.forget_examples, retain_examples=o.retain_examples,
               rouge_questions=o.rouge_questions, max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
               max_length=o.max_length, data_dir=o.data_dir, device=o.device, max_shard_size=o.max_shard_size,
               allow_pickle=o.allow_pickle, evaluate=o.evaluate, forget_split=o.forget_split,
               retain_model=o.retain_model, retain_logs=o.retain_logs, eval_max_examples=o.eval_max_examples,
               echo=console.status, progress=console.progress)
    console.result(run["table"])
    for note in run["notes"]:
        console.result(note)
    for warning in run["warnings"]:
        console.warning(warning)
    if run["evaluation"] is not None:
        console.result(run["evaluation"]["table"])
    for label, folder in zip(run["chosen"], run["outputs"], strict=True):
        console.result(f"{label}: alpha {run['chosen'][label]:g} chosen; model written to {folder}")
    if push_options:
        push_after(console, dataclasses.replace(push_options, include=(*push_options.include, PLOT_NAME)),
                   run["outputs"][0])
