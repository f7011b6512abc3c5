"""Options of the recipe step ``tiny-model`` (no command of its own): a byte-level BPE tokenizer and a randomly
initialised small Llama, trained and built offline (:mod:`perta_hub.demo.tiny`), as the tiny demo starts from."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, Range, option
from perta_hub.options.common import FOLDER


@dataclass(frozen=True)
class TinyModelOptions(Options):
    """The tokenizer's text and size, and the Llama's shape."""

    command = "tiny-model"

    out_dir: str | None = option("-o", "--output", type=FOLDER, required=True, help="Model folder to create.")
    tokenizer_data: tuple[str, ...] = option(
        "--tokenizer-data", multiple=True, default=("tofu:full", "tofu:real_authors", "tofu:world_facts"),
        help="Question/answer data whose text ('question answer') trains the tokenizer (repeatable).")
    vocab_size: int = option("--vocab-size", type=Range(int, min=64), default=1024,
                             help="Tokenizer vocabulary, special tokens included.")
    hidden_size: int = option("--hidden-size", type=Range(int, min=8), default=96, help="Width of the Llama.")
    layers: int = option("--layers", type=Range(int, min=1), default=2, help="Decoder layers.")
    intermediate_size: int = option("--intermediate-size", type=Range(int, min=8), default=256,
                                    help="Width of the MLP.")
    heads: int = option("--heads", type=Range(int, min=1), default=4,
                        help="Attention heads (as many key/value heads); must divide --hidden-size.")
    seed: int = option("--seed", type=int, default=0, help="torch seed of the initial weights.")


TINY_MODEL = TinyModelOptions()
