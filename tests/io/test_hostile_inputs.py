"""Hostile inputs: every file perta-hub reads is data, checked before it is used.

Each case builds its hostile input here (headers written by hand with struct + json where the
safetensors library would refuse to write them), then asserts, through the CLI and through the Python
API: the exact one-line error, a non-zero exit, no output folder, and inputs unchanged.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from perta_hub import apply
from perta_hub.cli import main
from perta_hub.errors import CheckpointError, InputError, NonFiniteError, PertaError
from perta_hub.io.safetensors_format import DTYPES
from perta_hub.merge.task_vector import task_vector
from tests.helpers import make_weight_map, rewrite_tensors, tree_digest

FIX = "re-download or re-create it"
TENSOR = "model.layers.1.self_attn.q_proj.weight"


@pytest.fixture
def inputs(tmp_path: Path, make_model: Callable[..., Path]) -> tuple[Path, Path, Path]:
    """(a tiny fp32 model, a task vector for it in several shards, a weight map for it)."""
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", max_shard_size="30KB", progress=False)
    return base, tv, make_weight_map(tmp_path / "wm", base)


def refused(out: Path, watched: list[Path], args: dict[str, Any], error: type[PertaError], message: str) -> None:
    """``apply(**args)`` is refused with ``message``: by the CLI (one line, non-zero exit) and the API
    (``error``); no output folder is left and no input changes."""
    before = [tree_digest(p) for p in watched]
    cli = [str(args["model"]), "--task-vector", str(args["task_vector"]), "-o", str(out)]
    for alpha in args.get("alphas", [1.0]):
        cli += ["--alpha", str(alpha)]
    if args.get("weights"):
        cli += ["--weights", str(args["weights"])]
    for key in ("p", "lam", "eps"):
        if args.get(key) is not None:
            cli += [f"--{key}", str(args[key])]
    result = CliRunner().invoke(main, ["apply", *cli])
    lines = [line for line in result.output.splitlines() if line.strip()]  # progress bars may come first
    assert result.exit_code == error.exit_code != 0, result.output
    assert "Traceback" not in result.output and sum(line.startswith("Error") for line in lines) == 1, result.output
    assert lines[-1] == f"Error: {message}"
    assert not out.exists()
    with pytest.raises(error) as caught:
        apply(args["model"], args["task_vector"], alphas=args.get("alphas", [1.0]), out_dir=out,
              weights=args.get("weights"), p=args.get("p"), lam=args.get("lam"), eps=args.get("eps"), progress=False)
    assert type(caught.value) is error and str(caught.value) == message
    assert not out.exists()
    assert [tree_digest(p) for p in watched] == before


# -- file names read from an index ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x.safetensors", "/etc/passwd", "sub/../../x.safetensors", "..", ""])
def test_index_naming_a_file_outside_its_folder(tmp_path, inputs, name):
    base, tv, _ = inputs
    index = tv / "task_vector.safetensors.index.json"
    shard = sorted(tv.glob("task_vector-*.safetensors"))[0]
    (tmp_path / "x.safetensors").write_bytes(shard.read_bytes())  # a valid file there: only the name stops it
    data = json.loads(index.read_text())
    data["weight_map"][TENSOR] = name
    index.write_text(json.dumps(data))
    message = (f"{index} names {name!r}, which is not a plain file name in {tv}; refusing to read it "
               "(re-download or re-create the folder)")
    refused(tmp_path / "out", [base, tv], {"model": base, "task_vector": tv}, CheckpointError, message)


def test_model_index_naming_an_absolute_path(tmp_path, inputs):
    base, tv, _ = inputs
    index = base / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.norm.weight"] = "/etc/passwd"
    index.write_text(json.dumps(data))
    message = (f"{index} names '/etc/passwd', which is not a plain file name in {base}; refusing to read it "
               "(re-download or re-create the folder)")
    refused(tmp_path / "out", [base, tv], {"model": base, "task_vector": tv}, CheckpointError, message)


def test_shard_linked_outside_its_folder(tmp_path, inputs):
    base, tv, _ = inputs
    shard = sorted(tv.glob("task_vector-*.safetensors"))[0]
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(outside)
    message = (f"{tv / 'task_vector.safetensors.index.json'} names {shard.name!r}, a link to {outside.resolve()} "
               f"outside {tv}; refusing to read it (copy the file into the folder if you trust it)")
    refused(tmp_path / "out", [base, tmp_path / "elsewhere.safetensors"], {"model": base, "task_vector": tv},
            CheckpointError, message)


def test_links_inside_the_folder_are_read(tmp_path, inputs):
    base, tv, _ = inputs
    shard = sorted(tv.glob("task_vector-*.safetensors"))[0]
    kept = tv / "kept.bin"
    shard.rename(kept)
    shard.symlink_to(kept.name)
    assert apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", progress=False)


# -- safetensors headers ------------------------------------------------------------------------------

def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: str | bytes, data: bytes, length: int | None = None) -> None:
    text = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)


def _damage(path: Path, case: str) -> str:
    """Rewrite ``path`` with a broken header of kind ``case``; return the error message expected."""
    header, data = _split(path)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    first, second = names[0], names[1]
    (b0, e0), (b1, e1) = header[first]["data_offsets"], header[second]["data_offsets"]
    bad = f"{path}: tensor {first!r} has a corrupt header entry"
    size = 8 + len(json.dumps(header)) + len(data)
    if case == "overlap":
        header[second]["data_offsets"] = [b1 - 4, e1 - 4]
        message = (f"{path}: tensor {second!r} has a corrupt header entry (data_offsets [{b1 - 4}, {e1 - 4}] "
                   f"overlaps the tensor before it); {FIX}")
    elif case == "gap":
        header[second]["data_offsets"] = [b1 + 4, e1 + 4]
        message = (f"{path}: tensor {second!r} has a corrupt header entry (data_offsets [{b1 + 4}, {e1 + 4}] "
                   f"leaves a gap after byte {b1}); {FIX}")
    elif case == "byte_count":
        numel = math.prod(header[first]["shape"])
        header[first]["shape"] = [numel + 1]
        message = f"{bad} ({e0 - b0} bytes for shape ({numel + 1},) of F32, which needs {4 * (numel + 1)}); {FIX}"
    elif case == "end_before_begin":
        header[first]["data_offsets"] = [e0, b0]
        message = f"{bad} (data_offsets [{e0}, {b0}] end before they begin); {FIX}"
    elif case == "dtype":
        header[first]["dtype"] = "F99"
        message = f"{path}: tensor {first!r} has unsupported dtype F99; perta-hub reads {', '.join(DTYPES)}"
    elif case == "negative_shape":
        header[first]["shape"] = [-1, 4]
        message = f"{bad} (shape [-1, 4] is not a list of non-negative integers); {FIX}"
    elif case == "float_offsets":
        header[first]["data_offsets"] = [float(b0), e0]
        message = f"{bad} (data_offsets [{float(b0)}, {e0}] is not [begin, end]); {FIX}"
    elif case == "metadata":
        header["__metadata__"] = {"format": 1}
        message = f"{path} has a corrupt safetensors header (__metadata__ must map strings to strings); {FIX}"
    elif case == "not_an_object":
        _write(path, "[1, 2]", data)
        return f"{path} has a corrupt safetensors header (not a JSON object); {FIX}"
    elif case == "nan":
        text = json.dumps(header).replace(json.dumps(header[first]["data_offsets"]), f"[NaN, {e0}]", 1)
        _write(path, text, data)
        return f"{path} has a corrupt safetensors header (not valid JSON); {FIX}"
    elif case == "not_utf8":
        _write(path, b'{"\xff": 1}', data)
        return f"{path} has a corrupt safetensors header (not UTF-8); {FIX}"
    elif case == "duplicate":
        text = json.dumps(header)
        _write(path, text[:-1] + f", {json.dumps(first)}: {json.dumps(header[first])}}}", data)
        return f"{path} has a corrupt safetensors header (key {first!r} given twice); {FIX}"
    elif case == "huge_length":
        _write(path, json.dumps(header), data, length=1 << 40)
        return f"{path} has a corrupt safetensors header (length {1 << 40}, file {size} bytes); {FIX}"
    elif case == "extra_bytes":
        _write(path, json.dumps(header), data + bytes(8))
        return f"{path} has extra bytes after its tensors ({size + 8} bytes, the header describes {size}); {FIX}"
    elif case == "truncated":
        _write(path, json.dumps(header), data[:-4])
        return f"{path} is truncated ({size - 4} bytes, the header describes {size}); {FIX}"
    else:
        raise AssertionError(case)
    _write(path, json.dumps(header), data)
    return message


HEADER_CASES = ["overlap", "gap", "byte_count", "end_before_begin", "dtype", "negative_shape", "float_offsets",
                "metadata", "not_an_object", "nan", "not_utf8", "duplicate", "huge_length", "extra_bytes",
                "truncated"]


@pytest.mark.parametrize("case", HEADER_CASES)
def test_hand_written_bad_header(tmp_path, inputs, case):
    base, tv, _ = inputs
    shard = max(tv.glob("task_vector-*.safetensors"), key=lambda p: len(_split(p)[0]))
    message = _damage(shard, case)
    if case != "duplicate":  # the library keeps the last of two equal keys; perta-hub refuses them
        from safetensors import safe_open

        with pytest.raises(Exception), safe_open(str(shard), "pt") as f:  # noqa: B017 - the library's own types
            [f.get_tensor(k) for k in f.keys()]  # noqa: B018, SIM118 - safe_open has no __iter__
    refused(tmp_path / "out", [base, tv], {"model": base, "task_vector": tv}, CheckpointError, message)


def test_bad_header_in_the_model(tmp_path, inputs):
    base, tv, _ = inputs
    shard = max(base.glob("model-*.safetensors"), key=lambda p: len(_split(p)[0]))
    message = _damage(shard, "overlap")
    refused(tmp_path / "out", [base, tv], {"model": base, "task_vector": tv}, CheckpointError, message)


# -- artifacts hold finite floats; importances are >= 0 ------------------------------------------------

@pytest.mark.parametrize(("group", "dtype"), [("task_vector", torch.int32), ("importance_retain", torch.bool),
                                              ("importance_forget", torch.int64)])
def test_integer_or_bool_tensor_in_an_artifact(tmp_path, inputs, group, dtype):
    base, tv, wm = inputs
    folder = tv if group == "task_vector" else wm
    rewrite_tensors(folder, group, lambda s: {k: (v.to(dtype) if k == TENSOR else v) for k, v in s.items()})
    message = (f"tensor {TENSOR} of {group} in {folder} is {str(dtype).removeprefix('torch.')}, not floating point; "
               "task vectors and weight maps hold bfloat16, float16 or float32 tensors: re-create the artifact")
    refused(tmp_path / "out", [base, tv, wm], {"model": base, "task_vector": tv, "weights": wm},
            CheckpointError, message)


@pytest.mark.parametrize(("group", "value"), [("importance_forget", -0.5), ("importance_retain", -2.0),
                                              ("importance_forget", math.inf), ("importance_retain", math.nan),
                                              ("importance_forget", -math.inf)])
def test_negative_or_non_finite_importance(tmp_path, inputs, group, value):
    base, tv, wm = inputs

    def poison(state: dict[str, Any]) -> dict[str, Any]:
        if TENSOR in state:
            state[TENSOR] = state[TENSOR].clone()
            state[TENSOR][3, 5] = value
        return state

    rewrite_tensors(wm, group, poison)
    if math.isfinite(value):
        error, message = CheckpointError, (f"tensor {TENSOR} of the weight map has a negative importance in {group} "
                                           f"({value}); importances must be >= 0: re-create the weight map")
    else:
        error, message = NonFiniteError, (f"tensor {TENSOR} of the weight map has NaN or Inf in {group}; "
                                          "re-create the weight map")
    refused(tmp_path / "out", [base, tv, wm], {"model": base, "task_vector": tv, "weights": wm}, error, message)


# -- p, lam, eps ------------------------------------------------------------------------------------------

WHY_EPS = " (eps = 0 makes w = 0/0 = NaN wherever both importances are 0)"


@pytest.mark.parametrize(("key", "value", "bound"), [
    ("eps", 0.0, "> 0"), ("eps", -1e-12, "> 0"), ("eps", math.inf, "> 0"), ("eps", 1e39, "> 0"),
    ("lam", math.inf, ">= 0"), ("lam", -1.0, ">= 0"), ("lam", math.nan, ">= 0"),
    ("p", 0.0, "> 0"), ("p", -1.0, "> 0"), ("p", math.inf, "> 0"),
])
def test_combination_parameters_out_of_range(tmp_path, inputs, key, value, bound):
    base, tv, wm = inputs
    message = (f"--{key} must be a finite number {bound}, got {value!r}{WHY_EPS if key == 'eps' else ''}; "
               f"pass --{key} with a value in range")
    refused(tmp_path / "out", [base, tv, wm], {"model": base, "task_vector": tv, "weights": wm, key: value},
            InputError, message)


def test_combination_parameter_recorded_in_the_weight_map(tmp_path, inputs):
    base, tv, wm = inputs
    config_path = wm / "perta_config.json"
    config = json.loads(config_path.read_text())
    config["eps"] = 0.0
    config_path.write_text(json.dumps(config))
    message = (f"eps = 0.0 in {wm}/perta_config.json must be a finite number > 0, got 0.0{WHY_EPS}; "
               "pass --eps with a value in range")
    refused(tmp_path / "out", [base, tv, wm], {"model": base, "task_vector": tv, "weights": wm},
            InputError, message)
    assert apply(base, tv, alphas=[1.0], out_dir=tmp_path / "out", weights=wm, eps=1e-12, progress=False)


# -- results checked after the cast -----------------------------------------------------------------------

@pytest.mark.parametrize("alphas", [[1.0], [0.1, 1.0]])
def test_fp16_overflow_names_the_tensor_and_the_alpha(tmp_path, make_model, alphas):
    base, tuned = make_model("base16", dtype="float16"), make_model("tuned16", seed=1, dtype="float16")
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    rewrite_tensors(tv, "task_vector", lambda s: {k: (torch.full_like(v, 1e5) if k == TENSOR else v)
                                                 for k, v in s.items()})
    message = (f"tensor {TENSOR}: the merge with alpha 1.0 gives NaN or Inf in torch.float16 "
               "(out of range for the model's dtype); use a smaller alpha")
    refused(tmp_path / "out", [base, tv], {"model": base, "task_vector": tv, "alphas": alphas},
            NonFiniteError, message)
    # in range for every alpha: written, and finite
    out = apply(base, tv, alphas=[0.1], out_dir=tmp_path / "ok", progress=False)[0]
    assert out.is_dir() and not any(p.name.startswith(".") and "partial" in p.name for p in out.iterdir())


def test_overflow_is_caught_on_the_whole_tensor_path_too():
    from perta_hub.merge.math import merge_chunked, merge_whole

    theta = torch.zeros(300_000, dtype=torch.float16)
    delta = torch.zeros(300_000)
    delta[-1] = 1e5  # in the last chunk
    for merge in (merge_whole, merge_chunked):
        results, ok, _ = merge(theta, delta, [0.1], None)
        assert ok and bool(torch.isfinite(results[0]).all())
        _, ok, _ = merge(theta, delta, [0.1, 1.0], None)
        assert not ok
        i_f, i_r = torch.rand(300_000), torch.rand(300_000)
        i_r[7] = -1.0
        _, ok, _ = merge(theta, delta * 0, [0.1], (i_f, i_r, 1.0, 1.0, 1e-12))
        assert not ok


def test_valid_combinations_pass_unchanged():
    from perta_hub.merge.math import check_combination

    assert check_combination(1, 1, 1e-12) == (1.0, 1.0, 1e-12)
    assert check_combination(2.0, 0.0, 1e-24) == (2.0, 0.0, 1e-24)
    with pytest.raises(InputError, match=r"^--p must be a number, got 'abc'$"):
        check_combination("abc", 1, 1)
    with pytest.raises(InputError, match=r"^lam = True in x must be a number, got True$"):
        check_combination(1, True, 1, {"lam": "lam = True in x"})
