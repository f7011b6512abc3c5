"""The training recipe of ``finetune``, ``task-vector MODEL --forget`` and ``unlearn``: :class:`TrainingOptions`
(the TOFU forget-set fine-tuning recipe: 5 epochs, lr 1e-5, effective batch 32, 1 warmup epoch) and
:class:`UnlearnTrainingOptions` (the same fields with the reference framework's unlearning defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from perta_hub.errors import InputError
from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import DEVICES, MODEL_DTYPES, data_dir

#: examples per optimizer step over all processes, unless --grad-accum says otherwise
EFFECTIVE_BATCH = 32
#: --train-dtype: the weights' dtype while training
TRAIN_DTYPES = Choice(("auto", "bfloat16", "float32"))
#: ``unlearn``'s default warmup (``--warmup`` not given): open-unlearning's ``warmup_epochs: 1`` over its 10 epochs,
#: i.e. one epoch but at most this percentage of the run's optimizer steps (rounded down), so that a short run is not
#: warmup only (one epoch of forget01 at effective batch 32 is 2 steps: no warmup; 10 epochs: 2 of 20 steps)
UNLEARN_WARMUP_EPOCHS = 1.0
UNLEARN_WARMUP_MAX_PERCENT = 10
#: optimizers (TrainingArguments ``optim`` names) that need the optional bitsandbytes package
_BNB_MARKERS = ("bnb", "8bit", "paged", "lion_32bit", "ademamix")


@dataclass(frozen=True)
class TrainingOptions(Options):
    """The fine-tuning recipe (defaults: the TOFU forget-set fine-tuning recipe).

    Attributes:
        epochs: passes over the data (5); fractional values stop part-way through the last epoch.
        lr: peak learning rate of AdamW (1e-5), reached after the warmup, then linear decay to 0.
        batch_size: examples per process per forward/backward (4).
        grad_accum: micro-batches per optimizer step; None -> ``ceil(32 / (batch_size * processes))``,
            so that the effective batch ``batch_size * grad_accum * processes`` is 32.
        weight_decay: AdamW decoupled weight decay (0.01).
        warmup: linear warmup length in epochs (1.0), converted to optimizer steps; None (``unlearn``'s default):
            :data:`UNLEARN_WARMUP_EPOCHS`, at most :data:`UNLEARN_WARMUP_MAX_PERCENT` % of the steps
            (:meth:`warmup_steps`).
        max_length: tokens per example (prompt + answer, 512); longer examples are cut.
        seed: seed of the data order and of the LoRA initialisation (0).
        gradient_checkpointing: recompute activations in backward (less memory, ~30% more time).
        device: ``auto`` (cuda when visible), ``cpu`` or ``cuda``.
        train_dtype: weights' dtype during training: ``auto`` = bfloat16 on GPU (bf16 weights, gradients
            and AdamW states, as the TOFU recipe), float32 on CPU; ``float32`` on GPU trains fp32 weights
            under bf16 autocast (mixed precision, 2x the memory).
        save_dtype: dtype of the saved weights: ``auto`` = the base model's own (float32 training on a CPU
            does not turn a bf16 model into a float32 one).
        optim: TrainingArguments optimizer name (``adamw_torch``); ``adamw_bnb_8bit``,
            ``paged_adamw_8bit``... need bitsandbytes (an optional extra).
        max_steps: stop after this many optimizer steps (overrides ``epochs``; None = by epochs).
        lora_rank: fine-tune LoRA adapters of this rank instead of the whole model (None = full).
        lora_alpha: LoRA alpha (None -> 2 * rank).
        lora_targets: ``all-linear`` or comma-separated module names for LoRA.
        question_field, answer_field: columns of the data.
        data_dir: folder of ``<config>.json`` files that ``repo:config`` data specs resolve to.
    """

    #: whether --lora-rank may train adapters instead of the whole model (``unlearn``: no)
    adapters: ClassVar[bool] = True

    epochs: float = option("--epochs", type=Range(float, min=0, min_open=True), default=5.0,
                           help="Passes over the data (TOFU recipe: 5); a fraction stops part-way through the last one.")
    lr: float = option("--lr", type=Range(float, min=0, min_open=True), default=1e-5,
                       help="Peak learning rate of AdamW, reached after --warmup, then linear decay to 0.")
    batch_size: int = option("--batch-size", type=Range(int, min=1), default=4,
                             help="Examples per process per forward/backward (micro-batch).")
    grad_accum: int | None = option(
        "--grad-accum", type=Range(int, min=1),
        help=f"Micro-batches per optimizer step [default: ceil({EFFECTIVE_BATCH} / (batch-size x processes)), so "
             f"that batch-size x grad-accum x processes = {EFFECTIVE_BATCH} examples per step].")
    weight_decay: float = option("--weight-decay", type=Range(float, min=0), default=0.01,
                                 help="AdamW decoupled weight decay.")
    warmup: float = option("--warmup", type=Range(float, min=0), default=1.0,
                           help="Linear learning-rate warmup, in epochs (converted to optimizer steps).")
    max_length: int = option("--max-length", type=Range(int, min=2), default=512,
                             help="Tokens per example (prompt + answer); longer ones are cut, and dropped if no "
                                  "answer token is left.")
    seed: int = option("--seed", type=int, default=0,
                       help="Seed of the data order and of the LoRA initialisation (an integer).")
    gradient_checkpointing: bool = option(
        "--gradient-checkpointing", is_flag=True, default=False,
        help="Recompute activations in backward: less memory, about 30% more time [default: off].")
    device: str = option("--device", type=DEVICES, default="auto",
                         help="auto picks cuda when a GPU is visible (then bf16); under `accelerate launch` each "
                              "process takes its own GPU.")
    train_dtype: str = option(
        "--train-dtype", type=TRAIN_DTYPES, default="auto",
        help="Weights' dtype while training: auto = bfloat16 on GPU (bf16 weights, gradients and AdamW "
             "states), float32 on CPU; float32 on GPU = mixed precision (bf16 autocast, 2x memory).")
    save_dtype: str = option(
        "--save-dtype", type=MODEL_DTYPES, default="auto",
        help="dtype of the saved weights: auto = the base model's (a bf16 model stays bf16 whatever it was "
             "trained in).")
    optim: str = option("--optim", default="adamw_torch",
                        help="transformers optimizer name; adamw_bnb_8bit / paged_adamw_8bit need the optional "
                             "bitsandbytes package.")
    max_steps: int | None = option(
        "--max-steps", type=Range(int, min=1),
        help="Stop after this many optimizer steps (overrides --epochs) [default: by epochs].")
    lora_rank: int | None = option(
        "--lora-rank", type=Range(int, min=1),
        help="Fine-tune LoRA adapters of rank R (peft) instead of the whole model [default: full fine-tuning].")
    lora_alpha: float | None = option("--lora-alpha", type=Range(float, min=0, min_open=True), needs="lora_rank",
                                      help="LoRA alpha; the update is (alpha / R) * B @ A [default: 2 x R].")
    lora_targets: str = option(
        "--lora-targets", default="all-linear",
        help="Modules that get adapters: all-linear (every linear layer but the output head) or "
             "comma-separated names such as q_proj,v_proj.")
    question_field: str = option("--question-field", default="question", help="Column holding the question.")
    answer_field: str = option("--answer-field", default="answer", help="Column holding the answer.")
    data_dir: str | None = data_dir("Folder of <config>.json files that 'repo:config' data specs resolve to "
                                    "(offline copy).")

    def warmup_steps(self, steps_per_epoch: int, total_steps: int) -> int:
        """The warmup in optimizer steps: ``round(warmup * steps_per_epoch)`` (at most the run); without a
        ``warmup`` (unlearn's default) one epoch, at most :data:`UNLEARN_WARMUP_MAX_PERCENT` % of ``total_steps``."""
        if self.warmup is None:
            return min(round(UNLEARN_WARMUP_EPOCHS * steps_per_epoch), total_steps * UNLEARN_WARMUP_MAX_PERCENT // 100)
        return min(total_steps, round(self.warmup * steps_per_epoch))

    def check(self) -> None:
        """What no field declares: the warmup within the run, LoRA where the command trains adapters, an
        optimizer whose package is installed."""
        if self.max_steps is None and self.warmup is not None and self.warmup > self.epochs:
            raise InputError(f"--warmup {self.warmup} epochs is longer than --epochs {self.epochs}; lower it")
        if self.lora_rank is not None and not self.adapters:
            raise InputError(f"{self.command} trains the whole model; --lora-rank is not supported here (drop it)")
        if any(marker in self.optim for marker in _BNB_MARKERS):
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise InputError(f"--optim {self.optim} needs bitsandbytes (an optional extra, CUDA only): "
                                 "pip install bitsandbytes, or use --optim adamw_torch")


@dataclass(frozen=True)
class UnlearnTrainingOptions(TrainingOptions):
    """:class:`TrainingOptions` with the unlearning defaults (10 epochs; open-unlearning, see ``docs/unlearn.md``).

    ``epochs`` count passes over the *forget* data (the retain data is sampled beside it, one retain
    example per forget example, as the reference's ``ForgetRetainDataset`` with the forget set as anchor).
    ``unlearn`` trains the whole model: ``--lora-rank`` is refused.
    """

    command = "unlearn"
    adapters = False

    epochs: float = option("--epochs", type=Range(float, min=0, min_open=True), default=10.0,
                           help="Passes over the forget data (open-unlearning TOFU unlearning: 10); a fraction stops "
                                "part-way through the last one.")
    warmup: float | None = option(  # type: ignore[assignment]
        "--warmup", type=Range(float, min=0),
        help=f"Linear learning-rate warmup, in epochs (converted to optimizer steps) [default: "
             f"{UNLEARN_WARMUP_EPOCHS:g} epoch as open-unlearning, but at most {UNLEARN_WARMUP_MAX_PERCENT}% of the "
             "optimizer steps, so a short run is not warmup only].")
