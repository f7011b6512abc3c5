"""The task vector of a trained LoRA adapter: ``scaling * B @ A`` per adapted weight, zero elsewhere.

A LoRA adapter on a linear layer ``W`` (shape ``[out, in]``) adds ``delta_W = scaling * B @ A`` with
``A: [r, in]``, ``B: [out, r]``, ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
:func:`lora_task_vector` writes that delta, computed in float32 from the saved adapter (not as
``merged - base``, which a bf16 checkpoint would round), for every parameter of the base model, in the same
artifact format as :func:`perta_hub.merge.task_vector.task_vector`, so ``apply`` cannot tell the two apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, MismatchError, NonFiniteError
from perta_hub.io.fingerprint import content_hash
from perta_hub.io.output_folder import make_run_id
from perta_hub.io.reader import open_checkpoint, recorded_path, scratch_for
from perta_hub.io.sharding import TensorSpec, dtype_code
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.merge.low_rank import FACTORS, GROUP_A, GROUP_B, dense_delta
from perta_hub.merge.task_vector import check_float_dtype, task_vector_record
from perta_hub.records import TaskVectorRecord

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


@dataclass
class LoraDelta:
    """A saved adapter, read for its deltas: base parameter name -> (A, B), and the scaling."""

    folder: Path
    config: dict[str, Any]
    pairs: dict[str, tuple[Any, Any]]
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def revision(self) -> str:
        """``sha256:`` over the adapter's config and weights: its content identity, as recorded."""
        return "sha256:" + content_hash(sorted(p for p in self.folder.iterdir()
                                               if p.name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)))

    def delta(self, name: str) -> Any:
        """``scaling * B @ A`` in float32 for the base parameter ``name`` (shape of that weight)."""
        a, b = self.pairs[name]
        return dense_delta(a, b, self.scaling, bool(self.config.get("fan_in_fan_out")))


def read_adapter(folder: str | Path) -> LoraDelta:
    """Read ``adapter_config.json`` and ``adapter_model.safetensors`` of a plain LoRA adapter.

    Raises:
        CheckpointError: missing files, or an adapter kind whose update is not ``scaling * B @ A``
            (DoRA, per-module rank/alpha patterns, embedding or convolution LoRA).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not (config_path.is_file() and weights_path.is_file()):
        raise CheckpointError(f"{folder} is not a LoRA adapter folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} "
                              "are needed); fine-tune with --lora-rank to make one")
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):  # peft writes a set in hash order: record it sorted
        config["target_modules"] = sorted(config["target_modules"])
    if config.get("peft_type") != "LORA":
        raise CheckpointError(f"{folder} holds a {config.get('peft_type')} adapter; only LoRA adapters are supported")
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise CheckpointError(f"{folder}: DoRA and per-module rank/alpha patterns are not supported; "
                              "fine-tune with a plain --lora-rank")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    tensors = load_file(str(weights_path))
    pairs: dict[str, tuple[Any, Any]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            if ".lora_B." in key:
                continue
            raise CheckpointError(f"{folder}: tensor {key} is not a linear LoRA factor (embedding or other LoRA "
                                  "kinds are not supported)")
        module = key.split(".lora_A.")[0]
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise CheckpointError(f"{folder}: {key} has no matching lora_B tensor; the adapter is incomplete")
        base_name = module.removeprefix(_PREFIX) + ".weight"
        pairs[base_name] = (a, b)
    if not pairs:
        raise CheckpointError(f"{folder} holds no LoRA factors")
    return LoraDelta(folder, config, pairs, scaling)


class LoraDeltaJob(Job):
    """The dense task vector of ``adapter`` over every tensor of ``base``."""

    stored: dict[str, str] = {}  # more run-id fields (the low-rank form's)

    def __init__(self, base: str | Path, adapter: str | Path, out_dir: str | Path, *, dtype: str,
                 max_shard_size: int | str, allow_pickle: bool, extra_provenance: dict[str, Any] | None) -> None:
        import torch

        check_float_dtype(dtype)
        self.base, self.out, self.dtype, self.extra = base, Path(out_dir), dtype, extra_provenance
        self.store = getattr(torch, dtype)
        self.lora = lora = read_adapter(adapter)
        self.anchor = anchor = open_checkpoint(base, allow_pickle=allow_pickle, scratch=scratch_for(out_dir))
        for name, (a, b) in lora.pairs.items():
            if name not in anchor.entries:
                raise MismatchError(f"the adapter in {lora.folder} adapts {name}, which {base} does not hold; "
                                    "the adapter was trained on another model")
            expected = (b.shape[0], a.shape[1])
            shape = anchor.shape(name)
            if lora.config.get("fan_in_fan_out"):
                expected = expected[::-1]
            if tuple(shape) != tuple(expected):
                raise MismatchError(f"tensor {name} has shape {tuple(shape)} in {base} but the adapter's update "
                                    f"has shape {tuple(expected)}; the adapter was trained on another model")
        self.adapter_revision = lora.revision
        self.run_id = make_run_id({"kind": "task_vector", "base": anchor.identity, "adapter": self.adapter_revision,
                                   "dtype": dtype, "max_shard_size": str(max_shard_size), **self.stored})

    def outputs(self) -> list[tuple[Path, str]]:
        return [(self.out, self.run_id)]

    def local_inputs(self) -> list[Path]:
        return [self.lora.folder] + ([] if self.anchor.is_hub else [self.anchor.root])

    def streams(self) -> list[Stream]:
        specs = [TensorSpec(n, dtype_code(self.store), self.anchor.shape(n)) for n in self.anchor.names]
        return [Stream("task_vector", specs, lambda _name: None, self.combine, "LoRA task vector")]

    def combine(self, name: str, _unused: Any) -> list[Any]:
        import torch

        if name not in self.lora.pairs:
            return [torch.zeros(self.anchor.shape(name), dtype=self.store)]
        delta = self.lora.delta(name)
        if not bool(torch.isfinite(delta).all()):
            raise NonFiniteError(f"the LoRA update of {name} has NaN or Inf; the adapter in {self.lora.folder} "
                                 "is broken")
        return [delta.to(self.store)]

    def lora_fields(self) -> dict[str, Any]:
        lora, adapted = self.lora, sorted(self.lora.pairs)
        return {"rank": lora.rank, "alpha": float(lora.config["lora_alpha"]), "scaling": lora.scaling,
                "use_rslora": bool(lora.config.get("use_rslora")),
                "target_modules": lora.config.get("target_modules"),
                "num_adapted_tensors": len(adapted), "adapted_tensors": adapted,
                "delta": "scaling * B @ A in float32; zero outside adapted_tensors"}

    def record(self, index: int, folder: Path) -> tuple[TaskVectorRecord, Any]:
        from perta_hub.cards.render import artifact_card

        lora = self.lora
        record = task_vector_record(
            self.anchor, self.dtype, self.run_id, self.extra,
            adapter={"source": str(lora.folder), "revision": self.adapter_revision,
                     **recorded_path(lora.folder, False)}, lora_rank=lora.rank,
            lora=self.lora_fields())
        return record, artifact_card("task_vector", record.to_dict())

    def close(self) -> None:
        self.anchor.close()


class LoraFactorsJob(LoraDeltaJob):
    """The adapter's factors as a low-rank task vector (:mod:`perta_hub.merge.low_rank`): groups ``lora_A`` and
    ``lora_B``, each tensor as the adapter stored it, named by the base parameter it updates."""

    stored = {"stored": FACTORS}

    def streams(self) -> list[Stream]:
        adapted = [n for n in self.anchor.names if n in self.lora.pairs]
        streams = []
        for prefix, side in ((GROUP_A, 0), (GROUP_B, 1)):
            specs = [TensorSpec(n, dtype_code(self.lora.pairs[n][side].dtype), tuple(self.lora.pairs[n][side].shape))
                     for n in adapted]
            streams.append(Stream(prefix, specs, lambda _name: None,
                                  lambda name, _unused, side=side: [self.lora.pairs[name][side]],
                                  f"LoRA task vector ({prefix})"))
        return streams

    def lora_fields(self) -> dict[str, Any]:
        return {**super().lora_fields(), "stored": FACTORS,
                "fan_in_fan_out": bool(self.lora.config.get("fan_in_fan_out")),
                "delta": f"scaling * B @ A in float32 (cast to {self.dtype}), formed per tensor when applied from "
                         "the stored factors lora_A (r x in) and lora_B (out x r); zero outside adapted_tensors"}


def lora_task_vector(
    base: str | Path,
    adapter: str | Path,
    out_dir: str | Path,
    *,
    low_rank: bool = True,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    extra_provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write the low-rank delta of ``adapter`` as a task-vector artifact for ``base``.

    ``low_rank`` (default): the adapter's factors ``lora_A``/``lora_B`` are stored and ``apply`` forms
    ``scaling * B @ A`` per tensor (:mod:`perta_hub.merge.low_rank`; the same bytes as the dense form).
    Otherwise every tensor of ``base`` gets an entry (the same names, shapes and shard layout rules as
    :func:`perta_hub.merge.task_vector.task_vector`): ``scaling * B @ A`` (float32, stored in ``dtype``) for
    the adapted weights, zeros elsewhere.

    Args:
        base: the model the adapter was trained on (folder, ``.safetensors`` file or Hub id).
        adapter: a peft LoRA adapter folder (``finetune --lora-rank`` writes one in ``OUT/adapter``).
        out_dir: the artifact folder to create.
        dtype: dtype of the dense delta (stored, or formed when applied): ``float32`` (default), ``bfloat16``
            or ``float16``.
        extra_provenance: more fields for ``perta_config.json``.
    Returns:
        the artifact folder.
    """
    kind = LoraFactorsJob if low_rank else LoraDeltaJob
    job = kind(base, adapter, out_dir, dtype=dtype, max_shard_size=max_shard_size, allow_pickle=allow_pickle,
               extra_provenance=extra_provenance)
    return run_job(job, max_shard_size=max_shard_size, progress=progress)[0]
