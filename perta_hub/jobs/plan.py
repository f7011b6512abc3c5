"""What a job will read and write, planned from the headers before any weight moves.

For each stream: its output shards (:func:`perta_hub.io.sharding.plan_shards`) and, for each shard, the input
files its tensors are read from in first-use order (so a source can fetch them in that order and drop each one
after its last use); for the job: the local disk the run needs in its sink and source. ``apply --dry-run``
prints this plan (:func:`perta_hub.hub.stream_plan.describe`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from perta_hub.io.sharding import SHARD_METADATA, PlannedShard, plan_shards

if TYPE_CHECKING:
    from perta_hub.jobs.engine import Job, Stream
    from perta_hub.jobs.sink import Sink


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is (or will be) on disk, its size in bytes, and whether the source fetches it
    while the job streams (False: it is on disk before the run)."""

    path: Path
    size: int
    fetched: bool = False


@dataclass
class StreamPlan:
    """One stream's output shards and, per shard, the input files its tensors are read from (first use first)."""

    stream: Stream
    shards: list[PlannedShard]
    needs: list[list[InputFile]]

    def first_use(self) -> dict[Path, int]:
        """Input file -> position of the first shard that reads it."""
        first: dict[Path, int] = {}
        for k, files in enumerate(self.needs):
            for f in files:
                first.setdefault(f.path, k)
        return first

    def last_use(self) -> dict[Path, int]:
        """Input file -> position of the last shard that reads it."""
        return {f.path: k for k, files in enumerate(self.needs) for f in files}

    def only(self, names: Collection[str]) -> StreamPlan:
        """The plan of the shards named ``names`` (file names), in plan order."""
        keep = [k for k, shard in enumerate(self.shards) if shard.filename in names]
        return StreamPlan(self.stream, [self.shards[k] for k in keep], [self.needs[k] for k in keep])


@dataclass
class JobPlan:
    """Every stream's plan, the number of output folders, and the local disk the run needs (bytes: the sink's
    output shards plus what the source stages)."""

    streams: list[StreamPlan]
    outputs: int
    needed_bytes: int

    @property
    def files(self) -> dict[Path, InputFile]:
        """Every input file, by path."""
        return {f.path: f for plan in self.streams for files in plan.needs for f in files}

    @property
    def output_bytes(self) -> int:
        """Bytes of the output shards (every output folder), headers included."""
        return sum(len(s.header(SHARD_METADATA)) + s.data_size for p in self.streams for s in p.shards) * self.outputs

    @property
    def input_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def fetch_bytes(self) -> int:
        """Bytes the source downloads: the fetched files not (completely) on disk yet."""
        return sum(f.size for f in self.files.values() if f.fetched and not _complete(f))


def _complete(f: InputFile) -> bool:
    return f.path.is_file() and f.path.stat().st_size == f.size


def plan_job(job: Job, max_shard_size: int | str, sink: Sink) -> JobPlan:
    """The plan of ``job`` with its output going to ``sink`` (the inputs as ``job.source`` lists them)."""
    source = job.source
    streams = []
    known: dict[Path, InputFile] = {}
    for stream in job.streams():
        shards = plan_shards(stream.specs, max_shard_size, stream.prefix)
        needs = []
        for shard in shards:
            needed: dict[Path, InputFile] = {}
            for spec in shard.in_file_order():
                for ckpt in stream.reads(spec.name) if stream.reads is not None else ():
                    path = ckpt.entries[spec.name].file
                    if path not in known:
                        known[path] = source.input_file(ckpt, path)
                    needed.setdefault(path, known[path])
            needs.append(list(needed.values()))
        streams.append(StreamPlan(stream, shards, needs))
    outputs = len(job.outputs())
    needed = sink.needed_bytes([s for p in streams for s in p.shards], outputs) + source.needed_bytes(streams)
    return JobPlan(streams, outputs, needed)
