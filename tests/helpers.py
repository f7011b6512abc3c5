"""Small helpers shared by the tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def load_state(folder: Path, prefix: str = "model") -> dict[str, Any]:
    """Every tensor of a sharded safetensors folder, read with safetensors directly."""
    from safetensors.torch import load_file

    index = folder / f"{prefix}.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [f"{prefix}.safetensors"]
    state: dict[str, Any] = {}
    for name in files:
        state.update(load_file(folder / name))
    return state


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to check that inputs are untouched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite_tensors(folder: Path, prefix: str, edit: Any) -> None:
    """Rewrite every shard of ``folder``/``prefix`` with ``edit(state_of_shard) -> new state``; index updated."""
    from safetensors.torch import load_file, save_file

    index_path = folder / f"{prefix}.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map: dict[str, str] = {}
    for name in sorted(set(index["weight_map"].values())):
        state = edit(load_file(folder / name))
        save_file({k: v.contiguous() for k, v in state.items()}, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in state})
    index["weight_map"] = weight_map
    index_path.write_text(json.dumps(index))


def accelerate_launch(launch_args: list[str], command: list[Any], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``perta-hub COMMAND`` under ``accelerate launch LAUNCH_ARGS`` on CPU; assert it succeeded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         "-m", "perta_hub", *[str(c) for c in command]],
        env=env, capture_output=True, text=True, timeout=300, cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _importances(state: dict[str, Any], seed: int, names: list[str] | None = None) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(t.shape, generator=gen) for n, t in state.items() if names is None or n in names}


def make_weight_map(out: Path, model: Path, names: list[str] | None = None, **provenance: Any) -> Path:
    """A weight-map artifact of random importances (seeds 1 and 2) for ``model``'s tensors (or ``names``)."""
    from perta_hub.jobs.artifact import save_artifact

    state = load_state(model)
    return save_artifact(out, "weight_map", {"importance_forget": _importances(state, 1, names),
                                             "importance_retain": _importances(state, 2, names)},
                         {"method": "test", "p": 1.0, "lam": 1.0, "eps": 1e-12, **provenance}, progress=False)


# -- the merge kernel as the reference of every merge path (tests/merge/test_kernel.py, tests/stream) --------

#: the tensors of the restricted (``--params``) weight maps of :func:`weight_map`
RESTRICTED = ["model.layers.1.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"]


def same_bits(a: Any, b: Any) -> bool:
    """Same dtype, shape and bytes."""
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def assert_is_kernel(got: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Every tensor of a merge path's output is, bit for bit, the kernel's (:func:`kernel_outputs`)."""
    assert set(got) == set(expected), what
    for name, tensor in expected.items():
        assert same_bits(got[name], tensor), (what, name)


def weight_map(kind: str | None, tmp_path: Path, target: Path) -> Path | None:
    """None, a map of every tensor, or a --params map of two tensors whose rest is w=0 or w=1."""
    if kind is None:
        return None
    if kind == "all":
        return make_weight_map(tmp_path / "wm", target)
    return make_weight_map(tmp_path / f"wm-{kind}", target, names=RESTRICTED, params="up_proj|q_proj",
                           unrestricted=kind)


def kernel_outputs(target: Path, tv: Path, wm: Path | None, alphas: list[float],
                   overrides: dict[str, float] | None = None) -> dict[float, dict[str, Any]]:
    """alpha -> name -> :func:`perta_hub.merge.kernel.merge_tensor` called directly on the inputs' files (read with
    safetensors); ``overrides``: p/lam/eps given to apply instead of the map's."""
    from perta_hub.merge.kernel import Weighting, merge_tensor

    theta, tau = load_state(target), load_state(tv, "task_vector")
    weighting, i_f, i_r = None, {}, {}
    if wm is not None:
        config = json.loads((wm / "perta_config.json").read_text())
        given = {k: config[k] for k in ("p", "lam", "eps")} | (overrides or {})
        weighting = Weighting(given["p"], given["lam"], given["eps"], config.get("unrestricted"))
        i_f, i_r = load_state(wm, "importance_forget"), load_state(wm, "importance_retain")
    out: dict[float, dict[str, Any]] = {a: {} for a in alphas}
    for name, t in theta.items():
        importances = (i_f[name], i_r[name]) if name in i_f else None
        results = merge_tensor(name, t, tau[name], alphas, weighting=weighting, importances=importances).checked()
        for alpha, result in zip(alphas, results, strict=True):
            out[alpha][name] = result
    return out
