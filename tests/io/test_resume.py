"""An interrupted apply (killed mid-run) resumes and gives the same bytes as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from perta_hub.merge.task_vector import task_vector
from tests.helpers import tree_digest

SIZE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=6)


def _apply_cmd(base, tv, out):
    return [sys.executable, "-m", "perta_hub", "apply", str(base), "--task-vector", str(tv),
            "--alpha", "0.5", "--alpha", "1.0", "-o", str(out), "--max-shard-size", "100KB", "--device", "cpu"]


def _weights_and_index(folder):
    return {k: v for k, v in tree_digest(folder).items() if k.endswith((".safetensors", ".index.json"))}


@pytest.mark.slow
def test_killed_apply_resumes_to_identical_bytes(tmp_path, make_model):
    base, tuned = make_model("base", **SIZE), make_model("tuned", seed=1, **SIZE)
    tv = task_vector(base, tuned, tmp_path / "tv", progress=False)
    env = {**os.environ, "PERTA_HUB_CACHE": str(tmp_path / "cache")}

    reference = tmp_path / "reference"
    subprocess.run(_apply_cmd(base, tv, reference), check=True, env=env, capture_output=True)

    out = tmp_path / "out"
    proc = subprocess.Popen(_apply_cmd(base, tv, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("alpha-*/model-*.safetensors")):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.glob("alpha-*/model-*.safetensors"))
    assert done, "the run should have been killed after its first complete shard"
    assert not (out / "alpha-0.5" / "model.safetensors.index.json").exists(), "killed too late to test resuming"

    rerun = subprocess.run(_apply_cmd(base, tv, out), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    for alpha in ("alpha-0.5", "alpha-1.0"):
        assert _weights_and_index(out / alpha) == _weights_and_index(reference / alpha)
        assert not list((out / alpha).glob(".*"))  # no partial files, no run marker
