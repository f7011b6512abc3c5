"""Fixtures of the verify tests: the local Hub (shared with the Hub tests) and a small merged model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.hub.conftest import hub  # noqa: F401


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """A target, a fine-tuned model, their task vector and the model ``apply`` makes (alpha 1, no weight map),
    built once per module; tests tamper with copies (:func:`model_copy`)."""
    from perta_hub.demo.tiny import build_tiny_llama
    from perta_hub.merge.apply import apply
    from perta_hub.merge.task_vector import task_vector

    root = tmp_path_factory.mktemp("merged")
    target = build_tiny_llama(root / "target", tokenizer, seed=0, max_shard_size="40KB")
    tuned = build_tiny_llama(root / "tuned", tokenizer, seed=1, max_shard_size="40KB")
    tv = task_vector(target, tuned, root / "tv", max_shard_size="40KB", progress=False)
    model = apply(target, tv, alphas=[1.0], out_dir=root / "model", device="cpu", max_shard_size="40KB",
                  progress=False)[0]
    return {"target": target, "tuned": tuned, "tv": tv, "model": model}


@pytest.fixture
def model_copy(merged: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the merged model (its inputs shared and unchanged)."""
    return Path(shutil.copytree(merged["model"], tmp_path / "model"))
