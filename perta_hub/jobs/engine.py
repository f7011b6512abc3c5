"""The one job engine: check -> plan -> claim -> stream -> finish, for every writer of tensors.

A job (a task vector, a LoRA delta, a PerTA merge, an importance artifact) defines only what differs: its
output folders and run ids, the tensor streams it writes (which tensors, which inputs a tensor is read from,
how to load and combine them) and the record and card of each finished folder. Where the inputs come from is
the job's *source* (:mod:`perta_hub.jobs.source`: local files, or Hub files fetched as they are needed) and
where the output goes is the run's *sink* (:mod:`perta_hub.jobs.sink`: local folders, or a Hub repo each shard
is uploaded to). The engine plans the shards from the headers (:mod:`perta_hub.jobs.plan`), claims the folders
(lock, marker, the disk the sink and source need), streams every shard through the writer pipeline, waiting
on the source for each tensor's bytes, and finishes each folder; a folder that already holds the same run is
left untouched.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.io.atomic import write_atomic
from perta_hub.io.output_folder import OutputFolder, claimed
from perta_hub.io.sharding import SHARD_METADATA, PlannedShard, TensorSpec, index_json
from perta_hub.io.writer import IN_FLIGHT_BYTES, Output, shards_to_write, stream_shards
from perta_hub.jobs.plan import JobPlan, StreamPlan, plan_job
from perta_hub.jobs.sink import Sink
from perta_hub.jobs.source import Source
from perta_hub.records import Record

log = logging.getLogger("perta_hub.jobs")


@dataclass
class Stream:
    """One group of tensors written into every output folder as ``{prefix}-0000i-of-0000N.safetensors``.

    Attributes:
        prefix: file prefix of the shards and the index (``model``, ``task_vector``, ``importance_forget``).
        specs: the output tensors (name, dtype code, shape) in processing order.
        load: ``name -> inputs`` (runs in the reader thread).
        combine: ``(name, inputs) -> one tensor per output folder`` (planned dtype and shape).
        desc: progress-bar label.
        held_bytes: memory one tensor holds in flight (default: its size per output plus its inputs).
        recycle: called with each result tensor once written (buffer reuse).
        reads: ``name -> the checkpoints load reads it from`` (None: tensors held in memory); the plan lists
            their files, and the engine waits on the job's source for each tensor's bytes before ``load``.
    """

    prefix: str
    specs: list[TensorSpec]
    load: Callable[[str], Any]
    combine: Callable[[str, Any], Sequence[Any]]
    desc: str
    held_bytes: Callable[[TensorSpec], int] | None = None
    recycle: Callable[[Any], None] | None = None
    reads: Callable[[str], list[Any]] | None = None


class Job(ABC):
    """What a writer defines; :func:`run_job` does the rest."""

    #: compute each finished shard's sha256 into the hash cache (artifacts that later commands read)
    hash_outputs: bool = False
    #: where the inputs are opened from and read (the engine waits on it for each tensor's bytes)
    source: Source = Source()

    @abstractmethod
    def outputs(self) -> list[tuple[Path, str]]:
        """``(folder, run id)`` of each output folder."""

    @abstractmethod
    def local_inputs(self) -> list[Path]:
        """Local input folders, which an output may never be (or contain)."""

    @abstractmethod
    def streams(self) -> list[Stream]:
        """The tensor groups to write, in order."""

    @abstractmethod
    def record(self, index: int, folder: Path) -> tuple[Record, Any]:
        """The record and card (or None) of output ``index`` once its tensors are written."""

    def preview(self, index: int, folder: Path) -> tuple[Record, Any]:
        """The record and card of output ``index`` as far as they are known before its tensors are written (a sink
        that publishes checks them first); by default :meth:`record`'s."""
        return self.record(index, folder)

    def started(self) -> None:  # noqa: B027 - optional hook
        """Called once the folders are claimed, before streaming (start background work here)."""

    def finish_folder(self, index: int, folder: Path) -> None:  # noqa: B027 - optional hook
        """Write anything besides tensors, record and card (e.g. the target's config and tokenizer)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release inputs (open files)."""


def run_job(job: Job, *, max_shard_size: int | str, sink: Sink | None = None, progress: bool = True,
            in_flight_bytes: int = IN_FLIGHT_BYTES) -> list[Path]:
    """Plan, claim, stream and finish ``job`` into ``sink`` (default: local folders); returns its output folders.

    Folders that already hold this run's complete output are not touched; if every folder does, nothing is
    read or written. The job's source removes what it staged once the run and the sink's finish succeed.
    """
    sink = sink or Sink()
    try:
        folders = [OutputFolder(path, run_id, job.local_inputs()) for path, run_id in job.outputs()]
        sink.open(folders)
        plan = plan_job(job, max_shard_size, sink)
        for p in plan.streams:
            log.debug("shard plan %s: %d tensors in %d shard(s) of at most %s, %s bytes per folder", p.stream.prefix,
                      len(p.stream.specs), len(p.shards), max_shard_size, f"{sum(s.data_size for s in p.shards):,}")
        with claimed(folders, plan.needed_bytes) as pending:
            for folder in folders:
                log.debug("%s: %s", folder.path, "to write" if folder in pending else "already complete, left as is")
            if pending:
                _write(job, sink, folders, pending, plan, progress, in_flight_bytes)
        sink.finish([folder.path for folder in folders], wrote=bool(pending))
        job.source.done()
        return [folder.path for folder in folders]
    finally:
        job.close()


def _write(job: Job, sink: Sink, folders: list[OutputFolder], pending: list[OutputFolder], plan: JobPlan,
           progress: bool, in_flight_bytes: int) -> None:
    """Stream every planned shard into the pending folders, then finish each one."""
    job.started()
    chosen = [folders.index(folder) for folder in pending]
    outputs = [Output(f.path, SHARD_METADATA) for f in pending]
    digests: dict[Path, str] = {}  # sha256 of each shard written, hashed while writing
    with sink.delivering(job, pending):
        delivered = {path.name for folder in pending for path in sink.delivered(folder)}
        for stream_plan in plan.streams:
            stream = stream_plan.stream
            todo = shards_to_write(stream_plan.shards, outputs, delivered)
            combine = stream.combine
            if len(chosen) < len(folders):  # some folders are complete: keep the results of the others only
                def combine(name: str, inputs: Any, _all: Callable = stream.combine) -> list[Any]:
                    results = _all(name, inputs)
                    return [results[i] for i in chosen]
            reading = stream_plan.only({shard.filename for shard, _ in todo})
            with job.source.streaming(reading):
                stream_shards(todo, outputs, _loader(job.source, sink, reading), combine, desc=stream.desc,
                              progress=progress, hash_outputs=job.hash_outputs, digests=digests,
                              recycle=stream.recycle, held_bytes=stream.held_bytes, in_flight_bytes=in_flight_bytes,
                              settle=job.source.settle, finished=_on_written(job.source, sink, digests))
            for out in outputs:
                write_atomic(out.folder / f"{stream.prefix}.safetensors.index.json", index_json(stream_plan.shards))
    for index, folder in zip(chosen, pending, strict=True):
        job.finish_folder(index, folder.path)
        record, card = job.record(index, folder.path)
        folder.finish(sink.record(record), card, {**sink.delivered(folder), **digests})


def _loader(source: Source, sink: Sink, plan: StreamPlan) -> Callable[[str], Any]:
    """The stream's ``load`` once the sink has room for the tensor's shard (at its first tensor) and the source
    has the tensor's bytes on disk in every input it is read from."""
    stream = plan.stream
    shard_of = {spec.name: shard for shard in plan.shards for spec in shard.tensors}
    current: list[PlannedShard | None] = [None]

    def load(name: str) -> Any:
        shard = shard_of[name]
        if shard is not current[0]:
            sink.opening(shard)
            current[0] = shard
        for ckpt in stream.reads(name) if stream.reads is not None else ():
            entry = ckpt.entries[name]
            source.wait(entry.file, entry.offset + entry.nbytes)
        return stream.load(name)

    return load


def _on_written(source: Source, sink: Sink, digests: dict[Path, str]) -> Callable[[PlannedShard, list[Path]], None]:
    """What follows a shard's rename in every output: the source may drop inputs, the sink takes the files."""
    def finished(shard: PlannedShard, paths: list[Path]) -> None:
        source.written(shard)
        for path in paths:
            sink.written(path, digests[path])

    return finished
