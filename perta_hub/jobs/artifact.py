"""Writing in-memory tensors as an artifact folder (weight maps)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.io.artifacts import GROUPS, SHARD_METADATA, dtype_code
from perta_hub.io.output_folder import claim_output, current_command, finish_output, make_run_id
from perta_hub.io.sharding import TensorSpec, plan_shards
from perta_hub.io.writer import Output, stream_shards


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
        provenance: merged into ``perta_config.json`` (sources, revisions, data, method...).
        max_shard_size: per-shard limit (``5GB``, ``500MB``, bytes).
        inputs: local input folders that must not be written over.
    """
    from perta_hub.cards.render import artifact_card

    if kind not in GROUPS or set(groups) != set(GROUPS[kind]):
        raise InputError(f"a {kind} artifact holds the groups {GROUPS.get(kind)}, got {sorted(groups)}")
    out = Path(out_dir)
    config = {"kind": kind, "command": provenance.pop("command", None) or current_command(), **provenance}
    run_id = make_run_id({"config": config, "shapes": {g: {n: list(t.shape) for n, t in ts.items()} for g, ts in groups.items()}})
    claim_output(out, run_id, inputs or [])
    for prefix, tensors in groups.items():
        specs = [TensorSpec(name, dtype_code(t.dtype), tuple(t.shape)) for name, t in tensors.items()]
        stream_shards(plan_shards(specs, max_shard_size, prefix), [Output(out, SHARD_METADATA)], prefix,
                      load=tensors.__getitem__, combine=lambda _name, t: [t.contiguous()],
                      desc=f"writing {prefix}", progress=progress, hash_outputs=True)
    config["run_id"] = run_id
    finish_output(out, config, artifact_card(kind, config))
    return out


