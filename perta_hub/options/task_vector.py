"""Options of ``perta-hub task-vector`` and the defaults of :func:`perta_hub.merge.task_vector.task_vector`.

The fine-tuning options of the ``MODEL --forget DATA`` form are :class:`perta_hub.options.training.TrainingOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Choice, Options, option
from perta_hub.options.common import FOLDER, allow_pickle, max_shard_size

#: storage dtypes of a task vector (computed in float32)
TASK_VECTOR_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TaskVectorOptions(Options):
    """Which checkpoints (or which model and forget data) and how the difference is stored."""

    command = "task-vector"

    forget: str | None = option(
        "--forget",
        help="With MODEL: forget data to fine-tune MODEL on first ('org/name:config' such as "
             "locuslab/TOFU:forget10, 'tofu:CONFIG' for the bundled copy, or a .json/.jsonl/.parquet file).")
    finetuned_dir: str | None = option(
        "--finetuned-dir", type=FOLDER,
        help="With MODEL --forget: keep the fine-tuned model in this folder [default: a temporary folder "
             "beside -o, deleted once the task vector is written].")
    base: str | None = option("--base",
                              help="Anchor model: folder, .safetensors file or Hub id org/name[@revision].")
    finetuned: str | None = option("--finetuned", help="The anchor fine-tuned on the forget data (same architecture).")
    out_dir: str | None = option("-o", "--output", type=FOLDER, required=True,
                                 help="Artifact folder to create (resumed if an identical run was interrupted).")
    dtype: str = option("--dtype", type=Choice(TASK_VECTOR_DTYPES), default="float32",
                        help="Storage dtype of the difference (computed in float32).")
    max_shard_size: int | str = max_shard_size("artifact")
    allow_pickle: bool = allow_pickle("checkpoint")
    dry_run: bool = option(
        "--dry-run", is_flag=True, default=False,
        help="With --base/--finetuned: check both checkpoints from their headers (Hub ids: no weight is "
             "downloaded) and print the plan (shards, bytes to download and upload, peak disk and RAM); write "
             "nothing.")


TASK_VECTOR = TaskVectorOptions()
