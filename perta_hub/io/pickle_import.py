"""Opt-in conversion of pickle (``.bin``) checkpoints to safetensors (``--allow-pickle``).

Pickle files can execute code when loaded; perta-hub refuses them unless the user insists. Even
then they are read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from perta_hub.errors import CheckpointError


def convert_pickle_checkpoint(folder: Path) -> tuple[Path, str, list[Path]]:
    """Convert ``pytorch_model*.bin`` in ``folder`` into ``model.safetensors`` in a temporary folder.

    Returns:
        (temporary folder, ``"model"``, [the safetensors file]); the config and tokenizer are copied too.
    """
    import torch
    from safetensors.torch import save_file

    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        from perta_hub.io.reader import index_files

        files = index_files(index)
    else:
        files = sorted(folder.glob("*.bin"))
    if not files:
        raise CheckpointError(f"{folder} holds neither safetensors nor .bin weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as err:  # torch raises several types for bad pickles
            raise CheckpointError(f"cannot load {file} with weights_only=True: {err}") from err
    out = Path(tempfile.mkdtemp(prefix="perta-pickle-"))
    for side in folder.iterdir():
        if side.is_file() and side.suffix in {".json", ".jinja", ".model", ".txt"} and "bin.index" not in side.name:
            shutil.copy2(side, out / side.name)
    target = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(target), metadata={"format": "pt"})
    return out, "model", [target]
