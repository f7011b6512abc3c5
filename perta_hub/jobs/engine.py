"""The one job engine: check -> plan -> claim -> stream -> finish, for every writer of tensors.

A job (a task vector, a LoRA delta, a PerTA merge, an importance artifact) defines only what differs: its
output folders and run ids, the tensor streams it writes (which tensors, how to load a tensor's inputs, how
to combine them) and the record and card of each finished folder. The engine plans the shards from the
headers, claims the folders (lock, marker, free space), streams every shard through the writer pipeline and
finishes each folder; a folder that already holds the same run is left untouched.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.io.output_folder import OutputFolder, claimed
from perta_hub.io.sharding import SHARD_METADATA, TensorSpec, plan_shards
from perta_hub.io.writer import IN_FLIGHT_BYTES, Output, stream_shards
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
    """

    prefix: str
    specs: list[TensorSpec]
    load: Callable[[str], Any]
    combine: Callable[[str, Any], Sequence[Any]]
    desc: str
    held_bytes: Callable[[TensorSpec], int] | None = None
    recycle: Callable[[Any], None] | None = None


class Job(ABC):
    """What a writer defines; :func:`run_job` does the rest."""

    #: compute each finished shard's sha256 into the hash cache (artifacts that later commands read)
    hash_outputs: bool = False

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

    def started(self) -> None:  # noqa: B027 - optional hook
        """Called once the folders are claimed, before streaming (start background work here)."""

    def finish_folder(self, index: int, folder: Path) -> None:  # noqa: B027 - optional hook
        """Write anything besides tensors, record and card (e.g. the target's config and tokenizer)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release inputs (open files)."""


def run_job(job: Job, *, max_shard_size: int | str, progress: bool = True,
            in_flight_bytes: int = IN_FLIGHT_BYTES) -> list[Path]:
    """Plan, claim, stream and finish ``job``; returns its output folders.

    Folders that already hold this run's complete output are not touched; if every folder does, nothing is
    read or written.
    """
    try:
        folders = [OutputFolder(path, run_id, job.local_inputs()) for path, run_id in job.outputs()]
        plans = [(stream, plan_shards(stream.specs, max_shard_size, stream.prefix)) for stream in job.streams()]
        for stream, shards in plans:
            log.debug("shard plan %s: %d tensors in %d shard(s) of at most %s, %s bytes per folder", stream.prefix,
                      len(stream.specs), len(shards), max_shard_size, f"{sum(s.data_size for s in shards):,}")
        needed = sum(shard.data_size for _, shards in plans for shard in shards) * len(folders)
        with claimed(folders, needed) as pending:
            for folder in folders:
                log.debug("%s: %s", folder.path, "to write" if folder in pending else "already complete, left as is")
            if pending:
                _write(job, folders, pending, plans, progress, in_flight_bytes)
        return [folder.path for folder in folders]
    finally:
        job.close()


def _write(job: Job, folders: list[OutputFolder], pending: list[OutputFolder],
           plans: list[tuple[Stream, list[Any]]], progress: bool, in_flight_bytes: int) -> None:
    """Stream every planned shard into the pending folders, then finish each one."""
    job.started()
    chosen = [folders.index(folder) for folder in pending]
    digests: dict[Path, str] = {}  # sha256 of each shard written, hashed while writing
    for stream, shards in plans:
        combine = stream.combine
        if len(chosen) < len(folders):  # some folders are complete: keep the results of the others only
            def combine(name: str, inputs: Any, _all: Callable = stream.combine) -> list[Any]:
                results = _all(name, inputs)
                return [results[i] for i in chosen]
        stream_shards(shards, [Output(f.path, SHARD_METADATA) for f in pending], stream.prefix, stream.load, combine,
                      desc=stream.desc, progress=progress, hash_outputs=job.hash_outputs, digests=digests,
                      recycle=stream.recycle, held_bytes=stream.held_bytes, in_flight_bytes=in_flight_bytes)
    for index, folder in zip(chosen, pending, strict=True):
        job.finish_folder(index, folder.path)
        record, card = job.record(index, folder.path)
        folder.finish(record, card, digests)
