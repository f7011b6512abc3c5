"""``unlearn``: GradAscent, GradDiff or NPO on a model, written as a transformers checkpoint with a record.

:func:`unlearn` decides the run (options, data, recipe, run id), claims the output folder
(:class:`~perta_hub.io.output_folder.OutputFolder`), trains with :class:`~perta_hub.unlearning.trainer.UnlearnTrainer`
on ``finetune``'s Trainer set-up, and writes the weights in the model's own dtype, a card and a
``perta_config.json`` of kind ``unlearned_model`` (method and every hyper-parameter). See ``docs/unlearn.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import OutputError
from perta_hub.io.output_folder import refuse_unusable
from perta_hub.options.training import TrainingOptions, UnlearnTrainingOptions
from perta_hub.options.unlearn import UNLEARN, UnlearnOptions
from perta_hub.records import UnlearnedModelRecord, read_record
from perta_hub.training import run
from perta_hub.training.saving import resolve_save_dtype
from perta_hub.unlearning.methods import METHOD_NAMES, UNLEARN_METHODS

KIND = "unlearned_model"


@dataclass(kw_only=True)
class UnlearnResult(run.TrainingResult):
    """What :func:`unlearn` did (:class:`~perta_hub.training.run.TrainingResult` and the following).

    Attributes:
        method: ``ga``/``gd``/``npo``; num_forget, num_retain: the encoded examples.
        effective_batch: forget examples per step over all processes.
        final_loss: the loss logged over the last epoch (mean over its steps; negative for GA).
    """

    command = "unlearn"

    method: str
    num_forget: int
    num_retain: int
    final_loss: float

    def trained(self) -> str:
        return (f"{METHOD_NAMES[self.method]}, {self.steps} steps (effective batch {self.effective_batch}) on "
                f"{self.num_forget} forget / {self.num_retain} retain examples in {self.train_seconds:.1f} s, "
                f"last-epoch loss {self.final_loss:.4f}")


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
            10 epochs, lr 1e-5, effective batch 32, weight decay 0.01, 1 warmup epoch but at most 10% of the
            steps).
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

    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.io.compat import architecture
    from perta_hub.io.output_folder import current_command, make_run_id
    from perta_hub.io.reader import open_checkpoint

    begun = run.begin(opts, "unlearn", echo)
    ckpt = open_checkpoint(model, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(ckpt.root, str(model))
    forget_enc, forget_info = run.encode(tokenizer, forget, opts, "forget data")
    retain_enc, retain_info = run.encode(tokenizer, retain, opts, "retain data") if retain else (None, None)
    begun.say(f"unlearn: forget {forget}: {forget_enc.report()}" + (f"; retain {retain}: {retain_enc.report()}"
                                                                    if retain_enc is not None else ""))
    num_processes = begun.state.num_processes
    plan = run.plan_steps(len(forget_enc), opts, num_processes)
    recipe = run.training_recipe(opts, plan, num_processes, begun.device, resolve_save_dtype(opts.save_dtype, ckpt))
    train_dtype = recipe["train_dtype"]
    hyper = {"method": method, "method_name": spec.name, "gamma": gamma if "gamma" in spec.weights else None,
             "beta": beta if "beta" in spec.weights else None, "retain_weight": weight,
             "reference": "the frozen target (MODEL)" if spec.reference else None,
             "nll": "sum over answer tokens per sequence (NPO), mean over answer tokens (GA, retain)"}
    run_id = make_run_id({"kind": KIND, "base": ckpt.identity, "forget": forget_info["sha256"],
                          "retain": retain_info and retain_info["sha256"], "hyper": hyper, "recipe": recipe,
                          "max_shard_size": str(max_shard_size)})
    folder = run.output_folder(out, run_id, ckpt, begun, "unlearn", replace_other_run=replace_other_run,
                           other="unlearning run")
    if folder is None:
        return _reused(out, time.perf_counter() - start, begun.is_main)

    begun.say(f"unlearn: {spec.name} on {model} ({begun.device}, {train_dtype} weights): "
              + run.steps_line(plan, opts, num_processes, "forget examples"))
    from perta_hub.cards.unlearned import unlearned_card
    from perta_hub.runtime.models import load_causal_lm
    from perta_hub.training.trainer import train
    from perta_hub.unlearning.trainer import ForgetRetainExamples, PairCollator, UnlearnTrainer

    def make_trainer(**kwargs: Any) -> Any:
        ref = load_causal_lm(ckpt.root, str(model), getattr(torch, train_dtype)) if spec.reference else None
        return UnlearnTrainer(method=method, gamma=gamma, beta=beta, retain_weight=weight, ref_model=ref, **kwargs)

    with run.trained(begun, folder, ckpt, out, lambda: train(
            ckpt.root, str(model), forget_enc, tokenizer.pad_token_id, opts, plan, train_dtype, begun.device,
            recipe["bf16_autocast"], progress, begun.say, dataset=ForgetRetainExamples(forget_enc, retain_enc, opts.seed),
            collator=PairCollator(tokenizer.pad_token_id), make_trainer=make_trainer, name="unlearn")) as done:
        results = {"final_loss": done.last_loss, "loss_over_run": float(done.output.training_loss),
                   "steps": done.steps, "train_seconds": done.seconds, "loss_history": done.history,
                   "device": begun.device, "peak_memory_bytes": done.peak, "peak_memory_kind": done.peak_kind}
        if begun.is_main:
            done.save(out, recipe["save_dtype"], max_shard_size)
            record = UnlearnedModelRecord.build({
                "command": current_command(), "method": method, "target": ckpt.provenance(),
                "target_config": architecture(ckpt.config), "num_parameters": ckpt.num_parameters,
                "dtype": recipe["save_dtype"], "hyperparameters": hyper, "forget_data": forget_info,
                "retain_data": retain_info, "training": recipe, "results": results,
                "library": {"transformers": run.package_version("transformers"), "torch": torch.__version__},
                "run_id": run_id,
            })
            folder.finish(record, unlearned_card(record.to_dict()))
    return UnlearnResult(**done.result(out, plan, time.perf_counter() - start, begun.is_main), method=method,
                         num_forget=len(forget_enc), num_retain=0 if retain_enc is None else len(retain_enc),
                         final_loss=done.last_loss)


def _reused(out: Path, seconds: float, is_main: bool) -> UnlearnResult:
    record = read_record(out)
    if not isinstance(record, UnlearnedModelRecord):
        raise OutputError(f"{out} holds a {record.kind}, not an unlearned model; choose another folder")
    return UnlearnResult(**run.recorded(out, record.results, record.training, seconds, is_main), method=record.method,
                         num_forget=int(record.forget_data.get("num_examples", 0)),
                         num_retain=int((record.retain_data or {}).get("num_examples", 0)),
                         final_loss=float(record.results.get("final_loss", float("nan"))))
