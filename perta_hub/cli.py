"""The ``perta-hub`` command: a thin click layer over the Python API.

Each command parses options, calls one API function and prints its result. Errors of the
package's own types become one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from perta_hub import __version__
from perta_hub.errors import PertaError


class _Group(click.Group):
    """A click group that turns known failures into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PertaError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: re-run the same command to resume; complete shards are kept.", err=True)
            sys.exit(130)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                click.echo(
                    f"Error: no space left on the device ({err.filename or 'output'}); free space and re-run "
                    "the same command: complete shards are kept, partial ones are discarded.",
                    err=True,
                )
                sys.exit(1)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perta-hub")
def main() -> None:
    """Per-parameter task arithmetic (PerTA) unlearning for LLMs, integrated with the Hugging Face Hub."""


@main.command("task-vector")
@click.option("--base", required=True, help="Anchor model: folder, .safetensors file or Hub id org/name[@revision].")
@click.option("--finetuned", required=True, help="The anchor fine-tuned on the forget data (same architecture).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Artifact folder to create (resumed if an identical run was interrupted).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Storage dtype of the difference (computed in float32).")
@click.option("--max-shard-size", default="5GB", show_default=True,
              help="Largest shard: bytes, or with a unit (500MB = 500*10^6 bytes, 2GiB = 2*2^30 bytes).")
@click.option("--allow-pickle", is_flag=True, help="Accept .bin (pickle) checkpoints. Pickle can run code: only for trusted sources.")
def task_vector_command(base: str, finetuned: str, out_dir: str, dtype: str, max_shard_size: str,
                        allow_pickle: bool) -> None:
    """Write the task vector FINETUNED - BASE (streamed, in float32) as an artifact folder."""
    from perta_hub.task_vector import task_vector

    out = task_vector(base, finetuned, out_dir, dtype=dtype, max_shard_size=max_shard_size, allow_pickle=allow_pickle)
    click.echo(f"task vector written to {out}")


@main.command("apply")
@click.argument("model")
@click.option("--task-vector", "task_vector_source", required=True, help="Task-vector artifact: folder or Hub id.")
@click.option("--weights", default=None, help="Weight-map artifact (folder or Hub id). Without it w = 1: plain task-vector negation.")
@click.option("--alpha", "alphas", multiple=True, required=True,
              help="Scale of the subtracted vector (a number). Repeat for a sweep: one output per alpha in OUT/alpha-A/.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: a complete transformers checkpoint (or one per alpha).")
@click.option("--p", "p", type=float, default=None, help="Exponent p in w = I_f^p / (I_f^p + lam I_r^p + eps) [default: the weight map's, 1].")
@click.option("--lam", type=float, default=None, help="Retention weight lam [default: the weight map's, 1].")
@click.option("--eps", type=float, default=None, help="Stabiliser eps, in importance units [default: the weight map's].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the fp32 math runs; auto picks cuda when a GPU is visible.")
@click.option("--max-shard-size", default="5GB", show_default=True,
              help="Largest output shard: bytes, or with a unit (500MB = 500*10^6 bytes, 2GiB = 2*2^30 bytes).")
@click.option("--allow-pickle", is_flag=True, help="Accept a .bin (pickle) target. Pickle can run code: only for trusted sources.")
def apply_command(model: str, task_vector_source: str, weights: str | None, alphas: tuple[str, ...], out_dir: str,
                  p: float | None, lam: float | None, eps: float | None, device: str, max_shard_size: str,
                  allow_pickle: bool) -> None:
    """Unlearn: theta = theta_MODEL - alpha * (w * tau), streamed shard by shard."""
    from perta_hub.merge import apply

    outs = apply(model, task_vector_source, alphas=list(alphas), out_dir=out_dir, weights=weights, p=p, lam=lam, eps=eps,
                 device=device, max_shard_size=max_shard_size, allow_pickle=allow_pickle)
    for folder in outs:
        click.echo(f"unlearned model written to {folder}")
