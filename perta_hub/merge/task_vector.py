"""Task vectors: ``tau = theta_finetuned - theta_anchor``, streamed tensor by tensor into an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, MismatchError, NonFiniteError
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import current_command, make_run_id
from perta_hub.io.reader import Checkpoint, scratch_for
from perta_hub.io.sharding import TensorSpec, dtype_code
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.jobs.source import Input, Source
from perta_hub.options.task_vector import TASK_VECTOR
from perta_hub.records import TaskVectorRecord
from perta_hub.runtime.devices import one_torch_thread

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def check_float_dtype(dtype: str) -> None:
    """A task vector is stored as float32, bfloat16 or float16."""
    if dtype not in FLOAT_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")


def task_vector_record(anchor: Checkpoint, dtype: str, run_id: str, extra: dict[str, Any] | None,
                       **fields: Any) -> TaskVectorRecord:
    """The record of a task vector made against ``anchor`` (``fields``: ``finetuned`` or ``adapter``...;
    ``extra``: the fine-tuning provenance of ``task-vector MODEL --forget DATA``)."""
    return TaskVectorRecord.build({
        "command": current_command(), "base": anchor.provenance(), **fields, "dtype": dtype,
        "num_parameters": anchor.num_parameters, "base_config": architecture(anchor.config), **(extra or {}),
        "run_id": run_id,
    })


class TaskVectorJob(Job):
    """``finetuned - base`` in fp32, cast to the storage dtype, one tensor at a time."""

    hash_outputs = True

    def __init__(self, base: str | Path, finetuned: str | Path, out_dir: str | Path, *, dtype: str,
                 max_shard_size: int | str, allow_pickle: bool, extra_provenance: dict[str, Any] | None,
                 source: Source | None = None) -> None:
        check_float_dtype(dtype)
        self.base, self.finetuned, self.out, self.dtype = base, finetuned, Path(out_dir), dtype
        self.source = source = source or Source()
        opening = source.open([Input(role, model, allow_pickle=allow_pickle, scratch=scratch_for(out_dir))
                               for role, model in (("base", base), ("finetuned", finetuned))])
        import torch  # while a Hub source reads the headers

        self.store = getattr(torch, dtype)
        self.anchor = opening[0]()
        self.tuned = opening[1]()
        self.extra = extra_provenance
        anchor, tuned = self.anchor, self.tuned
        check_architecture(architecture(anchor.config), architecture(tuned.config), "the fine-tuned model", str(base))
        check_same_tensors({n: anchor.shape(n) for n in anchor.names}, {n: tuned.shape(n) for n in tuned.names},
                           f"base {base}", f"fine-tuned {finetuned}", tied=is_tied(anchor.config))
        for name in anchor.names:
            if not (anchor.dtype(name).is_floating_point and tuned.dtype(name).is_floating_point):
                raise MismatchError(f"tensor {name} is not floating point ({anchor.dtype(name)}, {tuned.dtype(name)}); "
                                    "task vectors are defined for float weights only")
        self.run_id = make_run_id({"kind": "task_vector", "base": anchor.identity, "finetuned": tuned.identity,
                                   "dtype": dtype, "max_shard_size": str(max_shard_size)})

    def outputs(self) -> list[tuple[Path, str]]:
        return [(self.out, self.run_id)]

    def local_inputs(self) -> list[Path]:
        return [c.root for c in (self.anchor, self.tuned) if not c.is_hub]

    def reads(self, name: str) -> list[Checkpoint]:
        """The checkpoints :meth:`load` reads ``name`` from (the plan of ``--dry-run``)."""
        return [self.anchor, self.tuned]

    def held_bytes(self, name: str) -> int:
        """Memory one tensor holds in flight: both inputs, their float32 difference and the stored result."""
        numel = self.anchor.entries[name].nbytes // max(1, self.anchor.dtype(name).itemsize)
        return self.anchor.entries[name].nbytes + self.tuned.entries[name].nbytes + numel * (4 + self.store.itemsize)

    def streams(self) -> list[Stream]:
        specs = [TensorSpec(n, dtype_code(self.store), self.anchor.shape(n)) for n in self.anchor.names]
        return [Stream("task_vector", specs, self.load, self.combine, "task vector", reads=self.reads)]

    def load(self, name: str) -> tuple[Any, Any]:
        return self.anchor.get(name), self.tuned.get(name)

    def combine(self, name: str, pair: tuple[Any, Any]) -> list[Any]:
        import torch

        diff = pair[1].to(torch.float32).sub_(pair[0].to(torch.float32))
        if not bool(torch.isfinite(diff).all()):
            raise NonFiniteError(f"tensor {name} of the task vector has NaN or Inf (from {self.base} or "
                                 f"{self.finetuned}); check those checkpoints")
        return [diff.to(self.store)]

    def record(self, index: int, folder: Path) -> tuple[TaskVectorRecord, Any]:
        from perta_hub.cards.render import artifact_card

        record = task_vector_record(self.anchor, self.dtype, self.run_id, self.extra,
                                    finetuned=self.tuned.provenance())
        return record, artifact_card("task_vector", record.to_dict())

    def close(self) -> None:
        self.anchor.close()
        self.tuned.close()


def task_vector(
    base: str | Path,
    finetuned: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = TASK_VECTOR.dtype,
    max_shard_size: int | str = TASK_VECTOR.max_shard_size,
    allow_pickle: bool = TASK_VECTOR.allow_pickle,
    extra_provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``finetuned - base`` (computed in fp32, stored in ``dtype``) as a task-vector artifact.

    Args:
        base: the anchor (the model to unlearn, MUSE-style, or its pre-trained base, Ilharco-style):
            a folder, a ``.safetensors`` file or a Hub id ``org/name[@revision]``.
        finetuned: the anchor fine-tuned on the forget set (same architecture).
        out_dir: the artifact folder to create.
        dtype: storage dtype of the difference: ``float32`` (default), ``bfloat16`` or ``float16``.
        max_shard_size: per-shard limit (``5GB``, ``500MB``, bytes).
        extra_provenance: more fields for ``perta_config.json`` (the fine-tuning recipe, see
            :class:`~perta_hub.records.TaskVectorRecord`).
    Returns:
        the artifact folder.
    """
    job = TaskVectorJob(base, finetuned, out_dir, dtype=dtype, max_shard_size=max_shard_size,
                        allow_pickle=allow_pickle, extra_provenance=extra_provenance)
    with one_torch_thread():
        return run_job(job, max_shard_size=max_shard_size, progress=progress)[0]
