"""Loading a causal language model with transformers: the one loader of training, importance and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError
from perta_hub.runtime.progress import phase

log = logging.getLogger("perta_hub.runtime")


def load_causal_lm(root: str | Path, source: str, dtype: Any = "auto", device: Any = None, *,
                   eval_mode: bool = False) -> Any:
    """``AutoModelForCausalLM.from_pretrained(root, dtype=dtype)``, optionally moved to ``device``.

    Args:
        root: the local checkpoint folder (already downloaded or converted).
        source: how the user named the model (folder or Hub id), for the error message.
        dtype: a ``torch.dtype``, or ``"auto"`` (the checkpoint's own dtype); None means ``"auto"``.
        device: where to move the model (None: leave it where transformers put it, the CPU).
        eval_mode: call ``model.eval()`` (no dropout).
    Raises:
        CheckpointError: transformers cannot load the folder as a causal LM (one line).
    """
    from transformers import AutoModelForCausalLM

    with phase(f"loading {source}"):
        try:
            model = AutoModelForCausalLM.from_pretrained(root, dtype=dtype if dtype is not None else "auto")
        except (OSError, ValueError) as err:
            text = str(err).strip()
            first = text.splitlines()[0] if text else type(err).__name__
            raise CheckpointError(f"cannot load {source} as a causal LM with transformers: {first}") from err
        if device is not None:
            model.to(device)
    log.debug("%s: %s from %s, %s parameters, dtype %s, on %s", source, type(model).__name__, root,
              f"{sum(p.numel() for p in model.parameters()):,}", model.dtype, model.device)
    if eval_mode:
        model.eval()
    return model
