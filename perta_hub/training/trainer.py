"""The transformers ``Trainer`` run of ``finetune``: dataset and collator, the Trainer, progress, LoRA saving.

Nothing here is a training loop: ``Trainer`` trains on one process (CPU or one GPU) or several under
``accelerate launch`` (DDP, FSDP, DeepSpeed). This module imports transformers (for ``TrainerCallback``):
import it where training starts, not at package import.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from perta_hub.errors import InputError
from perta_hub.options.training import TrainingOptions
from perta_hub.runtime.distributed import deepspeed_zero_settings
from perta_hub.runtime.models import load_causal_lm


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
        from perta_hub.data.encoding import collate

        return collate(features, self.pad_token_id, padding_side="right")


def check_deepspeed_saving() -> None:
    """Under ``accelerate launch`` with DeepSpeed ZeRO-3, refuse (before training) a config that cannot
    gather the weights for saving (``zero3_save_16bit_model`` / ``stage3_gather_16bit_weights_on_model_save``)."""
    settings = deepspeed_zero_settings()
    if settings is None:
        return
    stage, gather = settings
    if str(stage) == "3" and gather is not True:
        raise InputError("DeepSpeed ZeRO-3 can only save the fine-tuned model with zero3_save_16bit_model: true in the "
                         "accelerate config (stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON); set it")


class _Progress(TrainerCallback):
    """Trainer progress as one perta-hub phase (main process only): :class:`perta_hub.runtime.progress.Progress`.

    On a terminal: one bar of optimizer steps, the latest logged loss and epoch in its postfix. Elsewhere (a log
    file, a pipe): no bar frames, the phase's progress lines, and one ``say`` line per logging step with the
    loss. The loss history recorded in ``perta_config.json`` comes from ``trainer.state.log_history``.
    """

    def __init__(self, say: Callable[[str], None], name: str = "finetune") -> None:
        self.say, self.bar, self.name = say, None, name

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from perta_hub.runtime.progress import Progress

        self.bar = Progress(self.name, state.max_steps, unit="step", enabled=state.is_world_process_zero)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs or self.bar is None:
            return
        loss, epoch = float(logs["loss"]), float(logs.get("epoch") or 0.0)
        self.bar.set_postfix(f"loss {loss:.4f}, epoch {epoch:.2f}")
        if not self.bar.drawn:
            self.say(f"{self.name}: step {state.global_step}/{state.max_steps} (epoch {epoch:.2f}): loss {loss:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train(root: Path, source: str, encoded: Sequence[Any], pad_token_id: int, opts: TrainingOptions,
          plan: dict[str, int], train_dtype: str, device: str, bf16_autocast: bool, progress: bool,
          say: Callable[[str], None], *, dataset: Any = None, collator: Any = None,
          make_trainer: Callable[..., Any] | None = None, name: str = "finetune") -> Any:
    """Build the model and the Trainer and run it; returns (trainer, TrainOutput, the config's use_cache).

    ``progress``: a bar on a terminal (the latest loss in its postfix), else one ``say`` line per logging step
    (once per epoch); the Trainer's own bar and raw log dicts are never shown. ``dataset``, ``collator`` and
    ``make_trainer`` (called as ``Trainer``: ``model=, args=, train_dataset=, data_collator=``) replace the
    plain supervised ones (``unlearn`` passes its paired data and its loss); ``name`` prefixes the lines.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(opts.seed)
    net = load_causal_lm(root, source, getattr(torch, train_dtype))
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
            disable_tqdm=True,  # the Trainer's bar prints raw log dicts; _Progress replaces it
            remove_unused_columns=False,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            ddp_find_unused_parameters=False,
        )
        trainer = (make_trainer or Trainer)(
            model=net, args=args, train_dataset=_Examples(encoded) if dataset is None else dataset,
            data_collator=_Collator(pad_token_id) if collator is None else collator)
        trainer.remove_callback(PrinterCallback)  # prints each log dict as it is
        shown = _Progress(say, name) if progress else None
        if shown is not None:
            trainer.add_callback(shown)
        try:
            output = trainer.train()
        except BaseException:
            if shown is not None and shown.bar is not None:
                shown.bar.close(failed=True)  # "stopped at" instead of a bar left open
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return trainer, output, use_cache


def save_lora(net: Any, state_dict: dict[str, Any], root: Path, source: str, out: Path, train_dtype: str,
               max_shard_size: int | str) -> dict[str, Any]:
    """Save the adapter in ``out/adapter`` and the base with the adapter merged in ``out``, in ``train_dtype``
    (the caller passes the saved dtype: the base's unless asked)."""
    import torch
    from peft import PeftModel

    from perta_hub.merge.lora_delta import ADAPTER_DIR, read_adapter

    adapter_dir = out / ADAPTER_DIR
    net.save_pretrained(adapter_dir, state_dict=state_dict, save_embedding_layers=False)
    lora = read_adapter(adapter_dir)
    base = load_causal_lm(root, source, getattr(torch, train_dtype))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    from perta_hub.training.saving import save_model

    save_model(merged, merged.state_dict(), out, train_dtype, max_shard_size)
    return {"rank": lora.rank, "alpha": float(lora.config["lora_alpha"]), "scaling": lora.scaling,
            "target_modules": lora.config.get("target_modules"), "num_adapted_tensors": len(lora.pairs),
            "adapter": ADAPTER_DIR, "merged": True}
