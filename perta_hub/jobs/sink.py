"""Where a job's output goes (the engine's *sink*): here, output folders kept on local disk.

The engine claims the output folders with the disk the sink needs (:meth:`Sink.needed_bytes`), lets the sink
start (:meth:`Sink.delivering`, around the streaming), skips the shards it already delivered
(:meth:`Sink.delivered`), tells it when a shard's first tensor is read (:meth:`Sink.opening`) and when a shard
is written (:meth:`Sink.written`), lets it amend each folder's record, and finally calls :meth:`Sink.finish`.
This class keeps every shard in its folder, so each step is immediate;
:class:`perta_hub.hub.sink.HubSink` uploads each finished shard and commits the folder to a Hub repo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perta_hub.io.output_folder import OutputFolder
    from perta_hub.io.sharding import PlannedShard
    from perta_hub.jobs.engine import Job
    from perta_hub.records import Record


class Sink:
    """Output folders on local disk, every shard kept."""

    def open(self, folders: Sequence[OutputFolder]) -> None:
        """Before the folders are claimed: refuse what cannot work (one line), read any state to resume from."""

    def needed_bytes(self, shards: Sequence[PlannedShard], outputs: int) -> int:
        """Local disk the output takes (bytes): every shard's data in every output folder."""
        return sum(shard.data_size for shard in shards) * outputs

    @contextmanager
    def delivering(self, job: Job, folders: Sequence[OutputFolder]) -> Iterator[None]:
        """Around the streaming into the claimed ``folders`` (once ``job`` has started)."""
        yield

    def delivered(self, folder: OutputFolder) -> dict[Path, str]:
        """Shards of ``folder`` delivered by an earlier run and no longer on disk (path -> sha256): not written
        again, and recorded as they are."""
        return {}

    def opening(self, shard: PlannedShard) -> None:
        """The first tensor of ``shard`` is about to be read (a sink may wait here to bound the shards on disk)."""

    def written(self, path: Path, digest: str) -> None:
        """A shard is complete at ``path`` (renamed into place; ``digest``: its sha256, hashed while written)."""

    def record(self, record: Record) -> Record:
        """The record of a finished folder as this sink writes it."""
        return record

    def finish(self, folders: Sequence[Path], wrote: bool) -> Any:
        """After every folder is finished (``wrote``: this run wrote into some): nothing more here."""
        return None
