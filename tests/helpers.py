"""Small helpers shared by the tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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
