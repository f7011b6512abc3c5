"""Opt-in conversion of pickle (``.bin``) checkpoints to safetensors (``--allow-pickle``).

Pickle files can execute code when loaded; perta-hub refuses them unless the user insists. Even
then they are read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError


def convert_pickle_checkpoint(folder: Path, files: list[Path],
                              scratch: Path | None = None) -> tuple[Path, str, list[Path], list[Path]]:
    """Convert ``pytorch_model*.bin`` in ``folder`` into ``model.safetensors`` in a temporary folder.

    Args:
        folder: the pickle checkpoint.
        files: its ``.bin`` files (:func:`perta_hub.io.reader.pickle_files`: the index's, names checked).
        scratch: where the temporary folder goes (the output's temporary area, ``.<output>.perta-tmp``
            beside it); None -> the system's temporary folder. The caller deletes it (see
            :func:`perta_hub.io.reader.open_checkpoint`: when the checkpoint is released or the process exits).
    Returns:
        (temporary folder, ``"model"``, [the safetensors file], [the pickle files read]); the config and
        tokenizer are copied too.
    """
    import torch

    if not files:
        raise CheckpointError(f"{folder} holds neither safetensors nor .bin weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as err:  # torch raises several types for bad pickles
            raise CheckpointError(f"cannot load {file} with weights_only=True: {err}") from err
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="perta-pickle-", dir=scratch))
    try:
        _write_copy(folder, state, out)
    except BaseException:
        remove_scratch(out)
        raise
    return out, "model", [out / "model.safetensors"], files


def _write_copy(folder: Path, state: dict[str, Any], out: Path) -> None:
    from safetensors.torch import save_file

    for side in folder.iterdir():
        if side.is_file() and side.suffix in {".json", ".jinja", ".model", ".txt"} and "bin.index" not in side.name:
            shutil.copy2(side, out / side.name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})


def remove_scratch(folder: Path) -> None:
    """Delete a conversion's temporary folder, and its scratch parent if that is left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name.endswith(".perta-tmp"):
        with contextlib.suppress(OSError):  # another conversion may still use it
            folder.parent.rmdir()
