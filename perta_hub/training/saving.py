"""Saving a trained model: in the base model's dtype unless asked, every weight file with the same mode.

transformers' ``save_pretrained`` writes the weights in the dtype they were trained in (float32 on a CPU:
a bf16 base saved so doubles in size) and creates the shards through temporary files (mode 0600) while the
index gets the usual 0644; both are corrected here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: ``--save-dtype`` choices; ``auto`` = the base model's dtype
SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def base_dtype(ckpt: Any) -> str:
    """The dtype name of the checkpoint's floating-point weights (``float32`` when it has none)."""
    for name in ckpt.names:
        dtype = ckpt.dtype(name)
        if dtype.is_floating_point:
            return str(dtype).removeprefix("torch.")
    return "float32"


def resolve_save_dtype(requested: str, ckpt: Any) -> str:
    """``requested``, or the base's dtype for ``auto``."""
    return base_dtype(ckpt) if requested == "auto" else requested


def default_file_mode() -> int:
    """The mode a newly created file gets under the current umask (0o644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def normalise_modes(folder: Path) -> None:
    """Give every weight file and index in ``folder`` (top level and ``adapter/``) the default file mode."""
    mode = default_file_mode()
    for sub in (folder, folder / "adapter"):
        if not sub.is_dir():
            continue
        for path in sub.iterdir():
            if path.is_file() and path.name.endswith((".safetensors", ".safetensors.index.json", ".bin")):
                os.chmod(path, mode)


def without_tied_head(net: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the output head when the model ties it to the input embeddings: a gathered state
    dict (FSDP, DeepSpeed, ``accelerator.get_state_dict``) holds both, and a checkpoint saved with both no longer
    matches its tied base tensor for tensor (``task-vector`` refuses the pair)."""
    config = getattr(net, "config", None)
    text = getattr(config, "text_config", None) if config is not None else None
    tied = getattr(config, "tie_word_embeddings", False) or getattr(text, "tie_word_embeddings", False)
    head = net.get_output_embeddings() if tied and hasattr(net, "get_output_embeddings") else None
    if head is None:
        return state_dict
    names = {f"{name}.weight" for name, module in net.named_modules() if module is head}
    return {k: v for k, v in state_dict.items() if k not in names}


def save_model(net: Any, state_dict: dict[str, Any], out: Path, dtype: str, max_shard_size: int | str) -> None:
    """``net.save_pretrained(out)`` with the floating-point tensors cast to ``dtype``; modes normalised."""
    import torch

    target = getattr(torch, dtype)
    state_dict = {k: (v.to(target) if v.is_floating_point() else v) for k, v in without_tied_head(net, state_dict).items()}
    net.to(target)  # the config records the saved dtype
    net.save_pretrained(out, state_dict=state_dict, max_shard_size=max_shard_size)
    normalise_modes(out)
