"""Small models and tokenizers built from scratch, offline.

Used by the demo (a Llama that memorises TOFU authors on a laptop), the tests, the benchmarks and the
release check (`.ci/release-check`). Nothing here downloads anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# A minimal chat template in the Llama-3 spirit: system/user/assistant turns, each closed by
# an end-of-turn token, with a generation prompt. `date_string` is accepted and ignored.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start|>{{ message['role'] }}\n{{ message['content'] }}<|eot|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|start|>", "<|eot|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, chat_template: bool = True) -> Any:
    """Train a byte-level BPE tokenizer (``tokenizers``) and wrap it for transformers.

    Args:
        texts: training text.
        vocab_size: target vocabulary size, special tokens included.
        chat_template: attach :data:`CHAT_TEMPLATE` (end-of-turn token ``<|eot|>``) when True;
            when False the tokenizer has no chat template and the plain Q/A format is used.
    Returns:
        a ``PreTrainedTokenizerFast`` with bos, eos and pad tokens set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|start|>", "<|eot|>"],
    )
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_llama_config(vocab_size: int, **overrides: Any) -> Any:
    """A ``LlamaConfig`` of a few thousand to a few million parameters (defaults: ~60k + embeddings)."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def build_tiny_llama(
    out_dir: str | Path,
    tokenizer: Any,
    *,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_size: str | int = "10MB",
    **config_overrides: Any,
) -> Path:
    """Create a randomly initialised Llama with ``tokenizer`` and save it as a transformers checkpoint.

    Args:
        out_dir: folder to write (config, generation config, tokenizer, safetensors shards).
        tokenizer: the tokenizer to save beside the model; its ids set bos/eos/pad.
        seed: torch seed for the initial weights.
        dtype: ``"float32"`` or ``"bfloat16"``.
        max_shard_size: passed to ``save_pretrained`` (small values give several shards).
        config_overrides: LlamaConfig fields (e.g. ``tie_word_embeddings=True``).
    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **config_overrides,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out = Path(out_dir)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    return out
