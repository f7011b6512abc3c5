"""Task-vector and weight-map artifacts: folders (and Hub repos) of sharded safetensors with a card.

Layout of an artifact folder:
- ``perta_config.json``: ``kind`` (``task_vector`` | ``weight_map``), version, command, provenance.
- ``{group}-0000i-of-0000N.safetensors`` + ``{group}.safetensors.index.json`` per tensor group:
  ``task_vector`` for task vectors; ``importance_forget`` and ``importance_retain`` for weight maps.
  Tensor names are the model's parameter names; every shard's metadata is ``{"format": "pt"}``.
- ``README.md``: a model card with a privacy note (the tensors are derived from the forget data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, InputError
from perta_hub.io.fingerprint import content_hash
from perta_hub.io.output_folder import CONFIG_NAME
from perta_hub.io.reader import Checkpoint, open_checkpoint
from perta_hub.io.sharding import TORCH_TO_CODE

GROUPS: dict[str, tuple[str, ...]] = {
    "task_vector": ("task_vector",),
    "weight_map": ("importance_forget", "importance_retain"),
}
SHARD_METADATA = {"format": "pt"}


def dtype_code(dtype: Any) -> str:
    """safetensors dtype code of a torch dtype (``torch.bfloat16`` -> ``BF16``)."""
    return TORCH_TO_CODE[str(dtype).removeprefix("torch.")]




@dataclass
class Artifact:
    """An artifact folder opened for reading (local or downloaded from the Hub)."""

    root: Path
    source: str
    config: dict[str, Any]
    hub_sha: str | None

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    def group(self, prefix: str) -> Checkpoint:
        """The tensors of one group (``task_vector``, ``importance_forget``, ``importance_retain``)."""
        return open_checkpoint(self.root, prefix=prefix)

    @cached_property
    def revision(self) -> str:
        """Hub commit sha, or ``sha256:`` of the artifact's files."""
        if self.hub_sha:
            return self.hub_sha
        files = sorted(p for p in self.root.iterdir() if p.name.endswith((".safetensors", ".json")))
        return "sha256:" + content_hash(files)


def load_artifact(source: str | Path, expected_kind: str | None = None) -> Artifact:
    """Open an artifact folder or Hub repo (``org/name[@revision]``) and check its kind."""
    from perta_hub.io import hub_source as hub

    source = str(source)
    path = Path(source).expanduser()
    hub_sha = None
    if not path.exists():
        if not hub.looks_like_repo_id(source):
            raise InputError(f"{source} does not exist; pass an artifact folder or a Hub repo id (org/name[@revision])")
        path, hub_sha = hub.download(source, [CONFIG_NAME, "README.md", "*.safetensors", "*.safetensors.index.json"])
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(
            f"{source} is not a perta-hub artifact (no {CONFIG_NAME}); create one with `perta-hub task-vector` "
            "or `perta-hub compute-weights`"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err}); re-download or re-create the artifact") from err
    kind = config.get("kind")
    if expected_kind and kind != expected_kind:
        raise InputError(f"{source} is a {kind} artifact, not a {expected_kind}; check the option you passed it to")
    return Artifact(path, source, config, hub_sha)
