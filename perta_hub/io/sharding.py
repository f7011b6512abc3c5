"""Output shard layout, planned from tensor headers before any weight is read.

Shards are named ``{prefix}-00001-of-0000N.safetensors`` with a ``{prefix}.safetensors.index.json`` in
the Hugging Face index schema (``metadata.total_size``, ``weight_map``). Within a shard, tensors are
laid out by decreasing element size (as safetensors itself does) so every tensor stays aligned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from perta_hub.errors import InputError
from perta_hub.io.safetensors_format import DTYPES

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
TORCH_TO_CODE = {name: code for code, (name, _) in DTYPES.items()}
#: metadata of every shard perta-hub writes (as transformers writes it)
SHARD_METADATA = {"format": "pt"}


def dtype_code(dtype: Any) -> str:
    """safetensors dtype code of a torch dtype (``torch.bfloat16`` -> ``BF16``)."""
    return TORCH_TO_CODE[str(dtype).removeprefix("torch.")]


def parse_size(size: int | str) -> int:
    """Bytes from ``5GB`` (10^9), ``2GiB`` (2^30), ``500MB``, ``40KB`` or a plain integer, like transformers."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise InputError(f"cannot read the size {size!r}; use e.g. 5GB, 500MB, 2GiB or a number of bytes")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise InputError(f"a shard size must be positive, got {size!r}")
    return value


@dataclass(frozen=True)
class TensorSpec:
    """One output tensor: name, safetensors dtype code (``BF16``...), shape."""

    name: str
    dtype_code: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype_code][1]
        for dim in self.shape:
            n *= dim
        return n


@dataclass
class PlannedShard:
    """One output file: its name, its tensors in processing order, and their data offsets."""

    filename: str
    tensors: list[TensorSpec]
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def data_size(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def in_file_order(self) -> list[TensorSpec]:
        """The tensors sorted by their offset in the file."""
        return sorted(self.tensors, key=lambda t: self.offsets[t.name][0])

    def header(self, metadata: dict[str, str]) -> bytes:
        """The safetensors header (8-byte length + JSON padded to 8 bytes) for this shard."""
        body: dict[str, object] = {"__metadata__": metadata}
        for spec in self.in_file_order():
            body[spec.name] = {"dtype": spec.dtype_code, "shape": list(spec.shape),
                               "data_offsets": list(self.offsets[spec.name])}
        raw = json.dumps(body, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw


def plan_shards(specs: list[TensorSpec], max_shard_size: int | str, prefix: str) -> list[PlannedShard]:
    """Split ``specs`` (in processing order) into shards of at most ``max_shard_size`` bytes.

    A tensor larger than the limit gets a shard of its own, as in transformers.
    """
    limit = parse_size(max_shard_size)
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if groups[-1] and size + spec.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    total = len(groups)
    shards = []
    for i, group in enumerate(groups, start=1):
        shard = PlannedShard(f"{prefix}-{i:05d}-of-{total:05d}.safetensors", group)
        start = 0
        for spec in sorted(group, key=lambda t: -DTYPES[t.dtype_code][1]):  # stable: keeps order per size
            shard.offsets[spec.name] = (start, start + spec.nbytes)
            start += spec.nbytes
        shards.append(shard)
    return shards


def index_json(shards: list[PlannedShard]) -> str:
    """The ``*.safetensors.index.json`` text for ``shards``."""
    weight_map = {spec.name: shard.filename for shard in shards for spec in shard.tensors}
    total = sum(shard.data_size for shard in shards)
    return json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
