"""Streaming shard writer: planned layout, temporary names, atomic renames, resume, overlapped I/O.

Four threads form a pipeline: a reader loads the inputs of the next tensors (prefetch), the caller's
thread combines them, a writer appends each result to its shard in file order (:class:`ShardFile`,
direct I/O where possible), and a finisher fsyncs and renames complete shards while the writer goes on.
Each shard is written as ``.<name>.partial``, fsynced and renamed when complete, so a finished file is
always whole. A re-run skips shards whose file already carries the planned header (same layout, same run
id) and size.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import MismatchError
from perta_hub.io.atomic import _fsync_dir
from perta_hub.io.fingerprint import remember_sha256
from perta_hub.io.shard_file import ShardFile
from perta_hub.io.sharding import PlannedShard, TensorSpec
from perta_hub.runtime.buffers import gc_paused

log = logging.getLogger("perta_hub.io")

_END = object()


@dataclass(frozen=True)
class Output:
    """One output folder and the metadata stored in each of its shards (``format: pt``, run id...)."""

    folder: Path
    metadata: dict[str, str]


def shard_is_complete(path: Path, header: bytes, data_size: int) -> bool:
    """True when ``path`` exists with exactly the planned header and total size."""
    try:
        if path.stat().st_size != len(header) + data_size:
            return False
        with path.open("rb") as fh:
            return fh.read(len(header)) == header
    except OSError:
        return False


def partial_name(folder: Path, filename: str) -> Path:
    return folder / f".{filename}.partial"


def _as_bytes(tensor: Any) -> Any:
    import torch

    return tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy()


class _Stop(Exception):
    """Raised inside a pipeline thread when another thread failed."""


class _Pipe:
    """A bounded queue whose ``put``/``get`` give up when the pipeline is stopping."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stop


class _Budget:
    """Bytes allowed in flight between reading a tensor and writing its result.

    One item larger than the budget is admitted when nothing else is in flight, so memory stays near
    ``max(budget, largest tensor)`` times the inputs' and outputs' size per output byte.
    """

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit, self.used, self.stop = limit, 0, stop
        self.cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit:
                if self.stop.is_set():
                    raise _Stop
                self.cond.wait(0.1)
            self.used += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


IN_FLIGHT_BYTES = 512 * 10**6  # bytes held between reading a tensor's inputs and writing its results


def shards_to_write(shards: Sequence[PlannedShard], outputs: Sequence[Output],
                    delivered: Container[str] = ()) -> list[tuple[PlannedShard, list[int]]]:
    """The planned shards still to write and, for each, the outputs (indices) that lack it: a shard whose file
    already carries the planned header and size (an interrupted run's) is not written again, nor one whose file
    name is in ``delivered`` (shards an earlier run delivered elsewhere, e.g. uploaded)."""
    todo = []
    for shard in shards:
        if shard.filename in delivered:
            continue
        pending = [i for i, out in enumerate(outputs)
                   if not shard_is_complete(out.folder / shard.filename, shard.header(out.metadata), shard.data_size)]
        if pending:
            todo.append((shard, pending))
    return todo


@gc_paused()
def stream_shards(
    todo: Sequence[tuple[PlannedShard, list[int]]],
    outputs: Sequence[Output],
    load: Callable[[str], Any],
    combine: Callable[[str, Any], Sequence[Any]],
    *,
    desc: str = "writing",
    prefetch: int = 4,
    in_flight_bytes: int = IN_FLIGHT_BYTES,
    progress: bool = True,
    hash_outputs: bool = False,
    digests: dict[Path, str] | None = None,
    recycle: Callable[[Any], None] | None = None,
    held_bytes: Callable[[TensorSpec], int] | None = None,
    settle: Callable[[PlannedShard], None] | None = None,
    finished: Callable[[PlannedShard, list[Path]], None] | None = None,
) -> int:
    """Write the shards of ``todo`` (:func:`shards_to_write`) into the outputs that lack them.

    Args:
        todo: the shards to write (same layout for every output) and, for each, the outputs to write it into.
        outputs: the folders (created if needed) and their shard metadata.
        load: ``name -> inputs`` (runs in the reader thread; e.g. Checkpoint.get).
        combine: ``(name, inputs) -> one tensor per output``, each with the planned dtype and shape.
        prefetch: how many tensors may wait between two stages.
        in_flight_bytes: bytes allowed between reading tensors and writing their results (bounds memory).
        held_bytes: the bytes one tensor holds while in flight, inputs and results (default: its size
            once per output plus once for its inputs).
        hash_outputs: compute each finished shard's sha256 into the hash cache (artifacts are
            inputs of later commands, which then find their content hash ready).
        digests: filled with the sha256 of each shard written (final path -> hex), hashed while writing.
        recycle: called with each result tensor once it is written (e.g. ``BufferPool.give``).
        settle: called with each complete shard before it is renamed into place (it may wait, or raise to
            keep the shard from ever being renamed).
        finished: called with each shard and its final paths once it is renamed in every output.
    Returns:
        the number of data bytes written.
    """
    from perta_hub.runtime.progress import Progress

    for out in outputs:
        out.folder.mkdir(parents=True, exist_ok=True)
        for stale in out.folder.glob(".*.partial"):
            stale.unlink()
    total = sum(shard.data_size * len(pending) for shard, pending in todo)
    stop = threading.Event()
    errors: list[BaseException] = []
    to_combine, to_write = _Pipe(prefetch, stop), _Pipe(prefetch, stop)
    budget = _Budget(in_flight_bytes, stop)
    held = held_bytes or (lambda spec: spec.nbytes * (len(outputs) + 1))
    bar = Progress(desc, total, unit="B", unit_scale=True, enabled=progress and total > 0)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except _Stop:
                pass
            except BaseException as err:  # handed to the caller's thread
                errors.append(err)
                stop.set()
        return run

    def read() -> None:
        for shard, _ in todo:
            for spec in shard.in_file_order():
                budget.acquire(held(spec))
                to_combine.put((spec, load(spec.name)))
            to_combine.put((_END, shard))
        to_combine.put(None)

    in_flight: set[Path] = set()  # partial files not yet renamed; removed if the run fails
    lock = threading.Lock()
    to_finish = _Pipe(max(2, len(outputs) * 2), stop)

    def write() -> None:
        for shard, pending in todo:
            files: dict[int, ShardFile] = {}
            try:
                header_lens = {}
                for i in pending:
                    path = partial_name(outputs[i].folder, shard.filename)
                    with lock:
                        in_flight.add(path)
                    header = shard.header(outputs[i].metadata)
                    header_lens[i] = len(header)
                    files[i] = ShardFile(path, header, shard.data_size,
                                         digest=hash_outputs or digests is not None)
                while True:
                    item = to_write.get()
                    if item[0] is _END:
                        break
                    spec, results = item
                    start = shard.offsets[spec.name][0]
                    for i in pending:
                        files[i].write_at(header_lens[i] + start, _as_bytes(results[i]))
                    if recycle is not None:
                        for result in results:
                            recycle(result)
                    del results
                    budget.release(held(spec))
                    bar.update(spec.nbytes * len(pending))
                for file in files.values():
                    file.finish()
            except BaseException:
                for file in files.values():
                    file.close()
                raise
            to_finish.put((shard, files))
        to_finish.put(None)

    def finish() -> None:
        """fsync and rename complete shards while the writer goes on with the next one."""
        while (item := to_finish.get()) is not None:
            shard, files = item
            try:
                if settle is not None:
                    settle(shard)
                paths = [outputs[i].folder / shard.filename for i in files]
                for i in list(files):
                    os.fsync(files[i].fd)
                    file = files.pop(i)
                    file.close()
                    folder = outputs[i].folder
                    os.replace(partial_name(folder, shard.filename), folder / shard.filename)
                    log.debug("wrote %s (%s bytes)", folder / shard.filename, f"{shard.data_size:,}")
                    with lock:
                        in_flight.discard(partial_name(folder, shard.filename))
                    _fsync_dir(folder)
                    if file.sha256 is not None:
                        digest = file.sha256.hexdigest()
                        if digests is not None:
                            digests[folder / shard.filename] = digest
                        if hash_outputs:
                            remember_sha256(folder / shard.filename, digest)
                if finished is not None:
                    finished(shard, paths)
            finally:
                for file in files.values():
                    file.close()

    threads = [threading.Thread(target=guarded(fn), daemon=True, name=f"perta-{fn.__name__}")
               for fn in (read, write, finish)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = to_combine.get()
            if item is None:
                break
            spec, inputs = item
            if spec is _END:
                to_write.put((_END, inputs))
                continue
            results = combine(spec.name, inputs)
            for result in results:
                if tuple(result.shape) != spec.shape:
                    raise MismatchError(f"{spec.name}: computed shape {tuple(result.shape)} but planned {spec.shape}")
            to_write.put((spec, results))
    except _Stop:
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        if errors or stop.is_set():
            stop.set()
        for thread in threads:
            thread.join()
        bar.close(failed=bool(errors) or stop.is_set())
        if errors or stop.is_set():
            for path in in_flight:  # never leave a partial file behind
                path.unlink(missing_ok=True)
    if errors:
        raise errors[0]
    return total
