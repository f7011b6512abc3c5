"""``perta-hub unlearn``: the gradient-based baselines GradAscent, GradDiff and NPO."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.options.push import PushOptions
from perta_hub.options.training import UnlearnTrainingOptions
from perta_hub.options.unlearn import UnlearnOptions


@command("unlearn")
@click.argument("model")
@bind(UnlearnOptions, "options")
@bind(UnlearnTrainingOptions, "training", given="training_given")
@push_options
def unlearn_command(model: str, options: UnlearnOptions, training: UnlearnTrainingOptions,
                    training_given: list[str], push_options: PushOptions, console: Console) -> None:
    """Unlearn FORGET data from MODEL by training: GradAscent (ga), GradDiff (gd) or NPO (npo).

    The losses and defaults are the reference framework's (open-unlearning; docs/unlearn.md lists each
    default and its source). MODEL is a folder or a Hub id org/name[@revision]. The output is a
    transformers checkpoint in MODEL's dtype with a card and perta_config.json (kind unlearned_model);
    like apply's models it is public by default on --push. Several GPUs:
    `accelerate launch [--config_file FSDP_OR_DEEPSPEED.yaml] -m perta_hub unlearn ...`.
    """
    from perta_hub.unlearning.command import unlearn

    push_options.check_outputs(1)
    result = unlearn(model, options.forget, options.out_dir, method=options.method, retain=options.retain,
                     gamma=options.gamma, beta=options.beta, retain_weight=options.retain_weight, options=training,
                     max_shard_size=options.max_shard_size, allow_pickle=options.allow_pickle,
                     progress=console.progress, echo=console.status_echo())
    if result.is_main:
        console.result(result.final_line())
        push_after(console, push_options, result.out_dir)
