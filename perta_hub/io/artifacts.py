"""Task-vector and weight-map artifacts: folders (and Hub repos) of sharded safetensors with a card.

Layout of an artifact folder:
- ``perta_config.json``: ``kind`` (``task_vector`` | ``weight_map``), version, command, provenance.
- ``{group}-0000i-of-0000N.safetensors`` + ``{group}.safetensors.index.json`` per tensor group (the kind's
  ``groups`` in :mod:`perta_hub.records`): ``task_vector`` (or ``lora_A`` and ``lora_B``) for task vectors;
  ``importance_forget`` and ``importance_retain`` for weight maps.
  Tensor names are the model's parameter names; every shard's metadata is ``{"format": "pt"}``.
- ``README.md``: a model card with a privacy note (the tensors are derived from the forget data).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, InputError
from perta_hub.io.fingerprint import content_hash
from perta_hub.io.reader import Checkpoint, open_checkpoint
from perta_hub.records import CONFIG_NAME, Record, read_record

FLOAT_CODES = ("BF16", "F16", "F32")  # the dtypes an artifact may hold


@dataclass
class Artifact:
    """An artifact folder opened for reading (local or downloaded from the Hub)."""

    root: Path
    source: str
    record: Record
    hub_sha: str | None

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def config(self) -> dict[str, Any]:
        """``perta_config.json`` as a dict (validated: see :attr:`record`)."""
        return self.record.to_dict()

    def group(self, prefix: str) -> Checkpoint:
        """The tensors of one group (``task_vector``, ``importance_forget``, ``importance_retain``).

        Raises:
            CheckpointError: a tensor that is not bf16, fp16 or fp32 (named).
        """
        return self.checked(open_checkpoint(self.root, prefix=prefix), prefix)

    def checked(self, group: Checkpoint, prefix: str) -> Checkpoint:
        """``group`` if every tensor is bf16, fp16 or fp32, else a CheckpointError naming the tensor."""
        for name, entry in group.entries.items():
            if entry.dtype_code not in FLOAT_CODES:
                raise CheckpointError(
                    f"tensor {name} of {prefix} in {self.source} is {entry.torch_dtype_name}, not floating point; "
                    "task vectors and weight maps hold bfloat16, float16 or float32 tensors: re-create the artifact")
        return group

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
    record = read_record(path)
    if expected_kind and record.kind != expected_kind:
        raise InputError(f"{source} is a {record.kind} artifact, not a {expected_kind}; check the option you passed "
                         "it to")
    return Artifact(path, source, record, hub_sha)
