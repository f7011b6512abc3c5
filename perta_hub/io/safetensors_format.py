"""The safetensors file format: dtype codes, header parsing and validation, tensor locations."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError

# safetensors dtype codes -> (torch dtype name, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, safetensors dtype code, shape and byte size."""

    name: str
    file: Path
    dtype_code: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # absolute byte offset of the tensor's data in the file

    @property
    def torch_dtype_name(self) -> str:
        return DTYPES[self.dtype_code][0]


def read_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors header and check the file holds all the bytes it promises.

    Raises:
        CheckpointError: the file is truncated, not safetensors, or its header is corrupt.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes); re-download or re-create it")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(size - 8, 100 << 20):
                raise CheckpointError(f"{path} has a corrupt safetensors header (length {header_len}); re-download or re-create it")
            header = json.loads(fh.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} has a corrupt safetensors header ({err}); re-download or re-create it") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header; re-download or re-create it")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            if entry["dtype"] not in DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, IndexError) as err:
            raise CheckpointError(f"{path} has a corrupt header entry for {name}; re-download or re-create it") from err
    if size < 8 + header_len + end:
        raise CheckpointError(
            f"{path} is truncated ({size} bytes, the header needs {8 + header_len + end}); "
            "re-download or re-create it"
        )
    return header


def _entries(path: Path, only: set[str] | None = None) -> list[TensorEntry]:
    header = read_header(path)
    with path.open("rb") as fh:
        data_start = 8 + struct.unpack("<Q", fh.read(8))[0]
    out = []
    for name, entry in header.items():
        if name == "__metadata__" or (only is not None and name not in only):
            continue
        start, end = (int(x) for x in entry["data_offsets"])
        out.append(TensorEntry(name, path, entry["dtype"], tuple(entry["shape"]), end - start, data_start + start))
    out.sort(key=lambda e: e.offset)
    return out


