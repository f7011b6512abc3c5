"""Checks that two checkpoints fit together, from headers and configs only (no weight is read)."""

from __future__ import annotations

from typing import Any

from perta_hub.errors import MismatchError

# config.json fields that decide parameter names and shapes
ARCHITECTURE_KEYS = (
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
)


def architecture(config: dict[str, Any] | None) -> dict[str, Any]:
    """The shape-deciding subset of a ``config.json`` (missing keys omitted)."""
    if not config:
        return {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return {k: config.get(k, text.get(k)) for k in ARCHITECTURE_KEYS if k in config or k in text}


def check_architecture(expected: dict[str, Any], actual: dict[str, Any], what: str, target: str) -> None:
    """Raise when the architecture recorded for ``what`` differs from ``target``'s config."""
    for key in ARCHITECTURE_KEYS:
        if key in expected and key in actual and expected[key] != actual[key]:
            raise MismatchError(
                f"{what} was made for another base: {key} is {expected[key]!r} there but {actual[key]!r} in "
                f"{target}; use a {what} computed for this model"
            )


def is_tied(config: dict[str, Any] | None) -> bool:
    arch = architecture(config)
    return bool(arch.get("tie_word_embeddings", False))


def check_same_tensors(
    left: dict[str, tuple[int, ...]], right: dict[str, tuple[int, ...]], left_label: str, right_label: str,
    *, right_may_be_subset: bool = False, tied: bool = False,
) -> None:
    """Both sides must hold the same tensor names with the same shapes.

    Args:
        left, right: name -> shape.
        right_may_be_subset: names missing from ``right`` are allowed (a weight map restricted by --params).
        tied: the model ties ``lm_head`` to the input embeddings (then ``lm_head.weight`` is not stored).
    """
    for name, shape in right.items():
        if name not in left:
            if tied and name.endswith("lm_head.weight"):
                raise MismatchError(
                    f"{right_label} has {name} but {left_label} ties it to the input embeddings (tie_word_embeddings); "
                    "compute it from a model with the same tying"
                )
            raise MismatchError(f"tensor {name} is in {right_label} but not in {left_label}; they are for different models")
        if tuple(shape) != tuple(left[name]):
            raise MismatchError(
                f"tensor {name} has shape {tuple(left[name])} in {left_label} but {tuple(shape)} in {right_label}; "
                "they are for different models"
            )
    if not right_may_be_subset:
        for name in left:
            if name not in right:
                raise MismatchError(f"tensor {name} is in {left_label} but missing from {right_label}; they are for different models")
