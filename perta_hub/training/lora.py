"""LoRA (peft) for ``finetune --lora-rank R``: the adapter config and the wrapped model.

The task vector of a trained adapter is :func:`perta_hub.merge.lora_delta.lora_task_vector`.
"""

from __future__ import annotations

from typing import Any

from perta_hub.errors import InputError

DEFAULT_TARGETS = "all-linear"


def lora_config(rank: int, alpha: float | None, targets: str) -> Any:
    """A ``peft.LoraConfig`` for causal-LM fine-tuning (dropout 0, no bias, standard init).

    Args:
        rank: r, the inner dimension of ``B @ A`` (>= 1).
        alpha: lora_alpha; None -> ``2 * rank`` (scaling 2).
        targets: ``all-linear`` (every linear layer but the output head) or a comma-separated list of
            module names (``q_proj,v_proj``), matched by peft against the ends of module paths.
    """
    from peft import LoraConfig

    if rank < 1:
        raise InputError(f"--lora-rank must be >= 1, got {rank}")
    alpha = float(2 * rank if alpha is None else alpha)
    if alpha <= 0:
        raise InputError(f"--lora-alpha must be > 0, got {alpha}")
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise InputError("--lora-targets is empty; pass all-linear or module names such as q_proj,v_proj")
    target_modules: Any = DEFAULT_TARGETS if names == [DEFAULT_TARGETS] else names
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")


def wrap_model(model: Any, rank: int, alpha: float | None, targets: str) -> Any:
    """``peft.get_peft_model`` with :func:`lora_config`; unknown target names become an InputError."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(rank, alpha, targets))
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--lora-targets {targets!r} does not fit this model: {first}") from err
