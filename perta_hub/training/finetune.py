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

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.encoding import load_tokenizer
from perta_hub.errors import OutputError
from perta_hub.io.output_folder import refuse_unusable
from perta_hub.options.finetune import FINETUNE
from perta_hub.options.training import TrainingOptions
from perta_hub.records import FinetunedModelRecord, read_record
from perta_hub.training import run
from perta_hub.training.saving import resolve_save_dtype

KIND = "finetuned_model"


@dataclass(kw_only=True)
class FinetuneResult(run.TrainingResult):
    """What :func:`finetune` did (:class:`~perta_hub.training.run.TrainingResult` and the following).

    Attributes:
        num_examples, num_answer_tokens: the encoded training data.
        train_loss: the last epoch's mean training loss (nats per answer token).
        tokens: non-padding tokens processed (all processes, all epochs); tokens_per_second = tokens /
            train_seconds.
    """

    command = "finetune"

    num_examples: int
    num_answer_tokens: int
    train_loss: float
    tokens: int
    tokens_per_second: float

    def trained(self) -> str:
        return (f"{self.steps} steps (effective batch {self.effective_batch}) on {self.num_examples} examples in "
                f"{self.train_seconds:.1f} s, {self.tokens_per_second:.0f} tokens/s, last-epoch loss "
                f"{self.train_loss:.4f}")


@dataclass
class Prepared:
    """Everything a fine-tuning run is decided by, before any training (see :func:`prepare`).

    Attributes:
        run_id: hash of the base's identity, the encoded data (sha256 of the token ids), the resolved
            recipe and the shard size: equal run ids mean the same fine-tuned model.
    """

    begun: run.Begun
    ckpt: Any
    tokenizer: Any
    encoded: Any
    plan: dict[str, int]
    data_info: dict[str, Any]
    recipe: dict[str, Any]
    run_id: str

    @property
    def is_main(self) -> bool:
        return self.begun.is_main

    @property
    def say(self) -> Callable[[str], None]:
        return self.begun.say


def prepare(model: str | Path, data: str, opts: TrainingOptions, *, max_shard_size: int | str = "5GB",
            allow_pickle: bool = False, echo: Callable[[str], None] | None = None) -> Prepared:
    """Open the model and its tokenizer, encode the data and resolve the recipe (``opts`` is checked)."""
    begun = run.begin(opts, "finetune", echo)
    from perta_hub.io.output_folder import make_run_id
    from perta_hub.io.reader import open_checkpoint

    ckpt = open_checkpoint(model, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(ckpt.root, str(model))
    encoded, data_info = run.encode(tokenizer, data, opts, "data", details=True)
    begun.say(f"finetune: data {data}: {encoded.report()}")
    plan = run.plan_steps(len(encoded), opts, begun.state.num_processes)
    recipe = run.training_recipe(opts, plan, begun.state.num_processes, begun.device,
                             resolve_save_dtype(opts.save_dtype, ckpt))
    run_id = make_run_id({"kind": KIND, "base": ckpt.identity, "data": data_info["sha256"], "recipe": recipe,
                          "max_shard_size": str(max_shard_size)})
    return Prepared(begun, ckpt, tokenizer, encoded, plan, data_info, recipe, run_id)


def finetune(
    model: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    options: TrainingOptions | None = None,
    max_shard_size: int | str = FINETUNE.max_shard_size,
    allow_pickle: bool = FINETUNE.allow_pickle,
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
        options: the recipe (:class:`~perta_hub.options.training.TrainingOptions`); ``overrides`` set single
            fields (``finetune(m, d, o, epochs=3, lr=2e-5)``).
        max_shard_size: largest weight shard of the output (``5GB``, ``500MB`` or bytes).
        allow_pickle: accept a ``.bin`` model (converted to a temporary safetensors copy first).
        progress: report progress (main process): a bar on a terminal, lines elsewhere, per-epoch loss lines.
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
    begun, ckpt, encoded, plan, recipe = prep.begun, prep.ckpt, prep.encoded, prep.plan, prep.recipe
    num_processes = begun.state.num_processes

    from perta_hub.cards.finetuned import finetuned_card
    from perta_hub.cards.trained import trained_card
    from perta_hub.io.compat import architecture
    from perta_hub.io.output_folder import current_command
    from perta_hub.training.trainer import save_lora, train

    folder = run.output_folder(out, prep.run_id, ckpt, begun, "finetune", replace_other_run=replace_other_run,
                           other="fine-tuning run")
    if folder is None:
        earlier = folder_record(out)
        return result_from_config(out, earlier.results, earlier.data, earlier.training, time.perf_counter() - start,
                                  begun.is_main)

    begun.say(f"finetune: {'LoRA rank ' + str(opts.lora_rank) if opts.lora_rank else 'full'} fine-tuning of {model} "
              f"on {begun.device} ({recipe['train_dtype']} weights{', bf16 autocast' if recipe['bf16_autocast'] else ''}"
              f"{f', {num_processes} processes' if num_processes > 1 else ''}): "
              + run.steps_line(plan, opts, num_processes))
    with run.trained(begun, folder, ckpt, out, lambda: train(
            ckpt.root, str(model), encoded, prep.tokenizer.pad_token_id, opts, plan, recipe["train_dtype"],
            begun.device, recipe["bf16_autocast"], progress, begun.say)) as done:
        tokens = int(done.trainer.state.num_input_tokens_seen)
        # the last epoch's mean loss (the Trainer logs once per epoch); the mean over the whole run beside it
        results = {"train_loss": done.last_loss, "train_loss_mean_over_run": float(done.output.training_loss),
                   "steps": done.steps,
                   "tokens": tokens, "train_seconds": done.seconds,
                   "tokens_per_second": tokens / done.seconds if done.seconds > 0 else 0.0,
                   "loss_history": done.history, "device": begun.device, "peak_memory_bytes": done.peak,
                   "peak_memory_kind": done.peak_kind}
        if begun.is_main:
            lora_info = None
            if opts.lora_rank is not None:
                lora_info = save_lora(done.net, done.state_dict, ckpt.root, str(model), out, recipe["save_dtype"],
                                      max_shard_size)
            else:
                done.save(out, recipe["save_dtype"], max_shard_size)
            record = FinetunedModelRecord.build({
                "data_role": data_role,
                "command": current_command(),
                "base": ckpt.provenance(),
                "base_config": architecture(ckpt.config),
                "num_parameters": ckpt.num_parameters,
                "data": prep.data_info,
                "training": recipe,
                "lora_rank": opts.lora_rank,
                "lora": lora_info,
                "results": results,
                "library": {"transformers": run.package_version("transformers"), "torch": torch.__version__,
                            "peft": run.package_version("peft") if opts.lora_rank else None},
                "run_id": prep.run_id,
            })
            card = finetuned_card if data_role == "forget" else trained_card
            folder.finish(record, card(record.to_dict()))
    return FinetuneResult(**done.result(out, plan, time.perf_counter() - start, begun.is_main),
                          num_examples=len(encoded), num_answer_tokens=encoded.num_answer_tokens,
                          train_loss=done.last_loss, tokens=tokens, tokens_per_second=results["tokens_per_second"])


def folder_record(out: Path) -> FinetunedModelRecord:
    """The record of a finished fine-tuned model folder."""
    record = read_record(out)
    if not isinstance(record, FinetunedModelRecord):
        raise OutputError(f"{out} holds a {record.kind}, not a fine-tuned model; choose another folder")
    return record


def result_from_config(out: Path, results: dict[str, Any], data: dict[str, Any], training: dict[str, Any],
                        seconds: float, is_main: bool) -> FinetuneResult:
    """The :class:`FinetuneResult` of a run recorded earlier (``reused=True``)."""
    return FinetuneResult(**run.recorded(out, results, training, seconds, is_main),
                          num_examples=int(data.get("num_examples", 0)),
                          num_answer_tokens=int(data.get("num_answer_tokens", 0)),
                          train_loss=float(results.get("train_loss", float("nan"))), tokens=int(results.get("tokens", 0)),
                          tokens_per_second=float(results.get("tokens_per_second", 0.0)))
