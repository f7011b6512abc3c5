"""Property-based fuzzing (hypothesis) of the two readers of untrusted bytes: the safetensors header parser and the
record reader. Generated files are either refused with one line (a perta-hub error) or read exactly as the
safetensors library reads them (headers), or as written (records: every key's value, and a lossless round
trip). A fixed budget, derandomized, so the fast suite runs the same examples every time in a few seconds.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perta_hub.errors import PertaError
from perta_hub.io.safetensors_format import DTYPES, parse_header
from perta_hub.records import CONFIG_NAME, RECORDS, parse_record, read_record

BUDGET = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: bytes per element of the dtypes the safetensors library knows beyond perta-hub's (read by it, refused here)
OTHER_DTYPES = {"U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1, "C64": 8}
NAMES = st.sampled_from(["a", "b", "w.weight", "__metadata__", "", "é", "x\ny", "a"]) | st.text(max_size=6)
SMALL_INT = st.integers(0, 3)
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-3, 2**65) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=6))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def _obj(pairs: list[tuple[str, Any]]) -> str:
    """A JSON object from key/value pairs, a key possibly twice (``json.dumps`` of a dict cannot say that)."""
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


DEFECTS = ["dtype", "offset", "shape", "field", "extra", "value", "metadata", "twice", "padded", "leading space",
           "list", "scalar", "cut", "latin-1", "data short", "data long", "length"]


@st.composite
def safetensors_files(draw: Any) -> bytes:
    """A safetensors file, valid (about half of them) or broken in one or two of the ways a header can be: dtypes
    (unknown to perta-hub or to both, not strings), shapes and offsets (wrong sizes, gaps, overlaps, negative,
    floats, booleans, huge), fields missing or extra, a key given twice, ``__metadata__`` of the wrong type, a
    header that is not an object, not JSON or not UTF-8, a length prefix off, data missing or left over; and
    the valid variants a writer may produce (padding, key order, other dtypes of the library)."""
    defects = draw(st.just(frozenset()) | st.frozensets(st.sampled_from(DEFECTS), min_size=1, max_size=2))
    pairs: list[tuple[str, Any]] = []
    offset = 0
    count = draw(st.integers(0, 4))
    broken = draw(st.integers(0, max(count - 1, 0)))  # the tensor an entry defect is put in
    for i in range(count):
        dtype: Any = draw(st.sampled_from([*DTYPES, *OTHER_DTYPES]))
        if "dtype" in defects and i == broken:
            dtype = draw(st.text(max_size=4) | JSON_SCALARS)
        shape = draw(st.lists(SMALL_INT, max_size=3))
        width = DTYPES[dtype][1] if dtype in DTYPES else OTHER_DTYPES.get(dtype, 1) if isinstance(dtype, str) else 1
        nbytes = math.prod(shape) * width
        entry: dict[str, Any] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        if i == broken:
            if "offset" in defects:
                entry["data_offsets"][draw(st.integers(0, 1))] += draw(st.integers(-3, 3))
            if "shape" in defects:
                entry["shape"] = draw(st.lists(SMALL_INT | JSON_SCALARS, max_size=3))
            if "field" in defects:
                del entry[draw(st.sampled_from(sorted(entry)))]
            if "extra" in defects:
                entry[draw(st.text(max_size=4))] = draw(JSON_VALUES)
            if "value" in defects:
                entry[draw(st.sampled_from(sorted(entry)))] = draw(JSON_VALUES)
        pairs.append((draw(NAMES.filter(lambda n: n != "__metadata__")) if "twice" not in defects
                      else draw(NAMES), entry))
    pairs = draw(st.permutations(pairs))
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
    if "metadata" in defects:
        metadata = draw(JSON_VALUES)
    if metadata is not None:
        pairs.insert(draw(st.integers(0, len(pairs))), ("__metadata__", metadata))
    if "twice" in defects and pairs:
        pairs.append(draw(st.sampled_from(pairs)))  # a key given twice
    text = _obj(pairs)
    if "list" in defects:
        text = json.dumps([dict(pairs)])
    elif "scalar" in defects:
        text = json.dumps(draw(JSON_SCALARS))
    raw = text.encode("latin-1" if "latin-1" in defects else "utf-8", "replace")
    if "padded" in defects:
        raw += b" " * draw(st.integers(1, 7))  # the writer's alignment padding: valid
    if "leading space" in defects:
        raw = b" " + raw
    if "cut" in defects:
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    data = draw(st.binary(min_size=offset, max_size=offset))
    if "data short" in defects and data:
        data = data[:-1]
    if "data long" in defects:
        data += b"\0"
    length = len(raw) + (draw(st.integers(-len(raw), 9)) if "length" in defects else 0)
    return struct.pack("<Q", length) + raw + data


def _library_read(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], dict[str, str] | None] | None:
    """What the safetensors library reads from a file: tensors (dtype, shape, bytes) and metadata; None if it
    refuses the file."""
    import safetensors

    try:
        tensors = safetensors.deserialize(path.read_bytes())
        with safetensors.safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata()
    except Exception:  # noqa: BLE001 - the library's own errors (SafetensorError, ...)
        return None
    return {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"])) for name, t in tensors}, metadata


def _one_line(err: BaseException) -> None:
    assert isinstance(err, PertaError), f"{type(err).__name__}: {err}"
    assert str(err) and "\n" not in str(err) and "\r" not in str(err), repr(str(err))


def _check_header(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        path.write_bytes(blob)
        library = _library_read(path)
        try:
            header, entries = parse_header(path)
        except Exception as err:  # noqa: BLE001 - judged: only a one-line perta-hub error passes
            _one_line(err)
            # refusing what the library reads: only for a dtype perta-hub does not merge or a key given twice
            assert library is None or "unsupported dtype" in str(err) or "given twice" in str(err), str(err)
            return
        assert library is not None, f"perta-hub reads a file the safetensors library refuses: {blob[:200]!r}"
        tensors, metadata = library
        assert {e.name: (e.dtype_code, e.shape, blob[e.offset:e.offset + e.nbytes]) for e in entries} == tensors
        assert header.get("__metadata__") == metadata
        assert all(e.file == path for e in entries)


@BUDGET
@given(safetensors_files())
def test_safetensors_headers_are_refused_in_one_line_or_read_as_the_library_reads_them(blob: bytes) -> None:
    _check_header(blob)


@BUDGET
@given(st.binary(max_size=64), st.integers(0, 80))
def test_arbitrary_bytes_as_a_safetensors_file(raw: bytes, length: int) -> None:
    _check_header(struct.pack("<Q", length) + raw)


# -- records ---------------------------------------------------------------------------------------------------

SOURCE = {"source": "org/model", "repo_id": "org/model", "revision": "0" * 40}
VALID: dict[str, dict[str, Any]] = {  # one minimal valid record of each kind (its required keys)
    "task_vector": {"dtype": "float32", "base": SOURCE, "num_parameters": 12},
    "weight_map": {"method": "grad", "p": 1.0, "model": SOURCE},
    "model": {"alpha": 0.5, "method": "tv", "target": SOURCE,
              "task_vector": {"source": "tv", "revision": "sha256:0"}, "weights": None},
    "finetuned_model": {"base": SOURCE, "data_role": "forget"},
    "unlearned_model": {"method": "npo", "target": SOURCE},
}


@st.composite
def record_files(draw: Any) -> tuple[bytes, Any]:
    """``perta_config.json`` bytes (and the JSON they hold, or None): a valid record of a kind with keys set,
    changed or dropped at random, an unknown kind, a non-object, truncated or non-UTF-8 text."""
    kind = draw(st.sampled_from([k for k in VALID if k in RECORDS]) | JSON_SCALARS)
    data: Any = {"kind": kind, **VALID.get(kind, {})} if isinstance(kind, str) else {"kind": kind}
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "drop", "nested"]))
        keys = sorted(data, key=str)
        if action == "set" or not keys:
            key = draw(st.sampled_from([*keys, "run_id", "files", "hub", "command", "alpha", "x"]))
            data[key] = draw(JSON_VALUES)
        elif action == "drop" and keys:
            del data[draw(st.sampled_from(keys))]
        elif action == "nested":
            parent = draw(st.sampled_from(keys))
            if isinstance(data[parent], dict):
                data[parent] = {**data[parent], draw(st.sampled_from(["source", "revision", "repo_id", "y"])):
                                draw(JSON_VALUES)}
    form = draw(st.sampled_from(["json"] * 8 + ["list", "cut", "bytes", "not utf-8", "deep"]))
    if form == "list":
        data = [data]
    text = json.dumps(data)
    if form == "cut":
        return text.encode()[: draw(st.integers(0, len(text) - 1))], None
    if form == "bytes":
        return draw(st.binary(max_size=40)), None
    if form == "not utf-8":
        return b"\xff" + text.encode(), None
    if form == "deep":
        return b"[" * 100_000 + b"]" * 100_000, None
    return text.encode(), data


def _same(a: Any, b: Any) -> bool:
    """JSON equality where 1 == 1.0 (a number field reads integers as floats) but not True == 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@BUDGET
@given(record_files())
def test_records_are_refused_in_one_line_or_read_as_written(case: tuple[bytes, Any]) -> None:
    blob, data = case
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CONFIG_NAME).write_bytes(blob)
        try:
            record = read_record(tmp)
        except Exception as err:  # noqa: BLE001 - judged: only a one-line perta-hub error passes
            _one_line(err)
            return
    assert isinstance(data, dict), f"read a record from {blob[:80]!r}"
    assert record.kind == data["kind"]
    written = record.to_dict()
    assert all(_same(written[k], v) for k, v in data.items() if k != "kind"), (written, data)
    assert set(written) - {"perta_hub_version", "kind"} <= set(data)
    assert parse_record(json.loads(record.to_json())) == record  # nothing lost on the way back out
