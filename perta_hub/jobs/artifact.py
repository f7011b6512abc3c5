"""Writing in-memory tensors as an artifact folder (weight maps: the importances ``I_f`` and ``I_r``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.io.output_folder import current_command, make_run_id
from perta_hub.io.sharding import TensorSpec, dtype_code
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.records import RECORDS, Record, parse_record


class InMemoryArtifactJob(Job):
    """Tensors already in memory (group prefix -> name -> tensor), written as they are."""

    hash_outputs = True

    def __init__(self, out_dir: Path, kind: str, groups: Mapping[str, Mapping[str, Any]], provenance: dict[str, Any],
                 inputs: list[Path]) -> None:
        layouts = RECORDS[kind].groups if kind in RECORDS else ()
        if set(groups) not in [set(layout) for layout in layouts]:
            raise InputError(f"a {kind} artifact holds the groups {layouts[0] if layouts else None}, got "
                             f"{sorted(groups)}")
        self.out, self.kind, self.groups, self.inputs = out_dir, kind, groups, inputs
        config = {"kind": kind, "command": provenance.get("command") or current_command(),
                  **{k: v for k, v in provenance.items() if k != "command"}}
        shapes = {g: {n: list(t.shape) for n, t in ts.items()} for g, ts in groups.items()}
        self.run_id = make_run_id({"config": config, "shapes": shapes})
        self._record = parse_record({**config, "run_id": self.run_id}, f"the {kind} record")  # checked up front

    def outputs(self) -> list[tuple[Path, str]]:
        return [(self.out, self.run_id)]

    def local_inputs(self) -> list[Path]:
        return self.inputs

    def streams(self) -> list[Stream]:
        return [Stream(prefix, [TensorSpec(n, dtype_code(t.dtype), tuple(t.shape)) for n, t in tensors.items()],
                       tensors.__getitem__, lambda _name, t: [t.contiguous()], f"writing {prefix}")
                for prefix, tensors in self.groups.items()]

    def record(self, index: int, folder: Path) -> tuple[Record, Any]:
        from perta_hub.cards.render import artifact_card

        return self._record, artifact_card(self.kind, self._record.to_dict())


def save_artifact(
    out_dir: str | Path,
    kind: str,
    groups: Mapping[str, Mapping[str, Any]],
    provenance: dict[str, Any],
    *,
    max_shard_size: int | str = "5GB",
    inputs: list[Path] | None = None,
    progress: bool = True,
) -> Path:
    """Write in-memory tensors as an artifact folder (used for weight maps).

    Args:
        out_dir: the folder to create (refused if it holds something else).
        kind: ``task_vector`` or ``weight_map``.
        groups: group prefix -> {parameter name -> tensor}; the prefixes must be those of ``kind``.
        provenance: fields of the kind's record (:mod:`perta_hub.records`): sources, revisions, data, method...
        max_shard_size: per-shard limit (``5GB``, ``500MB``, bytes).
        inputs: local input folders that must not be written over.
    """
    job = InMemoryArtifactJob(Path(out_dir), kind, groups, provenance, inputs or [])
    return run_job(job, max_shard_size=max_shard_size, progress=progress)[0]
