"""The safetensors file format: dtype codes, header parsing and validation, tensor locations."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's limit

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


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: a key given twice is refused (``json`` would keep the last one silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


class _Duplicate(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0  # not bool, not float


def parse_header(path: Path) -> tuple[dict[str, Any], list[TensorEntry]]:
    """Parse and validate a safetensors header, reading no tensor data.

    The rules are the safetensors library's (``Metadata::validate``), checked in full before a byte of
    data is used: a header length of at most 100 MB inside the file; UTF-8 JSON holding one object, no
    key given twice; ``__metadata__`` a string -> string map; each tensor a known dtype, a shape of
    non-negative integers and ``data_offsets`` ``[begin, end]`` with ``end - begin == prod(shape) *
    dtype size``; sorted by offset, the tensors tile the data area from byte 0 to the file's last byte
    exactly (no gap, no overlap, nothing after).

    Returns:
        (the header as parsed, the tensors sorted by offset, with absolute file offsets).
    Raises:
        CheckpointError: one line naming the file (and the tensor) and what is wrong.
    """
    fix = "re-download or re-create it"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes); {fix}")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(f"{path} has a corrupt safetensors header (length {header_len}, file "
                                      f"{size} bytes); {fix}")
            raw = fh.read(header_len)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    return parse_header_bytes(raw, size, path)


def parse_header_bytes(raw: bytes, size: int, path: Path) -> tuple[dict[str, Any], list[TensorEntry]]:
    """:func:`parse_header` of a header already read: ``raw`` is the JSON after the 8-byte length, ``size`` the
    file's size in bytes and ``path`` where the file is (or will be) on disk (a remote file's header is judged
    by the same rules before its data is downloaded)."""
    fix = "re-download or re-create it"
    header_len = len(raw)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicates,
                            parse_constant=_refuse_constant)
    except _Duplicate as err:
        raise CheckpointError(f"{path} has a corrupt safetensors header (key {str(err)!r} given twice); {fix}") from err
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        reason = "not UTF-8" if isinstance(err, UnicodeDecodeError) else "not valid JSON"
        raise CheckpointError(f"{path} has a corrupt safetensors header ({reason}); {fix}") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header (not a JSON object); {fix}")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path} has a corrupt safetensors header (__metadata__ must map strings to "
                              f"strings); {fix}")
    data_start = 8 + header_len
    rows: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        bad = f"{path}: tensor {name!r} has a corrupt header entry"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{bad} (not an object); {fix}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise CheckpointError(f"{bad} (dtype {dtype!r}); {fix}")
        if dtype not in DTYPES:
            shown = dtype if dtype.isprintable() else repr(dtype)  # a line break in it must not break the line
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {shown}; perta-hub reads "
                                  f"{', '.join(DTYPES)}")
        if not (isinstance(shape, list) and all(_is_uint(d) for d in shape)):
            raise CheckpointError(f"{bad} (shape {shape!r} is not a list of non-negative integers); {fix}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(x) for x in offsets)):
            raise CheckpointError(f"{bad} (data_offsets {offsets!r} is not [begin, end]); {fix}")
        begin, end = offsets
        if end < begin:
            raise CheckpointError(f"{bad} (data_offsets [{begin}, {end}] end before they begin); {fix}")
        nbytes = math.prod(shape) * DTYPES[dtype][1]
        if end - begin != nbytes:
            raise CheckpointError(f"{bad} ({end - begin} bytes for shape {tuple(shape)} of {dtype}, which "
                                  f"needs {nbytes}); {fix}")
        rows.append((begin, end, name, dtype, tuple(shape)))
    rows.sort()
    expected = 0
    entries = []
    for begin, end, name, dtype, shape in rows:
        if begin != expected:
            what = "overlaps the tensor before it" if begin < expected else f"leaves a gap after byte {expected}"
            raise CheckpointError(f"{path}: tensor {name!r} has a corrupt header entry (data_offsets [{begin}, "
                                  f"{end}] {what}); {fix}")
        expected = end
        entries.append(TensorEntry(name, path, dtype, shape, end - begin, data_start + begin))
    if data_start + expected != size:
        state = "is truncated" if data_start + expected > size else "has extra bytes after its tensors"
        raise CheckpointError(f"{path} {state} ({size} bytes, the header describes {data_start + expected}); {fix}")
    return header, entries


def read_header(path: Path) -> dict[str, Any]:
    """The validated header of a safetensors file (see :func:`parse_header`)."""
    return parse_header(path)[0]


def _entries(path: Path, only: set[str] | None = None) -> list[TensorEntry]:
    """The tensors of ``path`` in file order (all, or those named in ``only``)."""
    entries = parse_header(path)[1]
    return entries if only is None else [e for e in entries if e.name in only]
