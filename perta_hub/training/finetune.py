"""``finetune``: the privacy-tuned model (the anchor fine-tuned on the forget set), on transformers' Trainer.

Supervised fine-tuning on question/answer rows, formatted by :mod:`perta_hub.data` exactly as
``compute-weights`` and ``evaluate`` see them (loss on the answer tokens only). :func:`prepare` decides the
run (options, model, data, recipe, run id); :mod:`perta_hub.training.trainer` runs transformers' ``Trainer``
(one process on CPU or one GPU, or several through ``accelerate launch``: DDP, FSDP or DeepSpeed configs);
:func:`finetune` claims the output and writes a plain transformers checkpoint with a card and a
``perta_config.json`` of kind ``finetuned_model``. The convenience path ``task-vector MODEL --forget DATA`` is
:mod:`perta_hub.training.from_data`. See ``docs/finetune.md``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.encoding import load_tokenizer
from perta_hub.errors import DataError, OutputError
from perta_hub.io.output_folder import refuse_unusable
from perta_hub.options.training import TrainingOptions
from perta_hub.records import FinetunedModelRecord, read_record
from perta_hub.runtime.devices import resolve_device
from perta_hub.runtime.distributed import SINGLE_CPU_PROCESS_NOTE, single_process_cpu_launch
from perta_hub.training.run import plan_steps
from perta_hub.training.saving import resolve_save_dtype, save_model

KIND = "finetuned_model"


@dataclass
class FinetuneResult:
    """What :func:`finetune` did (times in seconds, memory in bytes).

    Attributes:
        out_dir: the model folder.
        num_examples, num_answer_tokens: the encoded training data.
        steps: optimizer steps taken; effective_batch: examples per step over all processes.
        train_loss: the last epoch's mean training loss (nats per answer token).
        tokens: non-padding tokens processed (all processes, all epochs).
        train_seconds: Trainer time; tokens_per_second = tokens / train_seconds.
        seconds: wall time of the whole call (loading, training, saving).
        peak_memory_bytes, peak_memory_kind: GPU max allocated, or the process's max RSS on CPU.
        reused: True when the folder already held this exact run (nothing was trained).
        is_main: True on the process that wrote the folder.
    """

    out_dir: Path
    num_examples: int
    num_answer_tokens: int
    steps: int
    effective_batch: int
    train_loss: float
    tokens: int
    train_seconds: float
    tokens_per_second: float
    seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    reused: bool = False
    is_main: bool = True

    def final_line(self) -> str:
        """One line for the terminal."""
        if self.reused:
            return f"finetune: {self.out_dir} already holds this run; nothing trained"
        return (f"finetune: {self.steps} steps (effective batch {self.effective_batch}) on {self.num_examples} "
                f"examples in {self.train_seconds:.1f} s, {self.tokens_per_second:.0f} tokens/s, last-epoch loss "
                f"{self.train_loss:.4f}, peak memory {self.peak_memory_bytes / 2**30:.2f} GiB "
                f"({self.peak_memory_kind}); model in {self.out_dir}")


def _data_sha256(examples: Sequence[Any]) -> str:
    """sha256 of the encoded token ids and labels: what the model was actually trained on."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.labels]).encode())
    return digest.hexdigest()



@dataclass
class Prepared:
    """Everything a fine-tuning run is decided by, before any training (see :func:`prepare`).

    Attributes:
        run_id: hash of the base's identity, the encoded data (sha256 of the token ids), the resolved
            recipe and the shard size: equal run ids mean the same fine-tuned model.
    """

    state: Any
    is_main: bool
    say: Callable[[str], None]
    device: str
    ckpt: Any
    tokenizer: Any
    encoded: Any
    plan: dict[str, int]
    train_dtype: str
    bf16_autocast: bool
    data_info: dict[str, Any]
    recipe: dict[str, Any]
    run_id: str


def prepare(model: str | Path, data: str, opts: TrainingOptions, *, max_shard_size: int | str = "5GB",
            allow_pickle: bool = False, echo: Callable[[str], None] | None = None) -> Prepared:
    """Open the model and its tokenizer, encode the data and resolve the recipe (``opts`` is checked)."""
    from accelerate import PartialState

    state = PartialState(cpu=opts.device == "cpu")
    is_main = state.is_main_process
    say = echo or ((lambda line: print(line, file=sys.stderr, flush=True)) if is_main else (lambda line: None))
    if single_process_cpu_launch(state):
        say("finetune: " + SINGLE_CPU_PROCESS_NOTE.format(consequence="the recipe is unchanged (same effective batch)"))
    device = resolve_device(opts.device)
    from perta_hub.training.trainer import check_deepspeed_saving

    check_deepspeed_saving()

    from perta_hub.data import describe_data, encode_dataset, load_qa
    from perta_hub.io.output_folder import make_run_id
    from perta_hub.io.reader import open_checkpoint

    ckpt = open_checkpoint(model, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(ckpt.root, str(model))
    try:
        rows = load_qa(data, data_dir=opts.data_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported below, once
            encoded = encode_dataset(tokenizer, rows, question_field=opts.question_field,
                                     answer_field=opts.answer_field, max_length=opts.max_length)
    except DataError as err:
        raise DataError(f"data {data!r}: {err}") from err
    say(f"finetune: data {data}: {encoded.report()}")

    plan = plan_steps(len(encoded), opts, state.num_processes)
    train_dtype = opts.train_dtype if opts.train_dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    bf16_autocast = device == "cuda"
    data_info = {**describe_data(data, opts.data_dir), "split": "train", "question_field": opts.question_field,
                 "answer_field": opts.answer_field, "num_rows": len(rows), "num_examples": len(encoded),
                 "num_answer_tokens": encoded.num_answer_tokens, "num_tokens": sum(len(e.input_ids) for e in encoded),
                 "dropped_answer_beyond_max_length": len(encoded.dropped), "truncated": len(encoded.truncated),
                 "sha256": _data_sha256(encoded)}
    recipe = {
        "epochs": opts.epochs, "lr": opts.lr, "optimizer": opts.optim, "lr_scheduler": "linear",
        "weight_decay": opts.weight_decay, "warmup_epochs": opts.warmup, "warmup_steps": plan["warmup_steps"],
        "batch_size": opts.batch_size, "grad_accum": plan["grad_accum"], "num_processes": state.num_processes,
        "effective_batch": plan["effective_batch"], "steps_per_epoch": plan["steps_per_epoch"],
        "total_steps": plan["total_steps"], "max_steps": opts.max_steps, "max_length": opts.max_length,
        "seed": opts.seed, "train_dtype": train_dtype, "bf16_autocast": bf16_autocast,
        "gradient_checkpointing": opts.gradient_checkpointing, "lora_rank": opts.lora_rank,
        "save_dtype": resolve_save_dtype(opts.save_dtype, ckpt),
    }
    if opts.lora_rank is not None:
        recipe.update(lora_alpha=float(opts.lora_alpha if opts.lora_alpha is not None else 2 * opts.lora_rank),
                      lora_targets=opts.lora_targets)
    run_id = make_run_id({"kind": KIND, "base": ckpt.identity, "data": data_info["sha256"], "recipe": recipe,
                          "max_shard_size": str(max_shard_size)})
    return Prepared(state, is_main, say, device, ckpt, tokenizer, encoded, plan, train_dtype, bf16_autocast,
                    data_info, recipe, run_id)


def finetune(
    model: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    options: TrainingOptions | None = None,
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    replace_other_run: bool = False,
    data_role: str = "training",
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` on the QA ``data`` and save a transformers checkpoint in ``out_dir``.

    Args:
        model: local model folder or Hub id ``org/name[@revision]`` (safetensors, with its tokenizer).
        data: data spec for :func:`perta_hub.data.load_qa` (``locuslab/TOFU:forget10``, ``tofu:forget10``,
            a .json/.jsonl/.parquet file).
        out_dir: folder to create: config, tokenizer, ``model-*.safetensors`` + index, ``README.md``,
            ``perta_config.json`` (and ``adapter/`` with LoRA). Refused if it holds anything else; a
            folder that already holds this exact run is returned as it is.
        options: the recipe (:class:`TrainingOptions`); ``overrides`` set single fields
            (``finetune(m, d, o, epochs=3, lr=2e-5)``).
        max_shard_size: largest weight shard of the output (``5GB``, ``500MB`` or bytes).
        allow_pickle: accept a ``.bin`` model (converted to a temporary safetensors copy first).
        progress: tqdm bars and per-epoch loss lines (main process).
        echo: where status lines go (default: stderr on the main process).
        replace_other_run: delete ``out_dir`` when it holds an earlier perta-hub run with other inputs
            (for scratch folders; a folder holding anything else is still refused).
        data_role: ``training`` (the card says what was trained on what) or ``forget`` (``task-vector
            --forget``: the forget-data card and the private default on push).
    Returns:
        :class:`FinetuneResult`.
    """
    import torch

    start = time.perf_counter()
    opts = TrainingOptions.resolve(options, overrides)
    out = Path(out_dir).expanduser()
    refuse_unusable(out)
    prep = prepare(model, data, opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle, echo=echo)
    state, is_main, say, device = prep.state, prep.is_main, prep.say, prep.device
    ckpt, tokenizer, encoded, plan = prep.ckpt, prep.tokenizer, prep.encoded, prep.plan
    train_dtype, bf16_autocast, data_info, recipe, run_id = (prep.train_dtype, prep.bf16_autocast, prep.data_info,
                                                             prep.recipe, prep.run_id)

    from perta_hub.cards.finetuned import finetuned_card
    from perta_hub.cards.trained import trained_card
    from perta_hub.io.compat import architecture
    from perta_hub.io.output_folder import FolderState, OutputFolder, copy_side_files, current_command
    from perta_hub.runtime.memory import peak_memory
    from perta_hub.training.trainer import save_lora, train

    folder = OutputFolder(out, run_id, [ckpt.root])
    state_now = folder.state()
    if state_now is FolderState.COMPLETE:
        done = folder_record(out)
        say(f"finetune: {out} already holds this run (run id {run_id}); nothing to train")
        return result_from_config(out, done.results, done.data, done.training, time.perf_counter() - start, is_main)
    if state_now is FolderState.FOREIGN:
        if not replace_other_run:
            raise OutputError(f"{out} holds another fine-tuning run (other model, data or options); choose "
                              "another folder or remove it")
        state.wait_for_everyone()
        if is_main:
            shutil.rmtree(out)  # our own scratch folder from an earlier, different run
    state.wait_for_everyone()  # every process has checked the folder before the main one claims it

    say(f"finetune: {'LoRA rank ' + str(opts.lora_rank) if opts.lora_rank else 'full'} fine-tuning of {model} on "
        f"{device} ({train_dtype} weights{', bf16 autocast' if bf16_autocast else ''}"
        f"{f', {state.num_processes} processes' if state.num_processes > 1 else ''}): {plan['total_steps']} steps "
        f"of {plan['effective_batch']} examples ({opts.batch_size} x {plan['grad_accum']} accumulation x "
        f"{state.num_processes} processes)")
    with ExitStack() as stack:
        if is_main:
            stack.enter_context(folder)
            folder.claim(ckpt.total_bytes)
        trainer, train_output, use_cache = train(ckpt.root, str(model), encoded, tokenizer.pad_token_id, opts, plan,
                                                 train_dtype, device, bf16_autocast, progress, say)
        # gathered on every process (FSDP / DeepSpeed shard the weights), written by the main one
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        peak, peak_kind = peak_memory(device)
        tokens = int(trainer.state.num_input_tokens_seen)
        seconds = float(train_output.metrics.get("train_runtime", 0.0))
        history = [{"step": h["step"], "epoch": round(float(h["epoch"]), 4), "loss": h["loss"]}
                   for h in trainer.state.log_history if "loss" in h]
        # the last epoch's mean loss (the Trainer logs once per epoch); the mean over the whole run beside it
        last = float(history[-1]["loss"]) if history else float(train_output.training_loss)
        results = {"train_loss": last, "train_loss_mean_over_run": float(train_output.training_loss),
                   "steps": int(trainer.state.global_step),
                   "tokens": tokens, "train_seconds": seconds,
                   "tokens_per_second": tokens / seconds if seconds > 0 else 0.0, "loss_history": history,
                   "device": device, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind}
        if is_main:
            copy_side_files(ckpt.root, out)
            net = trainer.accelerator.unwrap_model(trainer.model)
            lora_info = None
            if opts.lora_rank is not None:
                lora_info = save_lora(net, state_dict, ckpt.root, str(model), out, recipe["save_dtype"],
                                      max_shard_size)
            else:
                net.config.use_cache = use_cache
                save_model(net, state_dict, out, recipe["save_dtype"], max_shard_size)
            record = FinetunedModelRecord.build({
                "data_role": data_role,
                "command": current_command(),
                "base": ckpt.provenance(),
                "base_config": architecture(ckpt.config),
                "num_parameters": ckpt.num_parameters,
                "data": data_info,
                "training": recipe,
                "lora_rank": opts.lora_rank,
                "lora": lora_info,
                "results": results,
                "library": {"transformers": _version("transformers"), "torch": torch.__version__,
                            "peft": _version("peft") if opts.lora_rank else None},
                "run_id": run_id,
            })
            card = finetuned_card if data_role == "forget" else trained_card
            folder.finish(record, card(record.to_dict()))
        del state_dict
    state.wait_for_everyone()
    ckpt.close()
    return FinetuneResult(out, len(encoded), encoded.num_answer_tokens, results["steps"], plan["effective_batch"],
                          results["train_loss"], tokens, seconds, results["tokens_per_second"],
                          time.perf_counter() - start, peak, peak_kind, False, is_main)


def folder_record(out: Path) -> FinetunedModelRecord:
    """The record of a finished fine-tuned model folder."""
    record = read_record(out)
    if not isinstance(record, FinetunedModelRecord):
        raise OutputError(f"{out} holds a {record.kind}, not a fine-tuned model; choose another folder")
    return record


def result_from_config(out: Path, results: dict[str, Any], data: dict[str, Any], training: dict[str, Any],
                        seconds: float, is_main: bool) -> FinetuneResult:
    """The :class:`FinetuneResult` of a run recorded earlier (``reused=True``)."""
    return FinetuneResult(out, int(data.get("num_examples", 0)), int(data.get("num_answer_tokens", 0)),
                          int(results.get("steps", 0)), int(training.get("effective_batch", 0)),
                          float(results.get("train_loss", float("nan"))), int(results.get("tokens", 0)),
                          float(results.get("train_seconds", 0.0)), float(results.get("tokens_per_second", 0.0)),
                          seconds, int(results.get("peak_memory_bytes", 0)), str(results.get("peak_memory_kind", "")),
                          True, is_main)



def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
