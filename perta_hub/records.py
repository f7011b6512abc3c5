"""Typed records: the one definition of ``perta_config.json`` for each kind of output.

Every output folder perta-hub writes holds a ``perta_config.json``; its keys are the fields of one record
class below (one per kind: task vector, weight map, unlearned model, fine-tuned model). Writers build a record
and call :meth:`Record.to_json`; readers (``apply``, cards, ``push``) call :func:`read_record`, which checks
every key's type (pydantic, strict: no string for a number, no list for a dict) and refuses unknown kinds and
keys with one line naming the key. Fields a writer did not set are left out of the file, so the JSON holds
exactly what was recorded, in the order of the fields here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perta_hub._version import __version__
from perta_hub.errors import CheckpointError

CONFIG_NAME = "perta_config.json"

Json = dict[str, Any]


class _Strict(BaseModel):
    """Frozen, strict, no unknown keys."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", populate_by_name=True)


class Source(_Strict):
    """Where an input came from: what the user passed, the Hub repo (None for a local path) and the revision
    (Hub commit sha, or ``sha256:<hex>`` of a local folder's files)."""

    source: str
    repo_id: str | None = None
    revision: str
    temporary: bool | None = None


class ArtifactRef(_Strict):
    """An artifact an unlearned model was made from (task vector)."""

    source: str
    revision: str
    repo_id: str | None = None


class WeightsRef(_Strict):
    """The weight map an unlearned model was made from, and the combination used (``w`` formula)."""

    source: str
    revision: str
    method: str
    repo_id: str | None = None
    p: float
    lam: float
    eps: float
    unrestricted: str | None = None


class Record(_Strict):
    """Fields every record holds, first in the file (``run_id`` and ``hub`` come last)."""

    kind: ClassVar[str]
    perta_hub_version: str = __version__
    command: str | None = None

    def to_dict(self) -> Json:
        """The JSON object, keys in field order, unset fields left out; ``kind`` after the version."""
        data = self.model_dump(exclude_unset=True, by_alias=True)
        data.pop("perta_hub_version", None)
        head = {"perta_hub_version": self.perta_hub_version, "kind": self.kind}
        tail = {k: data.pop(k) for k in ("run_id", "hub") if k in data}
        return {**head, **data, **tail}

    def to_json(self) -> str:
        """The text of ``perta_config.json`` (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n"

    def with_hub(self, hub: Json) -> Record:
        """A copy that records where the folder was published."""
        return type(self).model_validate({**self.model_dump(exclude_unset=True, by_alias=True), "hub": hub})


class TaskVectorRecord(Record):
    """``tau = finetuned - base`` (or a LoRA adapter's ``scaling * B @ A``), stored in ``dtype``."""

    kind: ClassVar[str] = "task_vector"
    base: Source
    finetuned: Source | None = None
    adapter: Json | None = None
    dtype: Literal["float32", "bfloat16", "float16"]
    num_parameters: int
    base_config: Json
    lora_rank: int | None = None
    lora: Json | None = None
    method: Literal["full", "lora"] | None = None
    forget_data: Json | None = None
    training: Json | None = None
    training_results: Json | None = None
    finetuned_kept: bool | None = None
    finetune_run_id: str | None = None
    run_id: str | None = None
    hub: Json | None = None


class WeightMapRecord(Record):
    """Importances ``I_f`` and ``I_r`` and the combination ``w = I_f^p / (I_f^p + lam I_r^p + eps)``."""

    kind: ClassVar[str] = "weight_map"
    model: Source | None = None
    #: ``model_config`` in the file (a name pydantic reserves)
    model_config_: Json | None = Field(default=None, alias="model_config")
    gradients_at: Literal["target", "anchor"] | None = None
    method: str | None = None
    p: float | None = None
    lam: float | None = None
    eps: float | None = None
    forget_data: Json | None = None
    retain_data: Json | None = None
    max_length: int | None = None
    params: str | None = None
    unrestricted: Literal["w=0", "w=1"] | None = None
    num_tensors: int | None = None
    num_parameters: int | None = None
    dtype: str | None = None
    underflow: Json | None = None
    compute: Json | None = None
    run_id: str | None = None
    hub: Json | None = None


class ModelRecord(Record):
    """An unlearned model: ``theta = target - alpha * (w ⊙ tau)``."""

    kind: ClassVar[str] = "model"
    alpha: float
    method: str
    target: Source
    task_vector: ArtifactRef
    weights: WeightsRef | None = None
    device: str
    run_id: str | None = None
    hub: Json | None = None


class FinetunedModelRecord(Record):
    """A model fine-tuned on question/answer data (the privacy-tuned model a task vector is made from)."""

    kind: ClassVar[str] = "finetuned_model"
    base: Source
    base_config: Json
    num_parameters: int
    data: Json
    training: Json
    lora_rank: int | None = None
    lora: Json | None = None
    results: Json
    library: Json
    run_id: str | None = None
    hub: Json | None = None


RECORDS: dict[str, type[Record]] = {cls.kind: cls for cls in (TaskVectorRecord, WeightMapRecord, ModelRecord,
                                                              FinetunedModelRecord)}


def parse_record(data: Any, where: str = CONFIG_NAME) -> Record:
    """Validate a ``perta_config.json`` object against the record of its ``kind``.

    Raises:
        CheckpointError: not an object, unknown kind, a missing key, a key of the wrong type, an unknown key
            (one line naming the key).
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} is not a JSON object; re-create the output")
    kind = data.get("kind")
    if kind not in RECORDS:
        raise CheckpointError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(RECORDS)}); "
                              "it was not written by perta-hub, or by a newer version")
    body = {k: v for k, v in data.items() if k != "kind"}
    try:
        return RECORDS[kind].model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        given = first.get("input")
        shown = "" if first["type"] in ("missing", "extra_forbidden") else f" (got {type(given).__name__} {given!r:.60})"
        reason = {"missing": "is missing", "extra_forbidden": "is not a known key"}.get(first["type"], first["msg"])
        raise CheckpointError(f"{where}: key {key!r} {reason}{shown}; re-create the output or fix the file") from None


def read_record(folder: str | Path) -> Record:
    """The record of a perta-hub output folder.

    Raises:
        CheckpointError: no ``perta_config.json``, invalid JSON, or a record that does not validate.
    """
    path = Path(folder) / CONFIG_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not a perta-hub output (no {CONFIG_NAME})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-download or re-create it") from None
    return parse_record(data, str(path))
