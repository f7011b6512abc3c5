"""A Trainer run that writes a model folder, as ``finetune`` and ``unlearn`` both do it.

:func:`plan_steps` (the Trainer's batch arithmetic), :func:`begin` (processes, status lines, device),
:func:`encode` (data rows to token ids and their record), :func:`training_recipe` (what the run is decided
by), :func:`output_folder` (this run already there, another run there, or a folder to claim) and
:func:`trained` (claim, train, measure, and the trained weights to save). Each command keeps only what is
its own: its data, its Trainer, its record and card.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from perta_hub.errors import DataError, OutputError
from perta_hub.options.training import EFFECTIVE_BATCH, TrainingOptions


def plan_steps(num_examples: int, options: TrainingOptions, num_processes: int) -> dict[str, int]:
    """Batch arithmetic, as the Trainer does it.

    Returns:
        ``grad_accum``, ``effective_batch`` (= batch_size * grad_accum * processes), ``steps_per_epoch``
        (optimizer steps: ceil(ceil(n / (batch_size * processes)) / grad_accum)), ``total_steps``
        (``max_steps``, or ceil(epochs * steps_per_epoch)) and ``warmup_steps``
        (:meth:`~perta_hub.options.training.TrainingOptions.warmup_steps`).
    """
    per_step = options.batch_size * num_processes
    grad_accum = options.grad_accum or max(1, math.ceil(EFFECTIVE_BATCH / per_step))
    batches = math.ceil(num_examples / per_step)
    steps_per_epoch = max(1, math.ceil(batches / grad_accum))
    total = options.max_steps or math.ceil(options.epochs * steps_per_epoch)
    warmup = options.warmup_steps(steps_per_epoch, total)
    return {"grad_accum": grad_accum, "effective_batch": per_step * grad_accum, "steps_per_epoch": steps_per_epoch,
            "total_steps": total, "warmup_steps": warmup}


@dataclass
class Begun:
    """The processes of a run: accelerate's state, whether this is the main one, its status lines, the device."""

    state: Any
    is_main: bool
    say: Callable[[str], None]
    device: str


def begin(opts: TrainingOptions, name: str, echo: Callable[[str], None] | None) -> Begun:
    """Join the launch (one process, or each of ``accelerate launch``), resolve the device and refuse a
    DeepSpeed set-up that could not save the weights, before anything is loaded."""
    from accelerate import PartialState

    from perta_hub.runtime.devices import resolve_device
    from perta_hub.runtime.distributed import SINGLE_CPU_PROCESS_NOTE, single_process_cpu_launch
    from perta_hub.training.trainer import check_deepspeed_saving

    state = PartialState(cpu=opts.device == "cpu")
    is_main = state.is_main_process
    say = echo or ((lambda line: print(line, file=sys.stderr, flush=True)) if is_main else (lambda line: None))
    if single_process_cpu_launch(state):
        say(f"{name}: " + SINGLE_CPU_PROCESS_NOTE.format(consequence="the recipe is unchanged (same effective batch)"))
    device = resolve_device(opts.device)
    check_deepspeed_saving()
    return Begun(state, is_main, say, device)


def data_sha256(examples: Sequence[Any]) -> str:
    """sha256 of the encoded token ids and labels: what the model was actually trained on."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.labels]).encode())
    return digest.hexdigest()


def encode(tokenizer: Any, spec: str, opts: TrainingOptions, what: str, *, details: bool = False
           ) -> tuple[Any, dict[str, Any]]:
    """The encoded rows of data ``spec`` and what the record says of them (``details``: also the token count,
    the dropped and the truncated examples). A data error names ``what`` (``data``, ``forget data``)."""
    from perta_hub.data import describe_data, encode_dataset, load_qa

    try:
        rows = load_qa(spec, data_dir=opts.data_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported by the caller, once
            encoded = encode_dataset(tokenizer, rows, question_field=opts.question_field,
                                     answer_field=opts.answer_field, max_length=opts.max_length)
    except DataError as err:
        raise DataError(f"{what} {spec!r}: {err}") from err
    info = {**describe_data(spec, opts.data_dir), "split": "train", "question_field": opts.question_field,
            "answer_field": opts.answer_field, "num_rows": len(rows), "num_examples": len(encoded),
            "num_answer_tokens": encoded.num_answer_tokens}
    if details:
        info.update(num_tokens=sum(len(e.input_ids) for e in encoded),
                    dropped_answer_beyond_max_length=len(encoded.dropped), truncated=len(encoded.truncated))
    info["sha256"] = data_sha256(encoded)
    return encoded, info


def training_recipe(opts: TrainingOptions, plan: dict[str, int], num_processes: int, device: str,
                    save_dtype: str) -> dict[str, Any]:
    """The resolved recipe, as recorded (and hashed into the run id): ``train_dtype`` ``auto`` resolved
    (bfloat16 on a GPU, float32 elsewhere), bf16 autocast on a GPU; LoRA's settings where the command
    trains adapters."""
    recipe: dict[str, Any] = {
        "epochs": opts.epochs, "lr": opts.lr, "optimizer": opts.optim, "lr_scheduler": "linear",
        "weight_decay": opts.weight_decay, "warmup_epochs": opts.warmup, "warmup_steps": plan["warmup_steps"],
        "batch_size": opts.batch_size, "grad_accum": plan["grad_accum"], "num_processes": num_processes,
        "effective_batch": plan["effective_batch"], "steps_per_epoch": plan["steps_per_epoch"],
        "total_steps": plan["total_steps"], "max_steps": opts.max_steps, "max_length": opts.max_length,
        "seed": opts.seed,
        "train_dtype": opts.train_dtype if opts.train_dtype != "auto" else ("bfloat16" if device == "cuda"
                                                                           else "float32"),
        "bf16_autocast": device == "cuda", "gradient_checkpointing": opts.gradient_checkpointing,
    }
    if opts.adapters:
        recipe["lora_rank"] = opts.lora_rank
    recipe["save_dtype"] = save_dtype
    if opts.lora_rank is not None:
        recipe.update(lora_alpha=float(opts.lora_alpha if opts.lora_alpha is not None else 2 * opts.lora_rank),
                      lora_targets=opts.lora_targets)
    return recipe


def steps_line(plan: dict[str, int], opts: TrainingOptions, num_processes: int, examples: str = "examples") -> str:
    """``N steps of B examples (b x a accumulation x p processes)`` for a status line."""
    return (f"{plan['total_steps']} steps of {plan['effective_batch']} {examples} ({opts.batch_size} x "
            f"{plan['grad_accum']} accumulation x {num_processes} processes)")


def output_folder(out: Path, run_id: str, ckpt: Any, begun: Begun, name: str, *, replace_other_run: bool,
                  other: str) -> Any:
    """The :class:`~perta_hub.io.output_folder.OutputFolder` to train into, or None when ``out`` already holds
    this run. A folder holding another perta-hub run (``other``: what it is called) is refused, or deleted with
    ``replace_other_run`` (scratch folders)."""
    from perta_hub.io.output_folder import FolderState, OutputFolder

    folder = OutputFolder(out, run_id, [ckpt.root])
    now = folder.state()
    if now is FolderState.COMPLETE:
        begun.say(f"{name}: {out} already holds this run (run id {run_id}); nothing to train")
        return None
    if now is FolderState.FOREIGN:
        if not replace_other_run:
            raise OutputError(f"{out} holds another {other} (other model, data or options); choose another folder or "
                              "remove it")
        begun.state.wait_for_everyone()
        if begun.is_main:
            shutil.rmtree(out)  # our own scratch folder from an earlier, different run
    begun.state.wait_for_everyone()  # every process has checked the folder before the main one claims it
    return folder


@dataclass(kw_only=True)
class TrainingResult:
    """What a training command did (times in seconds, memory in bytes); the command's result adds its own.

    Attributes:
        out_dir: the model folder.
        steps: optimizer steps taken; effective_batch: examples per step over all processes.
        train_seconds: the Trainer's time; seconds: the whole call (loading, training, saving).
        peak_memory_bytes, peak_memory_kind: GPU max allocated, or the process's max RSS on CPU.
        reused: True when the folder already held this exact run (nothing was trained).
        is_main: True on the process that wrote the folder.
    """

    command: ClassVar[str] = ""

    out_dir: Path
    steps: int
    effective_batch: int
    train_seconds: float
    seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    reused: bool = False
    is_main: bool = True

    def final_line(self) -> str:
        """One line for the terminal."""
        if self.reused:
            return f"{self.command}: {self.out_dir} already holds this run; nothing trained"
        return (f"{self.command}: {self.trained()}, peak memory {self.peak_memory_bytes / 2**30:.2f} GiB "
                f"({self.peak_memory_kind}); model in {self.out_dir}")

    def trained(self) -> str:
        """What was trained on what, how long and to which loss (the middle of :meth:`final_line`)."""
        return f"{self.steps} steps (effective batch {self.effective_batch}) in {self.train_seconds:.1f} s"


def recorded(out: Path, results: dict[str, Any], training: dict[str, Any], seconds: float,
             is_main: bool) -> dict[str, Any]:
    """The :class:`TrainingResult` fields of a run recorded earlier (``reused``), from its record."""
    return {"out_dir": out, "steps": int(results.get("steps", 0)),
            "effective_batch": int(training.get("effective_batch", 0)),
            "train_seconds": float(results.get("train_seconds", 0.0)), "seconds": seconds,
            "peak_memory_bytes": int(results.get("peak_memory_bytes", 0)),
            "peak_memory_kind": str(results.get("peak_memory_kind", "")), "reused": True, "is_main": is_main}


@dataclass
class Trained:
    """What a Trainer run left: the trainer, its output, the measurements, the weights gathered for saving.

    Attributes:
        state_dict: the full weights, gathered on every process (FSDP / DeepSpeed shard them).
        use_cache: the model config's own ``use_cache`` (turned off while training).
        history: ``{"step", "epoch", "loss"}`` per logging step (once per epoch).
        last_loss: the last logged loss (the last epoch's mean), else the mean over the run.
        seconds: the Trainer's own time; peak, peak_kind: as :func:`perta_hub.runtime.memory.peak_memory`.
    """

    trainer: Any
    output: Any
    use_cache: bool
    state_dict: Any
    peak: int
    peak_kind: str
    seconds: float
    history: list[dict[str, Any]]
    last_loss: float

    @property
    def steps(self) -> int:
        return int(self.trainer.state.global_step)

    @property
    def net(self) -> Any:
        """The trained model, unwrapped from accelerate."""
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def result(self, out: Path, plan: dict[str, int], seconds: float, is_main: bool) -> dict[str, Any]:
        """The :class:`TrainingResult` fields of this run (``seconds``: the whole call)."""
        return {"out_dir": out, "steps": self.steps, "effective_batch": plan["effective_batch"],
                "train_seconds": self.seconds, "seconds": seconds, "peak_memory_bytes": self.peak,
                "peak_memory_kind": self.peak_kind, "is_main": is_main}

    def save(self, out: Path, save_dtype: str, max_shard_size: int | str) -> None:
        """Write the whole model's weights and config in ``out`` (in ``save_dtype``)."""
        from perta_hub.training.saving import save_model

        net = self.net
        net.config.use_cache = self.use_cache
        save_model(net, self.state_dict, out, save_dtype, max_shard_size)


@contextmanager
def trained(begun: Begun, folder: Any, ckpt: Any, out: Path, run_trainer: Callable[[], Any]) -> Iterator[Trained]:
    """Claim ``folder`` (main process), run ``run_trainer()`` (``training.trainer.train``'s triple) and give what
    it left; the block writes the folder (the side files of ``ckpt`` are copied first) and finishes it.
    After the block every process has waited for the others and ``ckpt`` is closed."""
    from perta_hub.io.output_folder import copy_side_files
    from perta_hub.runtime.memory import peak_memory

    with ExitStack() as stack:
        if begun.is_main:
            stack.enter_context(folder)
            folder.claim(ckpt.total_bytes)
        trainer, output, use_cache = run_trainer()
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        peak, peak_kind = peak_memory(begun.device)
        history = [{"step": h["step"], "epoch": round(float(h["epoch"]), 4), "loss": h["loss"]}
                   for h in trainer.state.log_history if "loss" in h]
        run = Trained(trainer, output, use_cache, state_dict, peak, peak_kind,
                      float(output.metrics.get("train_runtime", 0.0)), history,
                      float(history[-1]["loss"]) if history else float(output.training_loss))
        if begun.is_main:
            copy_side_files(ckpt.root, out)
        yield run
        run.state_dict = None
    begun.state.wait_for_everyone()
    ckpt.close()


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
