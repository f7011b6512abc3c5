"""``perta-hub apply``: unlearn with a task vector, optionally weighted per parameter."""

from __future__ import annotations

import click

from perta_hub.cli.bind import bind
from perta_hub.cli.console import Console
from perta_hub.cli.main import command
from perta_hub.cli.push import push_after, push_options
from perta_hub.options.apply import ApplyOptions
from perta_hub.options.push import PushOptions


@command("apply")
@click.argument("model")
@bind(ApplyOptions, "options")
@push_options
def apply_command(model: str, options: ApplyOptions, push_options: PushOptions, console: Console) -> None:
    """Unlearn: theta = theta_MODEL - alpha * (w * tau), streamed shard by shard.

    Give the scale (--alpha A) or the step norm ||alpha w*tau|| / ||tau|| to reach (--step S); every output
    records both (alpha and step_norm in perta_config.json) and the result line prints them.
    """
    from perta_hub.hub import remote_apply
    from perta_hub.merge.apply import apply_spec, merge_summary
    from perta_hub.merge.spec import MergeSpec

    spec = MergeSpec.from_options(model, options)  # alpha, --step: one line before anything is opened
    push_options.check_outputs(spec.outputs)
    if not remote_apply.needs_hub_route(spec, options, push_options):
        outs, published = apply_spec(spec, options.out_dir, progress=console.progress), False
    elif options.dry_run:
        remote_apply.dry_run(spec, options, push_options, console)
        return
    else:  # Hub inputs (fetched as they are read), or --stream
        outs, published = remote_apply.apply_from_hub(spec, options, push_options, console)
    if published:
        return
    for folder in outs:
        console.result(f"unlearned model written to {folder}: {merge_summary(folder)}")
    push_after(console, push_options, outs[0])
