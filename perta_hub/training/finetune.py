"""``finetune``: the privacy-tuned model (the anchor fine-tuned on the forget set), on transformers' Trainer.

Supervised fine-tuning on question/answer rows, formatted by :mod:`perta_hub.data` exactly as
``compute-weights`` and ``evaluate`` see them (loss on the answer tokens only). Training is
``transformers.Trainer``: one process on CPU or one GPU, or several through ``accelerate launch``
(DDP, FSDP or DeepSpeed configs); nothing here is a training loop. The output is a plain
transformers checkpoint with a card and a ``perta_config.json`` of kind ``finetuned_model``.

:func:`task_vector_from_data` is the convenience path of ``perta-hub task-vector MODEL --forget DATA``:
fine-tune, then write ``tau = theta_ft - theta_MODEL`` (or the LoRA delta) as a task-vector artifact.
See ``docs/finetune.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.qa import load_tokenizer
from perta_hub.errors import CheckpointError, DataError, InputError, OutputError
from perta_hub.runtime.devices import SINGLE_CPU_PROCESS_NOTE, resolve_device, single_process_cpu_launch

KIND = "finetuned_model"
EFFECTIVE_BATCH = 32
DEVICES = ("auto", "cpu", "cuda")
TRAIN_DTYPES = ("auto", "bfloat16", "float32")
#: optimizers (TrainingArguments ``optim`` names) that need the optional bitsandbytes package
_BNB_MARKERS = ("bnb", "8bit", "paged", "lion_32bit", "ademamix")
FINETUNED_PRIVACY_NOTE = (
    "**Privacy note.** This model was fine-tuned on the forget data: it reproduces that data more readily "
    "than its base. Keep its repository private unless the data may be shared."
)


@dataclass(frozen=True)
class TrainingOptions:
    """The fine-tuning recipe (defaults: the TOFU forget-set fine-tuning recipe).

    Attributes:
        epochs: passes over the data (5); fractional values stop part-way through the last epoch.
        lr: peak learning rate of AdamW (1e-5), reached after the warmup, then linear decay to 0.
        batch_size: examples per process per forward/backward (4).
        grad_accum: micro-batches per optimizer step; None -> ``ceil(32 / (batch_size * processes))``,
            so that the effective batch ``batch_size * grad_accum * processes`` is 32.
        weight_decay: AdamW decoupled weight decay (0.01).
        warmup: linear warmup length in epochs (1.0), converted to optimizer steps.
        max_length: tokens per example (prompt + answer, 512); longer examples are cut.
        seed: seed of the data order and of the LoRA initialisation (0).
        gradient_checkpointing: recompute activations in backward (less memory, ~30% more time).
        device: ``auto`` (cuda when visible), ``cpu`` or ``cuda``.
        train_dtype: weights' dtype during training: ``auto`` = bfloat16 on GPU (bf16 weights, gradients
            and AdamW states, as the TOFU recipe), float32 on CPU; ``float32`` on GPU trains fp32 weights
            under bf16 autocast (mixed precision, 2x the memory).
        optim: TrainingArguments optimizer name (``adamw_torch``); ``adamw_bnb_8bit``,
            ``paged_adamw_8bit``... need bitsandbytes (an optional extra).
        max_steps: stop after this many optimizer steps (overrides ``epochs``; None = by epochs).
        lora_rank: fine-tune LoRA adapters of this rank instead of the whole model (None = full).
        lora_alpha: LoRA alpha (None -> 2 * rank).
        lora_targets: ``all-linear`` or comma-separated module names for LoRA.
        question_field, answer_field: columns of the data.
        data_dir: folder of ``<config>.json`` files that ``repo:config`` data specs resolve to.
    """

    epochs: float = 5.0
    lr: float = 1e-5
    batch_size: int = 4
    grad_accum: int | None = None
    weight_decay: float = 0.01
    warmup: float = 1.0
    max_length: int = 512
    seed: int = 0
    gradient_checkpointing: bool = False
    device: str = "auto"
    train_dtype: str = "auto"
    optim: str = "adamw_torch"
    max_steps: int | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: str = "all-linear"
    question_field: str = "question"
    answer_field: str = "answer"
    data_dir: str | None = None

    def check(self) -> None:
        """Refuse impossible values before anything is loaded."""
        if not self.epochs > 0:
            raise InputError(f"--epochs must be > 0, got {self.epochs}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.grad_accum is not None and self.grad_accum < 1:
            raise InputError(f"--grad-accum must be >= 1, got {self.grad_accum}")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup < 0:
            raise InputError(f"--warmup (epochs) must be >= 0, got {self.warmup}")
        if self.max_steps is None and self.warmup > self.epochs:
            raise InputError(f"--warmup {self.warmup} epochs is longer than --epochs {self.epochs}; lower it")
        if self.max_length < 2:
            raise InputError(f"--max-length must be >= 2 tokens, got {self.max_length}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.device not in DEVICES:
            raise InputError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.train_dtype not in TRAIN_DTYPES:
            raise InputError(f"--train-dtype must be one of {', '.join(TRAIN_DTYPES)}, got {self.train_dtype!r}")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise InputError(f"--lora-rank must be >= 1, got {self.lora_rank}")
        if self.lora_rank is None and self.lora_alpha is not None:
            raise InputError("--lora-alpha only applies with --lora-rank R")
        if any(marker in self.optim for marker in _BNB_MARKERS):
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise InputError(f"--optim {self.optim} needs bitsandbytes (an optional extra, CUDA only): "
                                 "pip install bitsandbytes, or use --optim adamw_torch")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did (times in seconds, memory in bytes).

    Attributes:
        out_dir: the model folder.
        num_examples, num_answer_tokens: the encoded training data.
        steps: optimizer steps taken; effective_batch: examples per step over all processes.
        train_loss: mean training loss over the run (nats per answer token).
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
                f"examples in {self.train_seconds:.1f} s, {self.tokens_per_second:.0f} tokens/s, final mean loss "
                f"{self.train_loss:.4f}, peak memory {self.peak_memory_bytes / 2**30:.2f} GiB "
                f"({self.peak_memory_kind}); model in {self.out_dir}")


# ------------------------------------------------------------------------------------------- helpers


class _Examples:
    """A map-style dataset over encoded examples (``{"input_ids", "labels"}`` per item)."""

    def __init__(self, examples: Sequence[Any]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        e = self.examples[i]
        return {"input_ids": list(e.input_ids), "labels": list(e.labels)}


class _Collator:
    """Right padding with :func:`perta_hub.data.collate` (picklable, for dataloader workers)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        from perta_hub.data.qa import collate

        return collate(features, self.pad_token_id, padding_side="right")


def _is_complete(out: Path, run_id: str) -> dict[str, Any] | None:
    """The ``perta_config.json`` of ``out`` when it holds this run's complete output, else None."""
    config = _complete_config(out)
    return config if config is not None and config.get("run_id") == run_id else None


def _complete_config(out: Path) -> dict[str, Any] | None:
    """The ``perta_config.json`` of a finished perta-hub output folder (no run marker), else None."""
    from perta_hub.io.output_folder import CONFIG_NAME, MARKER

    config = out / CONFIG_NAME
    if not config.is_file() or (out / MARKER).exists():
        return None
    try:
        return json.loads(config.read_text())
    except ValueError:
        return None


def _holds_other_run(out: Path, run_id: str) -> bool:
    """True when ``out`` holds a perta-hub run marker or config of a run other than ``run_id``."""
    from perta_hub.io.output_folder import CONFIG_NAME, MARKER

    marker, config = out / MARKER, out / CONFIG_NAME
    if marker.is_file():
        return marker.read_text().strip() != run_id
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("run_id") != run_id
        except ValueError:
            return True
    return False


def check_output_folder(out: Path, what: str = "-o") -> None:
    """Refuse, before any compute, a folder holding something that is not a perta-hub run."""
    from perta_hub.io.output_folder import CONFIG_NAME, MARKER

    if out.is_file():
        raise OutputError(f"{out} is a file; {what} needs a folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / MARKER).exists() or (out / CONFIG_NAME).exists()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise OutputError(f"{out} already holds other files ({held}...); choose another {what} or remove it")


def _describe_data(spec: str, data_dir: str | None) -> dict[str, Any]:
    """``dataset_id`` (Hub repo, for the card), ``config`` and the spec of a data argument."""
    from perta_hub.data.qa import LOCAL_SUFFIXES

    path = Path(spec).expanduser()
    if path.suffix in LOCAL_SUFFIXES or path.is_file():
        return {"spec": spec, "dataset_id": None, "config": None, "local_file": str(path)}
    repo, _, config = spec.partition(":")
    repo_id = repo.partition("@")[0]
    if repo_id.lower() == "tofu":
        return {"spec": spec, "dataset_id": "locuslab/TOFU", "config": config, "bundled": True}
    info: dict[str, Any] = {"spec": spec, "dataset_id": repo_id if "/" in repo_id else None,
                            "config": config or None}
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
    return info


def _data_sha256(examples: Sequence[Any]) -> str:
    """sha256 of the encoded token ids and labels: what the model was actually trained on."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.labels]).encode())
    return digest.hexdigest()


def _load_model(root: Path, source: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(root, dtype=dtype)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load {source} as a causal LM with transformers: {first}") from err


def _check_deepspeed_saving() -> None:
    """Under ``accelerate launch`` with DeepSpeed ZeRO-3, refuse (before training) a config that cannot
    gather the weights for saving (``zero3_save_16bit_model`` / ``stage3_gather_16bit_weights_on_model_save``)."""
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() not in ("true", "1"):
        return
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if config_file and config_file.lower() != "none" and Path(config_file).is_file():
        try:
            zero = json.loads(Path(config_file).read_text()).get("zero_optimization", {})
        except ValueError:
            return
        stage, gather = zero.get("stage"), zero.get("stage3_gather_16bit_weights_on_model_save")
    else:
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        gather = os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "").lower() in ("true", "1")
    if str(stage) == "3" and gather is not True:
        raise InputError("DeepSpeed ZeRO-3 can only save the fine-tuned model with zero3_save_16bit_model: true in the "
                         "accelerate config (stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON); set it")


def plan_steps(num_examples: int, options: TrainingOptions, num_processes: int) -> dict[str, int]:
    """Batch arithmetic, as the Trainer does it.

    Returns:
        ``grad_accum``, ``effective_batch`` (= batch_size * grad_accum * processes), ``steps_per_epoch``
        (optimizer steps: ceil(ceil(n / (batch_size * processes)) / grad_accum)), ``total_steps``
        (``max_steps``, or ceil(epochs * steps_per_epoch)) and ``warmup_steps`` (round(warmup *
        steps_per_epoch), at most total_steps).
    """
    per_step = options.batch_size * num_processes
    grad_accum = options.grad_accum or max(1, math.ceil(EFFECTIVE_BATCH / per_step))
    batches = math.ceil(num_examples / per_step)
    steps_per_epoch = max(1, math.ceil(batches / grad_accum))
    total = options.max_steps or math.ceil(options.epochs * steps_per_epoch)
    warmup = min(total, round(options.warmup * steps_per_epoch))
    return {"grad_accum": grad_accum, "effective_batch": per_step * grad_accum, "steps_per_epoch": steps_per_epoch,
            "total_steps": total, "warmup_steps": warmup}


def finetuned_card(config: dict[str, Any]) -> Any:
    """The card (``ModelCard``) of a fine-tuned model: base, data, hyper-parameters, privacy note."""
    from huggingface_hub import ModelCardData

    from perta_hub._version import __version__
    from perta_hub.cards.render import _base_model, _datasets, _render, inherited_license

    training = config.get("training", {})
    data = config.get("data", {})
    lora = config.get("lora")
    base_model = _base_model(config.get("base"))
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=["perta", "machine-unlearning", "forget-set-finetuned"] + (["lora"] if lora else []),
        datasets=_datasets(config),
        **({"base_model_relation": "finetune"} if base_model else {}),
        **inherited_license(config.get("base")),
    )
    base = config.get("base", {})
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in training.items())
    method = (f"LoRA adapters (rank {lora['rank']}, alpha {lora['alpha']}, targets `{lora['target_modules']}`), "
              "merged into the weights; the adapter itself is in `adapter/`" if lora else "full fine-tuning")
    results = config.get("results", {})
    body = f"""
# Forget-set fine-tuned model (PerTA `theta_ft`)

`{base.get("source")}` fine-tuned on the forget data with {method}, made with perta-hub {__version__}
(transformers `Trainer`). It is the `theta_ft` of the task vector `tau = theta_ft - theta_anchor`:

```
perta-hub task-vector --base {base.get("source")} --finetuned THIS_REPO -o task-vector
```

{FINETUNED_PRIVACY_NOTE}

## Base model

- `{base.get("source")}` at `{base.get("revision")}`

## Data

- `{data.get("spec")}`: {data.get("num_examples")} examples ({data.get("num_rows")} rows), \
{data.get("num_answer_tokens")} answer tokens, fields `{data.get("question_field")}` / `{data.get("answer_field")}`, \
token sha256 `{data.get("sha256")}`
- loss on the answer tokens only (prompt masked), formatting of `perta_hub.data` (TOFU chat template or \
"Question: ... Answer: ...")

## Hyper-parameters

| option | value |
|---|---|
{rows}

Final mean training loss: {results.get("train_loss")} after {results.get("steps")} steps.

Command:

```
{config.get("command", "")}
```
"""
    return _render(card_data, body)


# ---------------------------------------------------------------------------------------- fine-tuning


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
    """Check the options, open the model and its tokenizer, encode the data and resolve the recipe."""
    opts.check()
    from accelerate import PartialState

    state = PartialState(cpu=opts.device == "cpu")
    is_main = state.is_main_process
    say = echo or ((lambda line: print(line, file=sys.stderr, flush=True)) if is_main else (lambda line: None))
    if single_process_cpu_launch(state):
        say("finetune: " + SINGLE_CPU_PROCESS_NOTE.format(consequence="the recipe is unchanged (same effective batch)"))
    device = resolve_device(opts.device)
    _check_deepspeed_saving()

    from perta_hub.data.qa import encode_dataset, load_qa
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
    data_info = {**_describe_data(data, opts.data_dir), "split": "train", "question_field": opts.question_field,
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
    Returns:
        :class:`FinetuneResult`.
    """
    import torch

    start = time.perf_counter()
    opts = _options(options, overrides)
    out = Path(out_dir).expanduser()
    check_output_folder(out)
    prep = prepare(model, data, opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle, echo=echo)
    state, is_main, say, device = prep.state, prep.is_main, prep.say, prep.device
    ckpt, tokenizer, encoded, plan = prep.ckpt, prep.tokenizer, prep.encoded, prep.plan
    train_dtype, bf16_autocast, data_info, recipe, run_id = (prep.train_dtype, prep.bf16_autocast, prep.data_info,
                                                             prep.recipe, prep.run_id)

    from perta_hub.io.compat import architecture
    from perta_hub.io.output_folder import claimed_outputs, copy_side_files, current_command, finish_output

    done = _is_complete(out, run_id)
    if done is not None:
        say(f"finetune: {out} already holds this run (run id {run_id}); nothing to train")
        return _result_from_config(out, done["results"], done["data"], done["training"],
                                   time.perf_counter() - start, is_main)
    if _holds_other_run(out, run_id):
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
            stack.enter_context(claimed_outputs([out], [run_id], [ckpt.root]))
        trainer, train_output, use_cache = _train(ckpt.root, str(model), encoded, tokenizer.pad_token_id, opts, plan,
                                       train_dtype, device, bf16_autocast, progress)
        # gathered on every process (FSDP / DeepSpeed shard the weights), written by the main one
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        peak, peak_kind = _peak_memory(device)
        tokens = int(trainer.state.num_input_tokens_seen)
        seconds = float(train_output.metrics.get("train_runtime", 0.0))
        history = [{"step": h["step"], "epoch": round(float(h["epoch"]), 4), "loss": h["loss"]}
                   for h in trainer.state.log_history if "loss" in h]
        results = {"train_loss": float(train_output.training_loss), "steps": int(trainer.state.global_step),
                   "tokens": tokens, "train_seconds": seconds,
                   "tokens_per_second": tokens / seconds if seconds > 0 else 0.0, "loss_history": history,
                   "device": device, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind}
        if is_main:
            copy_side_files(ckpt.root, out)
            net = trainer.accelerator.unwrap_model(trainer.model)
            lora_info = None
            if opts.lora_rank is not None:
                lora_info = _save_lora(net, state_dict, ckpt.root, str(model), out, train_dtype, max_shard_size)
            else:
                net.config.use_cache = use_cache
                net.save_pretrained(out, state_dict=state_dict, max_shard_size=max_shard_size)
            config = {
                "kind": KIND,
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
            }
            finish_output(out, config, finetuned_card(config))
        del state_dict
    state.wait_for_everyone()
    ckpt.close()
    return FinetuneResult(out, len(encoded), encoded.num_answer_tokens, results["steps"], plan["effective_batch"],
                          results["train_loss"], tokens, seconds, results["tokens_per_second"],
                          time.perf_counter() - start, peak, peak_kind, False, is_main)


def _options(options: TrainingOptions | None, overrides: dict[str, Any]) -> TrainingOptions:
    base = asdict(options or TrainingOptions())
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise InputError(f"unknown training option(s) {', '.join(unknown)}; see TrainingOptions")
    base.update(overrides)
    return TrainingOptions(**base)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _peak_memory(device: str) -> tuple[int, str]:
    import resource

    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "GPU max allocated"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss_kb * (1 if sys.platform == "darwin" else 1024)), "max RSS"


def _train(root: Path, source: str, encoded: Sequence[Any], pad_token_id: int, opts: TrainingOptions,
           plan: dict[str, int], train_dtype: str, device: str, bf16_autocast: bool, progress: bool) -> Any:
    """Build the model and the Trainer and run it; returns (trainer, TrainOutput, the config's use_cache)."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(opts.seed)
    net = _load_model(root, source, getattr(torch, train_dtype))
    use_cache = bool(getattr(net.config, "use_cache", True))
    net.config.use_cache = False  # no KV cache while training (and none with gradient checkpointing)
    if opts.lora_rank is not None:
        from perta_hub.training.lora import wrap_model

        net = wrap_model(net, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
    scratch = Path(tempfile.mkdtemp(prefix="perta-trainer-"))
    try:
        args = TrainingArguments(
            output_dir=str(scratch),
            num_train_epochs=opts.epochs,
            max_steps=opts.max_steps or -1,
            per_device_train_batch_size=opts.batch_size,
            gradient_accumulation_steps=plan["grad_accum"],
            learning_rate=opts.lr,
            weight_decay=opts.weight_decay,
            lr_scheduler_type="linear",
            warmup_steps=int(plan["warmup_steps"]),  # an integer >= 1 is a step count (a float < 1 a ratio)
            optim=opts.optim,
            seed=opts.seed,
            bf16=bf16_autocast,
            use_cpu=device == "cpu",
            activation_checkpointing=opts.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if opts.gradient_checkpointing else None,
            save_strategy="no",
            report_to="none",
            logging_strategy="steps",
            logging_steps=plan["steps_per_epoch"],
            disable_tqdm=not progress,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            ddp_find_unused_parameters=False,
        )
        trainer = Trainer(model=net, args=args, train_dataset=_Examples(encoded), data_collator=_Collator(pad_token_id))
        output = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return trainer, output, use_cache


def _save_lora(net: Any, state_dict: dict[str, Any], root: Path, source: str, out: Path, train_dtype: str,
               max_shard_size: int | str) -> dict[str, Any]:
    """Save the adapter in ``out/adapter`` and the base with the adapter merged in ``out``."""
    import torch
    from peft import PeftModel

    from perta_hub.training.lora import ADAPTER_DIR, read_adapter

    adapter_dir = out / ADAPTER_DIR
    net.save_pretrained(adapter_dir, state_dict=state_dict, save_embedding_layers=False)
    lora = read_adapter(adapter_dir)
    base = _load_model(root, source, getattr(torch, train_dtype))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, max_shard_size=max_shard_size)
    return {"rank": lora.rank, "alpha": float(lora.config["lora_alpha"]), "scaling": lora.scaling,
            "target_modules": lora.config.get("target_modules"), "num_adapted_tensors": len(lora.pairs),
            "adapter": ADAPTER_DIR, "merged": True}


def _result_from_config(out: Path, results: dict[str, Any], data: dict[str, Any], training: dict[str, Any],
                        seconds: float, is_main: bool) -> FinetuneResult:
    """The :class:`FinetuneResult` of a run recorded earlier (``reused=True``)."""
    return FinetuneResult(out, int(data.get("num_examples", 0)), int(data.get("num_answer_tokens", 0)),
                          int(results.get("steps", 0)), int(training.get("effective_batch", 0)),
                          float(results.get("train_loss", float("nan"))), int(results.get("tokens", 0)),
                          float(results.get("train_seconds", 0.0)), float(results.get("tokens_per_second", 0.0)),
                          seconds, int(results.get("peak_memory_bytes", 0)), str(results.get("peak_memory_kind", "")),
                          True, is_main)


# ------------------------------------------------------------------------------- the convenience path


def task_vector_from_data(
    model: str | Path,
    forget: str,
    out_dir: str | Path,
    *,
    finetuned_dir: str | Path | None = None,
    options: TrainingOptions | None = None,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **overrides: Any,
) -> tuple[Path | None, FinetuneResult]:
    """Fine-tune ``model`` on ``forget``, then write ``tau = theta_ft - theta_model`` as an artifact.

    With ``lora_rank`` the task vector is the adapter's merged low-rank delta ``scaling * B @ A``
    (:func:`perta_hub.lora.lora_task_vector`), zero outside the adapted layers.

    Args:
        model: the anchor (folder or Hub id); also the base of the task vector.
        forget: the forget data spec (see :func:`finetune`).
        out_dir: the task-vector artifact folder.
        finetuned_dir: keep the fine-tuned model there; None -> a hidden folder beside ``out_dir``
            (``.<name>.finetuned``), deleted once the artifact is written (kept if the run stops, so
            that the same command resumes without training again).
        options, overrides: the training recipe (:class:`TrainingOptions`).
        dtype, max_shard_size: storage dtype and shard limit of the artifact (also the fine-tuned model's
            shard limit).
    Returns:
        (the artifact folder, or None on processes other than the main one; the fine-tuning result).
    """
    start = time.perf_counter()
    opts = _options(options, overrides)
    out = Path(out_dir).expanduser()
    check_output_folder(out)
    keep = finetuned_dir is not None
    ft_dir = Path(finetuned_dir).expanduser() if keep else out.parent / f".{out.name}.finetuned"
    if ft_dir.resolve() == out.resolve():
        raise InputError("--finetuned-dir and -o are the same folder; the model and the task vector need two")
    check_output_folder(ft_dir, "--finetuned-dir")
    existing = _complete_config(out)
    if existing is not None:  # a finished artifact: this very run (nothing to do), or something else (refused)
        prep = prepare(model, forget, opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle, echo=echo)
        if existing.get("finetune_run_id") != prep.run_id:
            raise OutputError(f"{out} already holds another task vector (other model, data or options); choose "
                              "another -o or remove it")
        prep.say(f"task-vector: {out} already holds this task vector (fine-tuning run {prep.run_id}); nothing to do")
        result = _result_from_config(out, existing.get("training_results", {}), existing.get("forget_data", {}),
                                     existing.get("training", {}), time.perf_counter() - start, prep.is_main)
        return (out if prep.is_main else None), result
    result = finetune(model, forget, ft_dir, options=opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle,
                      progress=progress, echo=echo, replace_other_run=not keep)
    if not result.is_main:
        return None, result
    ft_config = json.loads((ft_dir / "perta_config.json").read_text())
    extra: dict[str, Any] = {
        "method": "lora" if opts.lora_rank else "full",
        "forget_data": ft_config["data"],
        "training": ft_config["training"],
        "training_results": {k: v for k, v in ft_config["results"].items() if k != "loss_history"},
        "finetuned_kept": keep,
        "finetune_run_id": ft_config["run_id"],
    }
    from perta_hub.io.reader import open_checkpoint

    tuned = open_checkpoint(ft_dir)
    extra["finetuned"] = _finetuned_record(tuned.provenance(), keep)
    tuned.close()
    if opts.lora_rank is not None:
        from perta_hub.training.lora import ADAPTER_DIR, lora_task_vector

        artifact = lora_task_vector(model, ft_dir / ADAPTER_DIR, out, dtype=dtype, max_shard_size=max_shard_size,
                                    allow_pickle=allow_pickle, extra_provenance=extra, progress=progress)
    else:
        from perta_hub.merge.task_vector import task_vector

        artifact = task_vector(model, ft_dir, out, dtype=dtype, max_shard_size=max_shard_size,
                               allow_pickle=allow_pickle, extra_provenance=extra, progress=progress)
    if not keep:
        shutil.rmtree(ft_dir, ignore_errors=True)
    return artifact, result


def _finetuned_record(provenance: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Provenance of the fine-tuned model; a temporary one is named as such (its folder is deleted)."""
    if keep:
        return provenance
    return {**provenance, "source": "temporary fine-tune (deleted; re-create it with --finetuned-dir)",
            "temporary": True}
