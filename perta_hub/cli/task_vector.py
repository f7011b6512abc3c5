"""``perta-hub task-vector``: theta_finetuned - theta_base, from two checkpoints or by fine-tuning first."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.cli.training import training_options
from perta_hub.errors import InputError
from perta_hub.options.push import PushOptions
from perta_hub.options.task_vector import TaskVectorOptions
from perta_hub.options.training import TrainingOptions


@command("task-vector")
@click.argument("model", required=False)
@bind(TaskVectorOptions, "options")
@training_options
@push_options
def task_vector_command(model: str | None, options: TaskVectorOptions, training: TrainingOptions,
                        training_given: list[str], push_options: PushOptions, console: Console) -> None:
    """Write a task vector (theta_finetuned - theta_base, streamed, in float32) as an artifact folder.

    \b
    Two forms:
      perta-hub task-vector --base A --finetuned B -o DIR
          the difference B - A of two existing checkpoints;
      perta-hub task-vector MODEL --forget DATA -o DIR [training options] [--finetuned-dir DIR]
          fine-tunes MODEL on DATA (as `perta-hub finetune`; with --lora-rank R the artifact keeps the
          adapters' factors, and apply forms their low-rank delta), then writes the difference against MODEL.
    --dry-run (first form): check both checkpoints from their headers and print the plan.
    Multi-GPU: prefix the second form with `accelerate launch [--config_file FSDP_OR_DEEPSPEED.yaml]`.
    """
    o = options
    convenience = model is not None or o.forget is not None or o.finetuned_dir is not None
    explicit = o.base is not None or o.finetuned is not None
    if convenience and explicit:
        raise InputError("use either `task-vector MODEL --forget DATA` (fine-tune, then the difference) or "
                         "`task-vector --base A --finetuned B`, not both")
    push_options.check_outputs(1)
    if not convenience:
        if o.base is None or o.finetuned is None:
            raise InputError("pass --base A --finetuned B (two checkpoints), or MODEL --forget DATA to fine-tune "
                             "MODEL first")
        if training_given:
            raise InputError(f"{', '.join(training_given)}: training options only apply to "
                             "`task-vector MODEL --forget DATA`; --base/--finetuned take two existing checkpoints")
        if o.dry_run:
            from perta_hub.hub.remote_task_vector import dry_run

            dry_run(o, push_options.push, console)
            return
        from perta_hub.merge.task_vector import task_vector

        out = task_vector(o.base, o.finetuned, o.out_dir, dtype=o.dtype, max_shard_size=o.max_shard_size,
                          allow_pickle=o.allow_pickle, progress=console.progress)
    else:
        if o.dry_run:
            raise InputError("--dry-run plans `task-vector --base A --finetuned B`; the fine-tuning form has no "
                             "dry run")
        if model is None or o.forget is None:
            raise InputError("the fine-tuning form needs both MODEL and --forget DATA: "
                             "`perta-hub task-vector MODEL --forget DATA -o DIR`")
        from perta_hub.training.from_data import task_vector_from_data

        artifact, result = task_vector_from_data(
            model, o.forget, o.out_dir, finetuned_dir=o.finetuned_dir, options=training, dtype=o.dtype,
            max_shard_size=o.max_shard_size, allow_pickle=o.allow_pickle, progress=console.progress,
            echo=console.status_echo())
        if artifact is None:  # another process of an `accelerate launch` run: the main one reports
            return
        console.result(result.final_line())
        out = artifact
    console.result(f"task vector written to {out}")
    push_after(console, push_options, out)
