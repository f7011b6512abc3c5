"""``unlearn``: GradAscent, GradDiff or NPO on a model, written as a transformers checkpoint with a record.

:func:`unlearn` decides the run (options, data, recipe, run id), claims the output folder
(:class:`~perta_hub.io.output_folder.OutputFolder`), trains with :class:`~perta_hub.unlearning.trainer.UnlearnTrainer`
on ``finetune``'s Trainer set-up, and writes the weights in the model's own dtype, a card and a
``perta_config.json`` of kind ``unlearned_model`` (method and every hyper-parameter). See ``docs/unlearn.md``.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import DataError, OutputError
from perta_hub.io.output_folder import refuse_unusable
from perta_hub.options.training import TrainingOptions, UnlearnTrainingOptions
from perta_hub.options.unlearn import UNLEARN, UnlearnOptions
from perta_hub.records import UnlearnedModelRecord, read_record
from perta_hub.training.run import plan_steps
from perta_hub.training.saving import resolve_save_dtype, save_model
from perta_hub.unlearning.methods import METHOD_NAMES, UNLEARN_METHODS

KIND = "unlearned_model"


@dataclass
class UnlearnResult:
    """What :func:`unlearn` did (times in seconds, memory in bytes).

    Attributes:
        out_dir: the model folder; method: ``ga``/``gd``/``npo``.
        steps: optimizer steps; effective_batch: forget examples per step over all processes.
        final_loss: the loss logged over the last epoch (mean over its steps; negative for GA).
        train_seconds: Trainer time; seconds: the whole call.
        peak_memory_bytes, peak_memory_kind: GPU max allocated, or the process's max RSS on CPU.
        reused: the folder already held this exact run.
    """

    out_dir: Path
    method: str
    num_forget: int
    num_retain: int
    steps: int
    effective_batch: int
    final_loss: float
    train_seconds: float
    seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    reused: bool = False
    is_main: bool = True

    def final_line(self) -> str:
        """One line for the terminal."""
        if self.reused:
            return f"unlearn: {self.out_dir} already holds this run; nothing trained"
        return (f"unlearn: {METHOD_NAMES[self.method]}, {self.steps} steps (effective batch {self.effective_batch}) "
                f"on {self.num_forget} forget / {self.num_retain} retain examples in {self.train_seconds:.1f} s, "
                f"last-epoch loss {self.final_loss:.4f}, peak memory {self.peak_memory_bytes / 2**30:.2f} GiB "
                f"({self.peak_memory_kind}); model in {self.out_dir}")


def _encode(tokenizer: Any, spec: str, opts: TrainingOptions, role: str) -> tuple[Any, dict[str, Any]]:
    """Encoded rows of ``spec`` and their description (as ``finetune`` records its data)."""
    from perta_hub.data import describe_data, encode_dataset, load_qa
    from perta_hub.training.finetune import _data_sha256

    try:
        rows = load_qa(spec, data_dir=opts.data_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = encode_dataset(tokenizer, rows, question_field=opts.question_field,
                                     answer_field=opts.answer_field, max_length=opts.max_length)
    except DataError as err:
        raise DataError(f"{role} data {spec!r}: {err}") from err
    info = {**describe_data(spec, opts.data_dir), "split": "train", "question_field": opts.question_field,
            "answer_field": opts.answer_field, "num_rows": len(rows), "num_examples": len(encoded),
            "num_answer_tokens": encoded.num_answer_tokens, "sha256": _data_sha256(encoded)}
    return encoded, info


def unlearn(
    model: str | Path,
    forget: str,
    out_dir: str | Path,
    *,
    method: str,
    retain: str | None = UNLEARN.retain,
    gamma: float = UNLEARN.gamma,
    beta: float = UNLEARN.beta,
    retain_weight: float | None = UNLEARN.retain_weight,
    options: TrainingOptions | None = None,
    max_shard_size: int | str = UNLEARN.max_shard_size,
    allow_pickle: bool = UNLEARN.allow_pickle,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    replace_other_run: bool = False,
    **overrides: Any,
) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` with GradAscent (``ga``), GradDiff (``gd``) or NPO (``npo``).

    Args:
        model: local folder or Hub id ``org/name[@revision]``: the target; NPO's frozen reference too.
        forget, retain: data specs (see :func:`perta_hub.data.load_qa`); ``retain`` is needed by ``gd``,
            optional for ``npo`` (adds the retain NLL), refused for ``ga``.
        out_dir: folder to create (config, tokenizer, ``model-*.safetensors``, ``README.md``,
            ``perta_config.json``); a folder holding this exact run is returned as it is.
        method, gamma, beta, retain_weight: the method (:data:`perta_hub.unlearning.methods.UNLEARN_METHODS`),
            the weight of its forget term (gd, npo), NPO's beta and the weight of the retain NLL (default 1 when
            ``retain`` is given); checked as :class:`~perta_hub.options.unlearn.UnlearnOptions`.
        options, overrides: the recipe (:class:`~perta_hub.options.training.UnlearnTrainingOptions`; defaults
            10 epochs, lr 1e-5, effective batch 32, weight decay 0.01, 1 warmup epoch).
        replace_other_run: delete ``out_dir`` when it holds an earlier perta-hub run with other inputs.
    Returns:
        :class:`UnlearnResult`.
    """
    import torch

    start = time.perf_counter()
    opts = UnlearnTrainingOptions.resolve(options, overrides)
    settings = UnlearnOptions.pick(locals())
    spec = UNLEARN_METHODS[method]
    weight = settings.retain_weight_in_effect
    out = Path(out_dir).expanduser()
    refuse_unusable(out)

    from accelerate import PartialState

    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.io.compat import architecture
    from perta_hub.io.output_folder import FolderState, OutputFolder, copy_side_files, current_command, make_run_id
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.runtime.devices import resolve_device
    from perta_hub.runtime.memory import peak_memory

    state = PartialState(cpu=opts.device == "cpu")
    is_main = state.is_main_process
    say = echo or ((lambda line: print(line, file=sys.stderr, flush=True)) if is_main else (lambda line: None))
    device = resolve_device(opts.device)
    ckpt = open_checkpoint(model, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(ckpt.root, str(model))
    forget_enc, forget_info = _encode(tokenizer, forget, opts, "forget")
    retain_enc, retain_info = _encode(tokenizer, retain, opts, "retain") if retain else (None, None)
    say(f"unlearn: forget {forget}: {forget_enc.report()}" + (f"; retain {retain}: {retain_enc.report()}"
                                                              if retain_enc is not None else ""))
    plan = plan_steps(len(forget_enc), opts, state.num_processes)
    train_dtype = opts.train_dtype if opts.train_dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    save_dtype = resolve_save_dtype(opts.save_dtype, ckpt)
    bf16_autocast = device == "cuda"
    hyper = {"method": method, "method_name": spec.name, "gamma": gamma if "gamma" in spec.weights else None,
             "beta": beta if "beta" in spec.weights else None, "retain_weight": weight,
             "reference": "the frozen target (MODEL)" if spec.reference else None,
             "nll": "sum over answer tokens per sequence (NPO), mean over answer tokens (GA, retain)"}
    recipe = {
        "epochs": opts.epochs, "lr": opts.lr, "optimizer": opts.optim, "lr_scheduler": "linear",
        "weight_decay": opts.weight_decay, "warmup_epochs": opts.warmup, "warmup_steps": plan["warmup_steps"],
        "batch_size": opts.batch_size, "grad_accum": plan["grad_accum"], "num_processes": state.num_processes,
        "effective_batch": plan["effective_batch"], "steps_per_epoch": plan["steps_per_epoch"],
        "total_steps": plan["total_steps"], "max_steps": opts.max_steps, "max_length": opts.max_length,
        "seed": opts.seed, "train_dtype": train_dtype, "bf16_autocast": bf16_autocast,
        "gradient_checkpointing": opts.gradient_checkpointing, "save_dtype": save_dtype,
    }
    run_id = make_run_id({"kind": KIND, "base": ckpt.identity, "forget": forget_info["sha256"],
                          "retain": retain_info and retain_info["sha256"], "hyper": hyper, "recipe": recipe,
                          "max_shard_size": str(max_shard_size)})
    folder = OutputFolder(out, run_id, [ckpt.root])
    now = folder.state()
    if now is FolderState.COMPLETE:
        say(f"unlearn: {out} already holds this run (run id {run_id}); nothing to train")
        return _reused(out, time.perf_counter() - start, is_main)
    if now is FolderState.FOREIGN:
        if not replace_other_run:
            raise OutputError(f"{out} holds another run (other model, data or options); choose another folder or "
                              "remove it")
        state.wait_for_everyone()
        if is_main:
            shutil.rmtree(out)
    state.wait_for_everyone()

    say(f"unlearn: {spec.name} on {model} ({device}, {train_dtype} weights): {plan['total_steps']} steps "
        f"of {plan['effective_batch']} forget examples ({opts.batch_size} x {plan['grad_accum']} accumulation x "
        f"{state.num_processes} processes)")
    from perta_hub.runtime.models import load_causal_lm
    from perta_hub.training.trainer import train
    from perta_hub.unlearning.card import unlearned_card
    from perta_hub.unlearning.trainer import ForgetRetainExamples, PairCollator, UnlearnTrainer

    def make_trainer(**kwargs: Any) -> Any:
        ref = load_causal_lm(ckpt.root, str(model), getattr(torch, train_dtype)) if spec.reference else None
        return UnlearnTrainer(method=method, gamma=gamma, beta=beta, retain_weight=weight, ref_model=ref, **kwargs)

    with ExitStack() as stack:
        if is_main:
            stack.enter_context(folder)
            folder.claim(ckpt.total_bytes)
        trainer, output, use_cache = train(
            ckpt.root, str(model), forget_enc, tokenizer.pad_token_id, opts, plan, train_dtype, device,
            bf16_autocast, progress, say, dataset=ForgetRetainExamples(forget_enc, retain_enc, opts.seed),
            collator=PairCollator(tokenizer.pad_token_id), make_trainer=make_trainer, name="unlearn")
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        peak, peak_kind = peak_memory(device)
        seconds = float(output.metrics.get("train_runtime", 0.0))
        history = [{"step": h["step"], "epoch": round(float(h["epoch"]), 4), "loss": h["loss"]}
                   for h in trainer.state.log_history if "loss" in h]
        final = float(history[-1]["loss"]) if history else float(output.training_loss)
        results = {"final_loss": final, "loss_over_run": float(output.training_loss),
                   "steps": int(trainer.state.global_step), "train_seconds": seconds, "loss_history": history,
                   "device": device, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind}
        if is_main:
            copy_side_files(ckpt.root, out)
            net = trainer.accelerator.unwrap_model(trainer.model)
            net.config.use_cache = use_cache
            save_model(net, state_dict, out, save_dtype, max_shard_size)
            record = UnlearnedModelRecord.build({
                "command": current_command(), "method": method, "target": ckpt.provenance(),
                "target_config": architecture(ckpt.config), "num_parameters": ckpt.num_parameters,
                "dtype": save_dtype, "hyperparameters": hyper, "forget_data": forget_info,
                "retain_data": retain_info, "training": recipe, "results": results,
                "library": {"transformers": _version("transformers"), "torch": torch.__version__},
                "run_id": run_id,
            })
            folder.finish(record, unlearned_card(record.to_dict()))
        del state_dict
    state.wait_for_everyone()
    ckpt.close()
    return UnlearnResult(out, method, len(forget_enc), 0 if retain_enc is None else len(retain_enc),
                         results["steps"], plan["effective_batch"], final, seconds, time.perf_counter() - start,
                         peak, peak_kind, False, is_main)


def _reused(out: Path, seconds: float, is_main: bool) -> UnlearnResult:
    record = read_record(out)
    if not isinstance(record, UnlearnedModelRecord):
        raise OutputError(f"{out} holds a {record.kind}, not an unlearned model; choose another folder")
    res, training = record.results, record.training
    return UnlearnResult(out, record.method, int(record.forget_data.get("num_examples", 0)),
                         int((record.retain_data or {}).get("num_examples", 0)), int(res.get("steps", 0)),
                         int(training.get("effective_batch", 0)), float(res.get("final_loss", float("nan"))),
                         float(res.get("train_seconds", 0.0)), seconds, int(res.get("peak_memory_bytes", 0)),
                         str(res.get("peak_memory_kind", "")), True, is_main)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
