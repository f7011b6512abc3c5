"""``perta-hub finetune``: fine-tune a model on question/answer data (loss on the answers)."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.cli.training import training_options
from perta_hub.options.finetune import FinetuneOptions
from perta_hub.options.push import PushOptions
from perta_hub.options.training import TrainingOptions


@command("finetune")
@click.argument("model")
@bind(FinetuneOptions, "options")
@training_options
@push_options
def finetune_command(model: str, options: FinetuneOptions, training: TrainingOptions, training_given: list[str],
                     push_options: PushOptions, console: Console) -> None:
    """Fine-tune MODEL on question/answer DATA (loss on the answers): the privacy-tuned theta_ft.

    MODEL is a folder or a Hub id org/name[@revision]. transformers' Trainer does the training; the
    output is a transformers checkpoint (config, tokenizer, sharded safetensors; with --lora-rank the
    merged model plus the adapter in adapter/) with a card and perta_config.json. Several GPUs:
    `accelerate launch [--config_file FSDP_OR_DEEPSPEED.yaml] -m perta_hub finetune ...`.
    """
    from perta_hub.training.finetune import finetune

    push_options.check_outputs(1)
    result = finetune(model, options.data, options.out_dir, options=training, max_shard_size=options.max_shard_size,
                      allow_pickle=options.allow_pickle, progress=console.progress, echo=console.status_echo())
    if result.is_main:
        console.result(result.final_line())
        push_after(console, push_options, result.out_dir)
