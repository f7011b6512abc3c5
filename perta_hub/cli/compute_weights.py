"""``perta-hub compute-weights``: forget and retain importances of a model, saved as a weight map."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.options.compute_weights import ComputeWeightsOptions
from perta_hub.options.push import PushOptions


@command("compute-weights")
@click.argument("model")
@bind(ComputeWeightsOptions, "options")
@push_options
def compute_weights_command(model: str, options: ComputeWeightsOptions, push_options: PushOptions,
                            console: Console) -> None:
    """Per-parameter importances of MODEL for the forget and retain data, saved as a weight map.

    MODEL is a folder or a Hub id org/name[@revision]. Data-parallel: prefix with
    `accelerate launch --num_processes N` (same result as one process). At the end it prints how selective the
    map is (w per module type) and, with --task-vector, ||w*tau|| / ||tau|| (what apply --step divides by).
    """
    from perta_hub.importance.weight_map import compute_weights

    o = options
    push_options.check_outputs(1)
    summary = compute_weights(
        model, o.forget, o.retain, o.out_dir, method=o.method, question_field=o.question_field,
        answer_field=o.answer_field, max_length=o.max_length, batch_size=o.batch_size,
        retain_fraction=o.retain_fraction, max_examples=o.max_examples, seed=o.seed, params=o.params,
        unrestricted_rest=o.unrestricted_rest, dtype=o.dtype,
        device=o.device, gradient_checkpointing=o.gradient_checkpointing, data_dir=o.data_dir,
        max_shard_size=o.max_shard_size, gradients_at=o.gradients_at, allow_pickle=o.allow_pickle,
        task_vector=o.task_vector, progress=console.progress, echo=console.status_echo(),
    )
    if summary.is_main:
        console.result(summary.final_line())
        for line in summary.selectivity_lines():
            console.result(line)
        push_after(console, push_options, summary.out_dir)
