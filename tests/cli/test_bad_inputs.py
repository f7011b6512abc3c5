"""Bad input: one clear line, a non-zero exit, nothing half-written, inputs untouched."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from perta_hub.cli import main
from perta_hub.merge.task_vector import task_vector
from tests.helpers import load_state, make_weight_map, rewrite_tensors, tree_digest


@pytest.fixture
def pair(tmp_path, make_model):
    base, tuned = make_model("base"), make_model("tuned", seed=1)
    tv = task_vector(base, tuned, tmp_path / "tv", max_shard_size="30KB", progress=False)
    return base, tv


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output.strip()


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0, output
    lines = [line for line in output.splitlines() if line.strip()]  # progress bars may come first
    assert lines[-1].startswith("Error: ") and "Traceback" not in output, output
    assert sum(line.startswith("Error") for line in lines) == 1, output
    for needle in needles:
        assert needle in lines[-1], output


def apply_cli(model, tv, out, *extra):
    return run_cli("apply", model, "--task-vector", tv, "--alpha", "1", "-o", out, *extra)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path, pair):
    base, tv = pair
    name = "model.layers.0.mlp.up_proj.weight"
    rewrite_tensors(tv, "task_vector", lambda s: {k: (v[:-1] if k == name else v) for k, v in s.items()})
    before = tree_digest(base), tree_digest(tv)
    code, out = apply_cli(base, tv, tmp_path / "out")
    assert_one_line_error(code, out, name, "(64, 32)", "(63, 32)")
    assert not (tmp_path / "out").exists()
    assert (tree_digest(base), tree_digest(tv)) == before


def test_missing_and_extra_tensors(tmp_path, pair):
    base, tv = pair
    name = "model.norm.weight"
    rewrite_tensors(tv, "task_vector", lambda s: {k: v for k, v in s.items() if k != name})
    code, out = apply_cli(base, tv, tmp_path / "out")
    assert_one_line_error(code, out, name, "missing")
    rewrite_tensors(tv, "task_vector", lambda s: {**s, "extra.weight": torch.zeros(3)})
    code, out = apply_cli(base, tv, tmp_path / "out")
    assert_one_line_error(code, out, "extra.weight")
    assert not (tmp_path / "out").exists()


def test_task_vector_for_another_base(tmp_path, pair, make_model):
    _, tv = pair
    other = make_model("other", num_hidden_layers=3)
    code, out = apply_cli(other, tv, tmp_path / "out")
    assert_one_line_error(code, out, "another base", "num_hidden_layers")


def test_tied_embeddings_are_not_reported_missing_and_untied_vector_is_refused(tmp_path, make_model, pair):
    tied = make_model("tied", tie_word_embeddings=True)
    tied_tuned = make_model("tied_tuned", seed=1, tie_word_embeddings=True)
    tv = task_vector(tied, tied_tuned, tmp_path / "tied_tv", progress=False)
    code, out = apply_cli(tied, tv, tmp_path / "tied_out")
    assert code == 0, out
    code, out = apply_cli(tied, pair[1], tmp_path / "out")
    assert_one_line_error(code, out, "tie_word_embeddings")


@pytest.mark.parametrize("damage", ["truncate", "corrupt_header", "garbage"])
def test_truncated_or_corrupt_safetensors(tmp_path, pair, damage):
    base, tv = pair
    shard = sorted(base.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) - 100])
    elif damage == "corrupt_header":
        shard.write_bytes(data[:8] + b"{not json" + data[17:])
    else:
        shard.write_bytes(b"\x00\x01" * 3)
    code, out = apply_cli(base, tv, tmp_path / "out")
    assert_one_line_error(code, out, shard.name)
    assert not (tmp_path / "out").exists()


def test_pickle_checkpoint_refused_unless_allowed(tmp_path, pair):
    from safetensors.torch import load_file

    base, tv = pair
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    state = {}
    for f in base.glob("model-*.safetensors"):
        state.update(load_file(f))
    torch.save(state, pickled / "pytorch_model.bin")
    for f in base.glob("*.json"):
        if "index" not in f.name:
            (pickled / f.name).write_bytes(f.read_bytes())
    code, out = apply_cli(pickled, tv, tmp_path / "out")
    assert_one_line_error(code, out, "pickle", "--allow-pickle")
    code, out = apply_cli(pickled, tv, tmp_path / "out", "--allow-pickle")
    assert code == 0, out
    # the converted copy lived in the output's temporary area and is gone; nothing else was left beside -o
    assert not any(p.name.endswith(".perta-tmp") or p.name.startswith("perta-pickle-") for p in tmp_path.iterdir())
    # the run id hashes the pickle's content, so the finished output is recognised: the re-run writes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    code, out = apply_cli(pickled, tv, tmp_path / "out", "--allow-pickle")
    assert code == 0, out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamps
    code, out = apply_cli(base, tv, tmp_path / "from-safetensors")
    assert code == 0, out
    assert load_state(tmp_path / "out").keys() == load_state(tmp_path / "from-safetensors").keys()
    for name, tensor in load_state(tmp_path / "out").items():
        assert tensor.equal(load_state(tmp_path / "from-safetensors")[name]), name


@pytest.mark.parametrize("where", ["task_vector", "weights"])
def test_nan_or_inf_refused_naming_the_tensor(tmp_path, pair, where):
    base, tv = pair
    name = "model.layers.1.self_attn.q_proj.weight"

    def poison(state):
        if name in state:
            state[name] = state[name].clone()
            state[name][0, 0] = math.nan if where == "task_vector" else math.inf
        return state

    wm = make_weight_map(tmp_path / "wm", base)
    if where == "task_vector":
        rewrite_tensors(tv, "task_vector", poison)
    else:
        rewrite_tensors(wm, "importance_forget", poison)
    code, out = apply_cli(base, tv, tmp_path / "out", "--weights", wm)
    assert_one_line_error(code, out, name, "NaN or Inf", "weight map" if where == "weights" else "task vector")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("alpha", ["abc", "nan"])
def test_alpha_not_a_number(tmp_path, pair, alpha):
    base, tv = pair
    code, out = run_cli("apply", base, "--task-vector", tv, "--alpha", alpha, "-o", tmp_path / "out")
    assert_one_line_error(code, out, "--alpha")
    assert not (tmp_path / "out").exists()


def test_output_holding_another_model_or_an_input_is_refused(tmp_path, pair, make_model):
    base, tv = pair
    other = make_model("other", seed=5)
    before = tree_digest(other)
    code, out = apply_cli(base, tv, other)
    assert_one_line_error(code, out, "already holds")
    assert tree_digest(other) == before
    code, out = apply_cli(base, tv, base)
    assert_one_line_error(code, out, "input")


def test_task_vector_between_different_models_is_refused(tmp_path, make_model):
    a = make_model("a")
    b = make_model("b", intermediate_size=48)
    code, out = run_cli("task-vector", "--base", a, "--finetuned", b, "-o", tmp_path / "tv")
    assert_one_line_error(code, out, "intermediate_size")
    assert not (tmp_path / "tv").exists()


def test_missing_input_and_unknown_repo_offline(tmp_path, pair):
    base, tv = pair
    code, out = apply_cli(tmp_path / "nowhere", tv, tmp_path / "out")
    assert_one_line_error(code, out, "does not exist")
    code, out = apply_cli(base, "someone/not-cached-tv", tmp_path / "out")
    assert_one_line_error(code, out, "someone/not-cached-tv")


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_gives_one_line_and_no_partial_file(tmp_path, pair):
    """The file-size limit makes writes fail like a full disk would (EFBIG instead of ENOSPC)."""
    base, tv = pair
    before = tree_digest(base)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "perta_hub", "apply", str(base), "--task-vector", str(tv),
                           "--alpha", "1", "-o", str(out), "--max-shard-size", "60KB"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size,
                          env={**os.environ, "PERTA_HUB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: cannot write more"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.glob(".*.partial")) and not (out / "model.safetensors.index.json").exists()
    assert tree_digest(base) == before
    # with room again, the same command completes
    code, msg = run_cli("apply", base, "--task-vector", tv, "--alpha", "1", "-o", out, "--max-shard-size", "60KB")
    assert code == 0, msg
    assert json.loads((out / "perta_config.json").read_text())["alpha"] == 1.0
