"""Low-rank task vectors: a LoRA adapter's factors kept in the artifact instead of the dense delta.

Layout (beside ``perta_config.json`` and the card): the groups ``lora_A`` (``r x in`` per tensor) and
``lora_B`` (``out x r``), each tensor named by the base parameter it updates and stored as the adapter saved
it. ``perta_config.json`` ``lora`` records ``stored: "factors"``, the ``scaling`` and ``fan_in_fan_out``;
``dtype`` is the dtype the dense delta is cast to when it is formed. Every reader of a task vector goes
through :func:`open_task_vector`, which gives the same tensors for both forms: ``scaling * B @ A`` in
float32 (transposed for ``fan_in_fan_out``), cast to ``dtype``, formed per tensor on the fly, and zeros of
the model's shape outside the adapted tensors. So ``apply`` (local and streaming) and ``verify`` give
byte-identical results from either form (the dense form is what
:func:`perta_hub.merge.lora_delta.lora_task_vector` writes with ``low_rank=False``).

Size: ``r * (in + out)`` numbers per adapted tensor instead of ``4 * in * out`` bytes for every tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError
from perta_hub.io.reader import TensorIndex

GROUP_A, GROUP_B = "lora_A", "lora_B"
FACTORS = "factors"  # the value of lora.stored in perta_config.json


def dense_delta(a: Any, b: Any, scaling: float, fan_in_fan_out: bool) -> Any:
    """``scaling * B @ A`` in float32 (``a``: ``r x in``, ``b``: ``out x r``); transposed for ``fan_in_fan_out``.

    The one definition of a LoRA update's dense form: the dense artifact, the low-rank view and ``verify``
    all call it, so their bytes agree."""
    out = (b.float() @ a.float()).mul_(scaling)
    return out.T.contiguous() if fan_in_fan_out else out


def is_low_rank(config: dict[str, Any]) -> bool:
    """True for a task-vector record whose artifact stores LoRA factors (``lora.stored == "factors"``)."""
    lora = config.get("lora")
    return isinstance(lora, dict) and lora.get("stored") == FACTORS


@dataclass(frozen=True)
class DenseEntry:
    """What a formed tensor holds in memory (``nbytes``), for the merge's in-flight budget."""

    shape: tuple[int, ...]
    nbytes: int


class LowRankTaskVector(TensorIndex):
    """The dense task vector of a low-rank artifact, formed tensor by tensor (the reading side of
    :class:`~perta_hub.io.reader.Checkpoint`: ``names``, ``shape``, ``dtype``, ``entries``, ``get``, ``close``).

    ``shapes``: the model's tensors (name -> shape); tensors the adapter does not update are zeros of that
    shape. ``a`` and ``b`` are the factor groups (their ``entries`` say which files a tensor is read from).
    """

    def __init__(self, artifact: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        import torch

        config = artifact.config
        lora = config["lora"]
        self.source = artifact.source
        self.a, self.b = artifact.group(GROUP_A), artifact.group(GROUP_B)
        self.scaling = float(lora["scaling"])
        self.fan_in_fan_out = bool(lora.get("fan_in_fan_out"))
        self.store = getattr(torch, str(config.get("dtype", "float32")))
        if set(self.a.names) != set(self.b.names):
            odd = sorted(set(self.a.names) ^ set(self.b.names))[0]
            raise CheckpointError(f"{artifact.source}: {odd} has only one of its LoRA factors (lora_A, lora_B); "
                                  "re-create the task vector")
        self.adapted: dict[str, tuple[int, ...]] = {}
        for name in self.a.names:
            (rank, fan_in), (fan_out, rank_b) = self.a.shape(name), self.b.shape(name)
            if rank != rank_b:
                raise CheckpointError(f"{artifact.source}: the LoRA factors of {name} have ranks {rank} (lora_A) and "
                                      f"{rank_b} (lora_B); re-create the task vector")
            self.adapted[name] = (fan_in, fan_out) if self.fan_in_fan_out else (fan_out, fan_in)
        itemsize = torch.empty((), dtype=self.store).element_size()
        order = list(shapes) + [n for n in self.adapted if n not in shapes]
        self.entries: dict[str, DenseEntry] = {}
        for name in order:
            shape = tuple(self.adapted.get(name, shapes.get(name, ())))
            numel = math.prod(int(dim) for dim in shape)
            # formed in float32, then cast: the float32 tensor is what is held
            self.entries[name] = DenseEntry(shape, numel * max(itemsize, 4) if name in self.adapted else
                                            numel * itemsize)
        self.identity = f"lowrank:{self.a.identity}:{self.b.identity}"
        self.is_hub, self.root = self.a.is_hub, self.a.root

    def dtype(self, name: str) -> Any:
        return self.store

    def parts(self, name: str) -> list[Any]:
        """The factor groups ``name`` is read from (none for a tensor the adapter leaves at zero)."""
        return [self.a, self.b] if name in self.adapted else []

    def get(self, name: str) -> Any:
        """The dense delta of ``name`` in the recorded dtype (``scaling * B @ A``, or zeros)."""
        import torch

        if name not in self.adapted:  # one zero seen at every position: nothing allocated or read
            return torch.zeros((), dtype=self.store).expand(self.entries[name].shape)
        return dense_delta(self.a.get(name), self.b.get(name), self.scaling, self.fan_in_fan_out).to(self.store)

    def close(self) -> None:
        self.a.close()
        self.b.close()


def open_task_vector(artifact: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """The tensors of a task-vector artifact: its ``task_vector`` group, or for a low-rank artifact the
    :class:`LowRankTaskVector` over the model's tensors ``shapes``."""
    if is_low_rank(artifact.config):
        return LowRankTaskVector(artifact, shapes)
    return artifact.group("task_vector")


def artifact_bytes(folder: Path) -> int:
    """Bytes of an artifact's weight files."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
