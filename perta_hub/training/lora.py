"""LoRA (peft) for ``finetune --lora-rank R``: the adapter config, and the task vector of a trained adapter.

A LoRA adapter on a linear layer ``W`` (shape ``[out, in]``) adds ``delta_W = scaling * B @ A`` with
``A: [r, in]``, ``B: [out, r]``, ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
:func:`lora_task_vector` writes that delta, computed in float32 from the saved adapter (not as
``merged - base``, which a bf16 checkpoint would round), for every parameter of the base model: zero
outside the adapted layers, in the same artifact format as :func:`perta_hub.task_vector.task_vector`,
so ``apply`` cannot tell the two apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, InputError, MismatchError, NonFiniteError

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DEFAULT_TARGETS = "all-linear"
_PREFIX = "base_model.model."


def lora_config(rank: int, alpha: float | None, targets: str) -> Any:
    """A ``peft.LoraConfig`` for causal-LM fine-tuning (dropout 0, no bias, standard init).

    Args:
        rank: r, the inner dimension of ``B @ A`` (>= 1).
        alpha: lora_alpha; None -> ``2 * rank`` (scaling 2).
        targets: ``all-linear`` (every linear layer but the output head) or a comma-separated list of
            module names (``q_proj,v_proj``), matched by peft against the ends of module paths.
    """
    from peft import LoraConfig

    if rank < 1:
        raise InputError(f"--lora-rank must be >= 1, got {rank}")
    alpha = float(2 * rank if alpha is None else alpha)
    if alpha <= 0:
        raise InputError(f"--lora-alpha must be > 0, got {alpha}")
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise InputError("--lora-targets is empty; pass all-linear or module names such as q_proj,v_proj")
    target_modules: Any = DEFAULT_TARGETS if names == [DEFAULT_TARGETS] else names
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")


def wrap_model(model: Any, rank: int, alpha: float | None, targets: str) -> Any:
    """``peft.get_peft_model`` with :func:`lora_config`; unknown target names become an InputError."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(rank, alpha, targets))
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--lora-targets {targets!r} does not fit this model: {first}") from err


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

    def delta(self, name: str) -> Any:
        """``scaling * B @ A`` in float32 for the base parameter ``name`` (shape of that weight)."""
        a, b = self.pairs[name]
        out = (b.float() @ a.float()).mul_(self.scaling)
        return out.T.contiguous() if self.config.get("fan_in_fan_out") else out


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


def lora_task_vector(
    base: str | Path,
    adapter: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    extra_provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write the merged low-rank delta of ``adapter`` as a task-vector artifact for ``base``.

    Every tensor of ``base`` gets an entry (the same names, shapes and shard layout rules as
    :func:`perta_hub.task_vector.task_vector`): ``scaling * B @ A`` (float32, stored in ``dtype``) for
    the adapted weights, zeros elsewhere.

    Args:
        base: the model the adapter was trained on (folder, ``.safetensors`` file or Hub id).
        adapter: a peft LoRA adapter folder (``finetune --lora-rank`` writes one in ``OUT/adapter``).
        out_dir: the artifact folder to create.
        dtype: storage dtype, ``float32`` (default), ``bfloat16`` or ``float16``.
        extra_provenance: more fields for ``perta_config.json``.
    Returns:
        the artifact folder.
    """
    import torch

    from perta_hub.cards.render import artifact_card
    from perta_hub.io.artifacts import SHARD_METADATA, dtype_code
    from perta_hub.io.compat import architecture
    from perta_hub.io.fingerprint import content_hash
    from perta_hub.io.output_folder import claimed_outputs, current_command, finish_output, make_run_id
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.io.sharding import TensorSpec, plan_shards
    from perta_hub.io.writer import Output, stream_shards
    from perta_hub.merge.task_vector import FLOAT_DTYPES

    if dtype not in FLOAT_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    store = getattr(torch, dtype)
    lora = read_adapter(adapter)
    anchor = open_checkpoint(base, allow_pickle=allow_pickle)
    for name, (a, b) in lora.pairs.items():
        if name not in anchor.entries:
            raise MismatchError(f"the adapter in {lora.folder} adapts {name}, which {base} does not hold; "
                                "the adapter was trained on another model")
        expected = (b.shape[0], a.shape[1])
        shape = anchor.shape(name)
        if lora.config.get("fan_in_fan_out"):
            expected = expected[::-1]
        if tuple(shape) != tuple(expected):
            raise MismatchError(f"tensor {name} has shape {tuple(shape)} in {base} but the adapter's update has "
                                f"shape {tuple(expected)}; the adapter was trained on another model")
    adapter_files = sorted(p for p in lora.folder.iterdir() if p.name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    adapter_revision = "sha256:" + content_hash(adapter_files)

    out = Path(out_dir)
    specs = [TensorSpec(name, dtype_code(store), anchor.shape(name)) for name in anchor.names]
    shards = plan_shards(specs, max_shard_size, "task_vector")
    run_id = make_run_id({"kind": "task_vector", "base": anchor.identity, "adapter": adapter_revision,
                          "dtype": dtype, "max_shard_size": str(max_shard_size)})

    def load(name: str) -> Any:
        return None

    def combine(name: str, _unused: Any) -> list[Any]:
        if name not in lora.pairs:
            return [torch.zeros(anchor.shape(name), dtype=store)]
        delta = lora.delta(name)
        if not bool(torch.isfinite(delta).all()):
            raise NonFiniteError(f"the LoRA update of {name} has NaN or Inf; the adapter in {lora.folder} is broken")
        return [delta.to(store)]

    local_inputs = [anchor.root, lora.folder] if not anchor.is_hub else [lora.folder]
    with claimed_outputs([out], [run_id], local_inputs):
        stream_shards(shards, [Output(out, SHARD_METADATA)], "task_vector", load, combine,
                      desc="LoRA task vector", progress=progress)
        adapted = sorted(lora.pairs)
        config = {
            "kind": "task_vector",
            "command": current_command(),
            "base": anchor.provenance(),
            "adapter": {"source": str(lora.folder), "revision": adapter_revision},
            "dtype": dtype,
            "num_parameters": anchor.num_parameters,
            "base_config": architecture(anchor.config),
            "lora_rank": lora.rank,
            "lora": {"rank": lora.rank, "alpha": float(lora.config["lora_alpha"]), "scaling": lora.scaling,
                     "use_rslora": bool(lora.config.get("use_rslora")),
                     "target_modules": lora.config.get("target_modules"),
                     "num_adapted_tensors": len(adapted), "adapted_tensors": adapted,
                     "delta": "scaling * B @ A in float32; zero outside adapted_tensors"},
            **(extra_provenance or {}),
            "run_id": run_id,
        }
        finish_output(out, config, artifact_card("task_vector", config))
    anchor.close()
    return out
