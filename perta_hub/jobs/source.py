"""Where a job's input tensors come from (the engine's *source*): here, files on this machine.

A job opens its inputs through its source (:meth:`Source.open`), and the engine, while it streams, asks the
source for the bytes of each tensor before the job reads them (:meth:`Source.wait`), tells it when an output
shard is written (an input file no later shard reads may go, :meth:`Source.written`), and renames a finished
shard into place only once every input file it was read from has passed the source's checks
(:meth:`Source.settle`). This class reads files that are on disk (a Hub id is downloaded whole into the HF
cache first, each file checked against what the Hub lists: :mod:`perta_hub.io.hub_source`), so every streaming
step is immediate; :class:`perta_hub.hub.source.HubSource` opens Hub inputs from their headers and fetches
their files as the engine streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perta_hub.io.reader import Checkpoint
    from perta_hub.io.sharding import PlannedShard
    from perta_hub.jobs.plan import InputFile, StreamPlan


@dataclass(frozen=True)
class Input:
    """One input a job opens: a checkpoint (``kind`` None) or an artifact of ``kind`` (``task_vector``,
    ``weight_map``).

    Attributes:
        role: what the input is to the job (``target``, ``base``, ``finetuned``, an artifact kind); a source
            that stages files keeps each role's apart.
        source: a local folder, a ``.safetensors`` file or a Hub id ``org/name[@revision]``.
        allow_pickle: a checkpoint may be a ``.bin`` one (converted into ``scratch``).
    """

    role: str
    source: str | Path
    kind: str | None = None
    allow_pickle: bool = False
    scratch: Path | None = None


class Source:
    """Inputs read from files on this machine (a Hub id downloaded whole into the HF cache first)."""

    def open(self, inputs: Sequence[Input]) -> list[Callable[[], Any]]:
        """One handle per input, in order: calling it returns the opened input (a
        :class:`~perta_hub.io.reader.Checkpoint` or an :class:`~perta_hub.io.artifacts.Artifact`) or raises its
        error. Here each input is opened when its handle is called, so a job's checks keep their order."""
        return [partial(self._open, item) for item in inputs]

    def _open(self, item: Input) -> Any:
        from perta_hub.io.artifacts import load_artifact
        from perta_hub.io.reader import open_checkpoint

        if item.kind is not None:
            return load_artifact(item.source, item.kind)
        return open_checkpoint(item.source, allow_pickle=item.allow_pickle, scratch=item.scratch)

    def input_file(self, ckpt: Checkpoint, path: Path) -> InputFile:
        """``path``, a file of ``ckpt``, as the plan lists it (its size in bytes; on disk already)."""
        from perta_hub.jobs.plan import InputFile

        return InputFile(path, path.stat().st_size)

    def on_disk(self, ckpt: Checkpoint) -> bool:
        """Whether every byte of ``ckpt`` (an opened checkpoint) can be read now, before any streaming: yes."""
        return True

    def fetch_whole(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Bring every file of ``checkpoints`` to disk now, checked (a pass that reads them whole before the
        merge: ``apply --step``); they are there already."""

    def needed_bytes(self, plans: Sequence[StreamPlan]) -> int:
        """Local disk the source takes while the job streams (bytes): nothing, its files are there."""
        return 0

    @contextmanager
    def streaming(self, plan: StreamPlan) -> Iterator[None]:
        """Around the streaming of one planned stream (the shards to write, ``plan``): start and stop fetching."""
        yield

    def wait(self, path: Path, end: int) -> None:
        """Block until the first ``end`` bytes of the input file ``path`` are on disk."""

    def written(self, shard: PlannedShard) -> None:
        """Output shard ``shard`` is written in every output folder."""

    def settle(self, shard: PlannedShard) -> None:
        """Block until every input file ``shard`` was read from has passed the source's checks (raise if one
        failed): a shard made from unchecked bytes is never renamed into place."""

    def done(self) -> None:
        """The job finished: remove what the source staged."""

    def close(self) -> None:
        """Stop background work (an input still opening)."""
