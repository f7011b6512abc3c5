"""What a merge will read, write, download and upload, from headers alone (``--dry-run`` and the streaming mode).

For every output shard: the input files (shards of the target, the task vector and the weight map) its
tensors are read from, so the streaming mode knows what to fetch before each shard and when an input may be
deleted (after the last output shard that needs it). The disk and memory bounds of each mode follow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.io.reader import Checkpoint
from perta_hub.io.sharding import PlannedShard, plan_shards
from perta_hub.io.writer import IN_FLIGHT_BYTES

#: output shards that may be on local disk at once in the streaming mode (written, queued, uploading)
OUTPUT_SLOTS = 3
#: output shards whose inputs may be on local disk at once (the one merged and the next one)
INPUT_AHEAD = 1


@dataclass
class InputFile:
    """One input file: where it is (or will be) on disk, its size, and the Hub repo it comes from (or None)."""

    path: Path
    size: int
    remote: Any = None  # RemoteRepo

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class MergePlan:
    """Output shards and, per shard, the input files its tensors are read from (first use order)."""

    shards: list[PlannedShard]
    needs: list[list[InputFile]]
    files: dict[Path, InputFile] = field(default_factory=dict)
    last_use: dict[Path, int] = field(default_factory=dict)
    num_outputs: int = 1

    @property
    def output_bytes(self) -> int:
        """Bytes of the output shards (all outputs), headers included."""
        return sum(len(s.header({"format": "pt"})) + s.data_size for s in self.shards) * self.num_outputs

    @property
    def input_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files.values() if f.remote is not None and not f.path.is_file())

    def stream_disk_bound(self) -> int:
        """Peak local disk of the streaming mode: ``OUTPUT_SLOTS`` largest output shards plus the largest inputs of
        ``INPUT_AHEAD + 1`` consecutive output shards (an input is kept until its last output shard is written)."""
        sizes = sorted((len(s.header({"format": "pt"})) + s.data_size for s in self.shards), reverse=True)
        out = sum(sizes[:OUTPUT_SLOTS])
        first: dict[Path, int] = {}
        for k, files in enumerate(self.needs):
            for f in files:
                first.setdefault(f.path, k)
        window = max((sum(f.size for f in self.files.values() if f.remote is not None
                          and first[f.path] <= k + INPUT_AHEAD and self.last_use[f.path] >= k)
                      for k in range(len(self.shards))), default=0)
        return out + window


def plan_merge(job: Any, max_shard_size: int | str) -> MergePlan:
    """The plan of a :class:`~perta_hub.merge.apply.PerTAMergeJob` or a
    :class:`~perta_hub.merge.task_vector.TaskVectorJob` (inputs opened from headers or locally)."""
    stream = job.streams()[0]
    shards = plan_shards(stream.specs, max_shard_size, stream.prefix)
    plan = MergePlan(shards, [], num_outputs=len(job.outputs()))
    reads = getattr(job, "reads", None) or (lambda name: _read_for(job, name))  # TaskVectorJob.reads
    for k, shard in enumerate(shards):
        needed: dict[Path, InputFile] = {}
        for spec in shard.tensors:
            for ckpt in reads(spec.name):
                entry = ckpt.entries[spec.name]
                if entry.file not in plan.files:
                    plan.files[entry.file] = InputFile(entry.file, _size(ckpt, entry.file), getattr(ckpt, "remote", None))
                needed.setdefault(entry.file, plan.files[entry.file])
                plan.last_use[entry.file] = k
        plan.needs.append(list(needed.values()))
    return plan


def _read_for(job: Any, name: str) -> list[Checkpoint]:
    """The checkpoints ``job.load(name)`` reads (as :meth:`PerTAMergeJob.load` decides)."""
    wmap = job.wmap
    if wmap is not None and wmap.rest_unchanged and name not in wmap.forget.entries:
        return [job.target]
    parts = getattr(job.tau, "parts", None)  # a low-rank task vector is read from its factor groups
    out = [job.target, *(parts(name) if parts is not None else [job.tau])]
    if wmap is not None and name in wmap.forget.entries:
        out += [wmap.forget, wmap.retain]
    return out


def _size(ckpt: Checkpoint, path: Path) -> int:
    remote = getattr(ckpt, "remote", None)
    if remote is not None:
        return remote.sizes[path.name]
    return path.stat().st_size


# -- measured rates ----------------------------------------------------------------------------------------


def rates_path() -> Path:
    """Where measured transfer and merge rates are kept (``$HF_HOME/perta-hub/rates.json``; ``HF_HOME`` defaults,
    as in huggingface_hub, to ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``)."""
    import os

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(home).expanduser() / "perta-hub" / "rates.json"


def load_rates() -> dict[str, float]:
    """Bytes per second measured by earlier runs: ``download``, ``upload``, ``merge`` (missing if never measured)."""
    try:
        data = json.loads(rates_path().read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v > 0}
    except (OSError, ValueError):
        return {}


def save_rates(**rates: float) -> None:
    """Remember measured rates (bytes/s) for the time estimates of later dry runs."""
    from perta_hub.io.atomic import write_atomic

    current = load_rates()
    current.update({k: v for k, v in rates.items() if v and v > 0})
    path = rates_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(current, indent=2) + "\n")
    except OSError:
        pass  # an estimate is a convenience


# -- the dry-run report --------------------------------------------------------------------------------------


def describe(plan: MergePlan, *, mode: str, push: str | None, tensors: int, in_flight_bytes: int = IN_FLIGHT_BYTES,
             held: int = 0) -> list[str]:
    """The lines ``--dry-run`` prints: tensors and shards, bytes to download and upload, peak disk and RAM, time."""
    gb = 1e9
    download = plan.download_bytes
    upload = plan.output_bytes if push else 0
    if mode == "stream":
        disk = plan.stream_disk_bound()
        disk_note = (f"{OUTPUT_SLOTS} output shards + the inputs of {INPUT_AHEAD + 1} output shards "
                     "(inputs deleted after their last shard, outputs after their upload)")
    else:
        disk = download + plan.output_bytes
        disk_note = "the inputs downloaded in full (HF cache) + the whole output"
    ram = in_flight_bytes + held
    lines = [
        f"mode: {mode}" + (f" (push to {push})" if push else ""),
        f"tensors: {tensors}, output shards: {len(plan.shards)} x {plan.num_outputs} output(s), "
        f"input files: {len(plan.files)}",
        f"download: {download / gb:.3f} GB ({sum(1 for f in plan.files.values() if f.remote is not None)} "
        f"remote input files; {plan.input_bytes / gb:.3f} GB of inputs in all)",
        f"upload: {upload / gb:.3f} GB",
        f"write: {plan.output_bytes / gb:.3f} GB",
        f"peak local disk: {disk / gb:.3f} GB ({disk_note})",
        f"peak RAM: about {ram / gb:.3f} GB (tensors in flight, bounded by {in_flight_bytes / gb:.3f} GB, plus the "
        "largest tensor's inputs and results)",
    ]
    rates = load_rates()
    parts = {"download": download, "upload": upload, "merge": plan.output_bytes}
    if all(parts[k] == 0 or k in rates for k in parts):
        times = {k: parts[k] / rates[k] if parts[k] else 0.0 for k in parts}
        total = max(times.values()) if mode == "stream" else sum(times.values())
        how = "the slowest stage (they overlap)" if mode == "stream" else "download + merge + upload"
        lines.append(f"time: about {total:.0f} s ({how}, from rates measured earlier: "
                     + ", ".join(f"{k} {rates[k] / 1e6:.0f} MB/s" for k in parts if parts[k]) + ")")
    else:
        missing = ", ".join(k for k in parts if parts[k] and k not in rates)
        lines.append(f"time: unknown (no measured {missing} rate yet; a streaming run records them in "
                     f"{rates_path()})")
    return lines


def free_bytes(path: Path) -> int:
    """Free bytes of the file system that holds ``path`` (or its nearest existing parent)."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    st = os.statvfs(existing)
    return st.f_bavail * st.f_frsize
