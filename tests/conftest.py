"""Shared fixtures: tiny Llama checkpoints and tokenizers built offline in tmp_path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch CPU thread per test process (and per subprocess a test starts): the models here have ~100k parameters,
# too small for intra-op threads to help, and two xdist workers of two threads each on two cores (or beside any
# other busy process) spend most of their time in thread synchronisation: the smollm2 recipe test took 366 s with
# torch's default threads and 24 s with one on a busy 2-core machine. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TOFU_DIR = Path(__file__).resolve().parents[1] / "perta_hub" / "resources" / "tofu"


def tofu_rows(split: str) -> list[dict[str, Any]]:
    """Rows of a bundled TOFU split (list of dicts with the Hub's field names)."""
    return json.loads((TOFU_DIR / f"{split}.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def _session_hash_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The sha256 cache (``PERTA_HUB_CACHE``) of the session-/module-scoped fixtures: a fresh folder, never the
    user's ``~/.cache/perta-hub`` (each test then gets its own, :func:`_hash_cache`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERTA_HUB_CACHE", str(tmp_path_factory.mktemp("hash-cache-session")))
        yield


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test hashes into its own empty ``PERTA_HUB_CACHE`` (subprocesses inherit it). The cache is one JSON
    file rewritten whole on every new entry; shared by every test (and kept in ~/.cache between runs) it grew to
    tens of MB and made each command that hashes a file cost seconds."""
    monkeypatch.setenv("PERTA_HUB_CACHE", str(tmp_path_factory.mktemp("hash-cache")))


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
