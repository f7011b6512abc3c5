"""Task vectors: ``tau = theta_finetuned - theta_anchor``, streamed tensor by tensor into an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, MismatchError, NonFiniteError
from perta_hub.io.artifacts import SHARD_METADATA, dtype_code
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import claimed_outputs, current_command, finish_output, make_run_id
from perta_hub.io.reader import open_checkpoint
from perta_hub.io.sharding import TensorSpec, plan_shards
from perta_hub.io.writer import Output, stream_shards
from perta_hub.runtime.devices import one_torch_thread

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def task_vector(
    base: str | Path,
    finetuned: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
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
        extra_provenance: more fields for ``perta_config.json`` (e.g. the fine-tuning recipe).
    Returns:
        the artifact folder.
    """
    import torch

    if dtype not in FLOAT_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    store = getattr(torch, dtype)
    anchor = open_checkpoint(base, allow_pickle=allow_pickle)
    tuned = open_checkpoint(finetuned, allow_pickle=allow_pickle)
    check_architecture(architecture(anchor.config), architecture(tuned.config), "the fine-tuned model", str(base))
    check_same_tensors({n: anchor.shape(n) for n in anchor.names}, {n: tuned.shape(n) for n in tuned.names},
                       f"base {base}", f"fine-tuned {finetuned}", tied=is_tied(anchor.config))
    for name in anchor.names:
        if not (anchor.dtype(name).is_floating_point and tuned.dtype(name).is_floating_point):
            raise MismatchError(f"tensor {name} is not floating point ({anchor.dtype(name)}, {tuned.dtype(name)}); "
                                "task vectors are defined for float weights only")

    out = Path(out_dir)
    specs = [TensorSpec(name, dtype_code(store), anchor.shape(name)) for name in anchor.names]
    shards = plan_shards(specs, max_shard_size, "task_vector")
    run_id = make_run_id({"kind": "task_vector", "base": anchor.identity, "finetuned": tuned.identity,
                          "dtype": dtype, "max_shard_size": str(max_shard_size)})

    def load(name: str) -> tuple[Any, Any]:
        return anchor.get(name), tuned.get(name)

    def combine(name: str, pair: tuple[Any, Any]) -> list[Any]:
        diff = pair[1].to(torch.float32).sub_(pair[0].to(torch.float32))
        if not bool(torch.isfinite(diff).all()):
            raise NonFiniteError(f"tensor {name} of the task vector has NaN or Inf (from {base} or {finetuned}); "
                                 "check those checkpoints")
        return [diff.to(store)]

    local_inputs = [c.root for c in (anchor, tuned) if not c.is_hub]
    with claimed_outputs([out], [run_id], local_inputs), one_torch_thread():
        stream_shards(shards, [Output(out, SHARD_METADATA)], "task_vector", load, combine,
                      desc="task vector", progress=progress, hash_outputs=True)
        config = {
            "kind": "task_vector",
            "command": current_command(),
            "base": anchor.provenance(),
            "finetuned": tuned.provenance(),
            "dtype": dtype,
            "num_parameters": anchor.num_parameters,
            "base_config": architecture(anchor.config),
            **(extra_provenance or {}),
            "run_id": run_id,
        }
        from perta_hub.cards.render import artifact_card

        finish_output(out, config, artifact_card("task_vector", config))
    anchor.close()
    tuned.close()
    return out
