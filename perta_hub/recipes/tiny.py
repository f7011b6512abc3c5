"""The ``tiny-model`` step: a byte-level BPE tokenizer trained on question/answer text and a randomly initialised
small Llama beside it (:mod:`perta_hub.demo.tiny`), as the tiny demo starts from."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def build(values: dict[str, Any], out: Path) -> Path:
    """Train the tokenizer on ``question answer`` of every row of ``tokenizer_data`` and save the Llama in ``out``
    (an unfinished folder of an earlier try is replaced)."""
    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer
    from perta_hub.recipes.data import load_rows

    if out.exists():
        shutil.rmtree(out)
    texts = [r["question"] + " " + r["answer"] for spec in values["tokenizer_data"] for r in load_rows(spec)]
    tokenizer = train_tokenizer(texts, vocab_size=values["vocab_size"])
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_llama(partial, tokenizer, seed=values["seed"], hidden_size=values["hidden_size"],
                     num_hidden_layers=values["layers"], intermediate_size=values["intermediate_size"],
                     num_attention_heads=values["heads"], num_key_value_heads=values["heads"], max_shard_size="5GB")
    partial.replace(out)
    return out
