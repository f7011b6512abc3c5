"""Options of ``perta-hub compute-weights`` and the defaults of
:func:`perta_hub.importance.weight_map.compute_weights`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.importance import methods
from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import DEVICES, FOLDER, allow_pickle, data_dir, data_spec_help, max_shard_size

#: storage dtypes of the importances (computed in float32)
IMPORTANCE_DTYPES = ("bfloat16", "float16", "float32")
#: the role of MODEL in the task arithmetic
GRADIENTS_AT = ("target", "anchor")


@dataclass(frozen=True)
class ComputeWeightsOptions(Options):
    """The data, the importance method, sampling and how the weight map is stored."""

    command = "compute-weights"

    forget: str | None = option(
        "--forget", required=True,
        help="Forget data: " + data_spec_help("forget10") + ".")
    retain: str | None = option("--retain", required=True, help="Retain data, in the same forms as --forget.")
    method: str = option(
        "--method", type=methods.CHOICE, required=True, default="grad",
        help="; ".join(f"{m.name}: {m.help}" for m in methods.METHODS.values()) + ".")
    out_dir: str | None = option("-o", "--output", type=FOLDER, required=True,
                                 help="Weight-map artifact folder to create.")
    task_vector: str | None = option(
        "--task-vector",
        help="Task-vector artifact (folder or Hub id) the map is for: checked against MODEL first, and at the end "
             "||w*tau|| / ||tau|| over every tensor of it is printed (the step of apply --alpha 1; apply --step S "
             "sets alpha = S / it) [default: the selectivity summary only].")
    question_field: str = option("--question-field", default="question", help="Column holding the question.")
    answer_field: str = option("--answer-field", default="answer", help="Column holding the answer.")
    max_length: int = option(
        "--max-length", type=Range(int, min=2), default=512,
        help="Tokens per example (prompt + answer); longer examples are cut, and dropped if no answer "
             "token is left.")
    batch_size: int = option(
        "--batch-size", type=Range(int, min=1), default=8,
        help="Examples per forward/backward step (grad); examples loaded per step (fisher runs each "
             "example alone).")
    retain_fraction: float | None = option(
        "--retain-fraction", type=Range(float, min=0, max=1, min_open=True),
        help="Fraction (0, 1] of the retain rows to use, sampled with --seed [default: all rows].")
    max_examples: int | None = option(
        "--max-examples", type=Range(int, min=1),
        help="At most this many retain rows (examples), sampled with --seed [default: all rows].")
    seed: int = option("--seed", type=int, default=0, help="Seed of the retain subsample (an integer).")
    params: str | None = option(
        "--params",
        help="Regular expression (re.search) on parameter names: only matching parameters get importances; "
             "apply leaves the others unchanged (w = 0) unless --unrestricted-rest [default: every parameter].")
    unrestricted_rest: bool = option(
        "--unrestricted-rest", is_flag=True, default=False, needs="params",
        help="With --params: apply uses w = 1 (plain task arithmetic) for the parameters --params leaves out "
             "instead of leaving them unchanged [default: off, w = 0]; recorded as 'unrestricted'.")
    dtype: str = option(
        "--dtype", type=Choice(IMPORTANCE_DTYPES), default="bfloat16",
        help="Storage dtype of the importances (computed in float32); values that underflow to zero are "
             "counted and reported.")
    device: str = option(
        "--device", type=DEVICES, default="auto",
        help="Where gradients are computed; auto picks cuda when a GPU is visible (bf16 autocast there).")
    gradient_checkpointing: bool = option(
        "--gradient-checkpointing", is_flag=True, default=False,
        help="Recompute decoder layers during backward: one layer's activations kept instead of all, "
             "one extra forward pass per step [default: off].")
    gradients_at: str = option(
        "--gradients-at", type=Choice(GRADIENTS_AT), default="target",
        help="Role of MODEL in the task arithmetic (recorded in perta_config.json): the model being "
             "unlearned (target) or the anchor of the task vector.")
    data_dir: str | None = data_dir("Folder of <config>.json files that 'repo:config' data specs resolve to "
                                    "(offline copy).")
    max_shard_size: int | str = max_shard_size("artifact")
    allow_pickle: bool = allow_pickle("model")


COMPUTE_WEIGHTS = ComputeWeightsOptions()
