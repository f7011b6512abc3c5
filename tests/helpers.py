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
