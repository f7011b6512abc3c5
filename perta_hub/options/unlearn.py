"""Options of ``perta-hub unlearn`` besides the training options (:mod:`perta_hub.unlearning.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import FOLDER, allow_pickle, max_shard_size

DATA_HELP = ("Hub dataset 'org/name:config' (e.g. locuslab/TOFU:forget01), 'tofu:CONFIG' (bundled TOFU copy) or a "
             "local .json/.jsonl/.parquet file of question/answer rows.")


@dataclass(frozen=True)
class UnlearnOptions(Options):
    """The method, its weights, the data, the output folder and how the weights are written."""

    command = "unlearn"

    method: str | None = option("--method", type=Choice(("ga", "gd", "npo")), required=True,
                                help="ga = GradAscent, gd = GradDiff (needs --retain), npo = NPO (frozen MODEL as "
                                     "reference; with --retain also the retain NLL).")
    forget: str | None = option("--forget", required=True, help="The data to forget: " + DATA_HELP)
    retain: str | None = option("--retain", help="The data to keep (gd; optional for npo): " + DATA_HELP)
    out_dir: str | None = option(
        "-o", "--output", type=FOLDER, required=True,
        help="Model folder to create (refused if it holds anything else; returned as is if it already "
             "holds this exact run).")
    gamma: float = option("--gamma", type=Range(float, min=0, min_open=True), default=1.0,
                          help="Weight of the forget term (gd, npo; open-unlearning gamma).")
    retain_weight: float | None = option(
        "--retain-weight", type=Range(float, min=0),
        help="Weight of the retain NLL (open-unlearning alpha) [default: 1 with --retain].")
    beta: float = option("--beta", type=Range(float, min=0, min_open=True), default=0.1,
                         help="NPO's inverse temperature (open-unlearning NPO: 0.1).")
    max_shard_size: int | str = max_shard_size("weight")
    allow_pickle: bool = allow_pickle("model")


UNLEARN = UnlearnOptions()
