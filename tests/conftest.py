"""Shared fixtures: tiny Llama checkpoints and tokenizers built offline in tmp_path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOFU_DIR = Path(__file__).resolve().parents[1] / "perta_hub" / "resources" / "tofu"


def tofu_rows(split: str) -> list[dict[str, Any]]:
    """Rows of a bundled TOFU split (list of dicts with the Hub's field names)."""
    return json.loads((TOFU_DIR / f"{split}.json").read_text())


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    return TOFU_DIR


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """A 384-token byte-level BPE tokenizer with a chat template, trained on TOFU forget01."""
    from perta_hub.demo.tiny import train_tokenizer

    rows = tofu_rows("forget01") + tofu_rows("real_authors") + tofu_rows("world_facts")
    return train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384)


@pytest.fixture(scope="session")
def plain_tokenizer() -> Any:
    """The same kind of tokenizer without a chat template (plain Question/Answer format)."""
    from perta_hub.demo.tiny import train_tokenizer

    rows = tofu_rows("forget01")
    return train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384, chat_template=False)


@pytest.fixture
def make_model(tmp_path: Path, tokenizer: Any) -> Callable[..., Path]:
    """Factory: ``make_model(name, seed=0, dtype="float32", tie_word_embeddings=False, max_shard_size="40KB")``.

    Writes a tiny Llama (hidden 32, 2 layers, vocab 384) under tmp_path/name with several shards.
    """
    from perta_hub.demo.tiny import build_tiny_llama

    def factory(name: str, *, seed: int = 0, dtype: str = "float32", max_shard_size: str | int = "40KB",
                **overrides: Any) -> Path:
        return build_tiny_llama(tmp_path / name, tokenizer, seed=seed, dtype=dtype,
                                max_shard_size=max_shard_size, **overrides)

    return factory
