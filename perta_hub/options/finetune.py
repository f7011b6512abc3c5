"""Options of ``perta-hub finetune`` besides the training options (:mod:`perta_hub.options.training`)."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, option
from perta_hub.options.common import FOLDER, allow_pickle, data_spec_help, max_shard_size


@dataclass(frozen=True)
class FinetuneOptions(Options):
    """The data, the output folder and how the weights are written."""

    command = "finetune"

    data: str | None = option(
        "--data", required=True,
        help="Question/answer data: " + data_spec_help("forget10") + ".")
    out_dir: str | None = option(
        "-o", "--output", type=FOLDER, required=True,
        help="Model folder to create (refused if it holds anything else; returned as is if it already "
             "holds this exact run).")
    max_shard_size: int | str = max_shard_size("weight")
    allow_pickle: bool = allow_pickle("model")


FINETUNE = FinetuneOptions()
