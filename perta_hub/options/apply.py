"""Options of ``perta-hub apply`` and the defaults of :func:`perta_hub.merge.apply.apply`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, option
from perta_hub.options.common import DEVICES, FOLDER, allow_pickle, eps_option, lam_option, max_shard_size, p_option


@dataclass(frozen=True)
class ApplyOptions(Options):
    """theta = theta_MODEL - alpha * (w * tau): the inputs besides MODEL, the sweep and the output."""

    command = "apply"

    task_vector: str | None = option("--task-vector", required=True, help="Task-vector artifact: folder or Hub id.")
    weights: str | None = option(
        "--weights", help="Weight-map artifact (folder or Hub id). Without it w = 1: plain task-vector negation.")
    alphas: tuple[str, ...] = option(
        "--alpha", multiple=True, default=(),
        help="Scale of the subtracted vector (a number > 0). Repeat for a sweep: one output per alpha in "
             "OUT/alpha-A/. Give --alpha or --step.")
    steps: tuple[str, ...] = option(
        "--step", multiple=True, default=(),
        help="Step norm ||alpha w*tau|| / ||tau|| to reach (a number > 0; 1 = the task vector's own step; w = 1 "
             "without --weights): alpha is set to S / (||w*tau|| / ||tau||), measured in one pass over the task "
             "vector and the weight map before merging. Repeat for a sweep: one output per step in OUT/step-S/. "
             "Excludes --alpha.")
    allow_negative_alpha: bool = option(
        "--allow-negative-alpha", is_flag=True, default=False,
        help="Accept --alpha <= 0: a negative alpha adds the forget data's knowledge back (learning it again), "
             "alpha 0 writes the target unchanged [default: refused].")
    out_dir: str | None = option("-o", "--output", type=FOLDER, required=True,
                                 help="Output folder: a complete transformers checkpoint (or one per alpha).")
    p: float | None = p_option()
    lam: float | None = lam_option()
    eps: float | None = eps_option()
    device: str = option("--device", type=DEVICES, default="auto",
                         help="Where the fp32 math runs; auto picks cuda when a GPU is visible.")
    max_shard_size: int | str = max_shard_size("output")
    allow_pickle: bool = allow_pickle("target")
    stream: bool = option(
        "--stream", is_flag=True, default=False,
        help="With --push: merge shard by shard from the Hub to the Hub, keeping only a few shards on local disk "
             "(chosen automatically when the disk cannot hold the output and the inputs being read).")
    dry_run: bool = option(
        "--dry-run", is_flag=True, default=False,
        help="Check the inputs from their headers and print the plan (shards, bytes to download and upload, peak "
             "disk and RAM, time); write nothing.")


APPLY = ApplyOptions()
