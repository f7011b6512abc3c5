"""``task-vector MODEL --forget DATA``: fine-tune MODEL on the forget data, then write the task vector.

``tau = theta_ft - theta_MODEL`` (full fine-tuning) or the LoRA adapters' merged delta, as a task-vector artifact;
the fine-tuned model is kept with ``--finetuned-dir`` or lives in a hidden scratch folder beside the output.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, OutputError
from perta_hub.io.output_folder import finished_record, refuse_unusable
from perta_hub.options.training import TrainingOptions
from perta_hub.records import TaskVectorRecord
from perta_hub.training.finetune import (
    FinetuneResult,
    finetune,
    folder_record,
    prepare,
    result_from_config,
)


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
    (:func:`perta_hub.training.lora.lora_task_vector`), zero outside the adapted layers.

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
    opts = TrainingOptions.resolve(options, overrides)
    out = Path(out_dir).expanduser()
    refuse_unusable(out)
    keep = finetuned_dir is not None
    ft_dir = Path(finetuned_dir).expanduser() if keep else out.parent / f".{out.name}.finetuned"
    if ft_dir.resolve() == out.resolve():
        raise InputError("--finetuned-dir and -o are the same folder; the model and the task vector need two")
    refuse_unusable(ft_dir, "--finetuned-dir")
    existing = finished_record(out)
    if existing is not None:  # a finished artifact: this very run (nothing to do), or something else (refused)
        prep = prepare(model, forget, opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle, echo=echo)
        if not isinstance(existing, TaskVectorRecord) or existing.finetune_run_id != prep.run_id:
            raise OutputError(f"{out} already holds another task vector (other model, data or options); choose "
                              "another -o or remove it")
        prep.say(f"task-vector: {out} already holds this task vector (fine-tuning run {prep.run_id}); nothing to do")
        result = result_from_config(out, existing.training_results or {}, existing.forget_data or {},
                                    existing.training or {}, time.perf_counter() - start, prep.is_main)
        return (out if prep.is_main else None), result
    result = finetune(model, forget, ft_dir, options=opts, max_shard_size=max_shard_size, allow_pickle=allow_pickle,
                      progress=progress, echo=echo, replace_other_run=not keep, data_role="forget")
    if not result.is_main:
        return None, result
    tuned_record = folder_record(ft_dir)
    extra: dict[str, Any] = {
        "method": "lora" if opts.lora_rank else "full",
        "forget_data": tuned_record.data,
        "training": tuned_record.training,
        "training_results": {k: v for k, v in tuned_record.results.items() if k != "loss_history"},
        "finetuned_kept": keep,
        "finetune_run_id": tuned_record.run_id,
    }
    from perta_hub.io.reader import open_checkpoint

    tuned = open_checkpoint(ft_dir)
    extra["finetuned"] = _finetuned_record(tuned.provenance(), keep)
    tuned.close()
    if opts.lora_rank is not None:
        from perta_hub.merge.lora_delta import ADAPTER_DIR, lora_task_vector

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
    kept = {k: v for k, v in provenance.items() if k != "path"}  # the folder is deleted
    return {**kept, "source": "temporary fine-tune (deleted; re-create it with --finetuned-dir)", "temporary": True}
