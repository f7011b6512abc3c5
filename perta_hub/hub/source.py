"""A job's Hub inputs opened from their headers and fetched file by file as the engine streams (the *source*
of ``apply`` with Hub inputs, local or ``--stream``, and of the dry runs).

**Opening.** Each Hub input is opened from its safetensors headers and small JSON files
(:mod:`perta_hub.hub.remote_headers`) into its own folder of the staging area (``staging/<role>``), all of them
at once in threads while the job imports torch; a local input is opened in place (:class:`perta_hub.jobs.source.
Source`). The job's checks (architecture, names, shapes, dtypes) then run on what the headers say, so a mismatch
is found before a weight is downloaded, and they run once.

**Fetching** (while the engine streams one planned stream). A downloader thread fetches the input files of the
output shards in first-use order, :data:`FETCHERS` at a time, starting a shard's files once at most
:data:`~perta_hub.hub.stream_plan.INPUT_AHEAD` shards before it are unwritten; each file is appended in place as
it arrives (:func:`perta_hub.hub.stream_fetch.fetch_into`, which checks every byte against what the Hub lists),
and :meth:`HubSource.wait` lets a tensor be read as soon as its own bytes are on disk. An output shard is renamed
into place only once every input file it was read from is complete and has passed (:meth:`HubSource.settle`);
an input file is deleted once the last output shard that reads it is written. Peak local disk of the inputs:
the files of ``INPUT_AHEAD + 1`` consecutive output shards (:meth:`HubSource.needed_bytes`).

**Resume.** The staging area is kept when a run stops: files downloaded (or partly downloaded) are completed by
the re-run, each re-checked from its first byte; a role folder whose marker names another commit is emptied of
weights first. :meth:`HubSource.done` removes the staging area after a run that finished.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perta_hub.hub.remote_headers import is_remote, open_remote_artifact, open_remote_model, remote_of
from perta_hub.hub.stream_fetch import Arrivals, fetch_into
from perta_hub.hub.stream_plan import INPUT_AHEAD
from perta_hub.io.atomic import write_atomic
from perta_hub.jobs.plan import InputFile, StreamPlan
from perta_hub.jobs.source import Input, Source
from perta_hub.runtime.workers import Workers

if TYPE_CHECKING:
    from perta_hub.io.reader import Checkpoint
    from perta_hub.io.sharding import PlannedShard

FETCHERS = 4  # input files downloaded at once (one output shard's: the first tensors arrive soonest)
SWITCH_INTERVAL = 2e-4  # seconds: the GIL's switch interval while downloads and the merge overlap
MARKER = ".perta-source"  # in each role folder: the repo@commit its files are of


def staging_for(out_dir: str | Path) -> Path:
    """Where Hub inputs are staged for the output ``out_dir``: ``.<name>.perta-inputs`` beside it."""
    out = Path(out_dir).expanduser()
    return out.parent / f".{out.name}.perta-inputs"


class HubSource(Source):
    """Hub inputs opened from their headers into ``staging`` and fetched there as the engine streams (see the
    module docstring); local inputs are read in place. Use as a context manager (its threads end with it)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.repos: dict[Path, Any] = {}  # fetched input file -> its RemoteRepo
        self.complete: set[Path] = set()  # files fetched whole before the run (fetch_whole), checked
        self.stats = {"download_bytes": 0, "download_s": 0.0}
        self._opening = ThreadPoolExecutor(3, thread_name_prefix="perta-headers")
        self._run: _Fetching | None = None

    # -- opening -------------------------------------------------------------------------------------------------
    def open(self, inputs: Sequence[Input]) -> list[Callable[[], Any]]:
        """Handles as :meth:`Source.open`; every Hub input starts opening now, in a thread of its own."""
        local = iter(super().open(inputs))
        handles = []
        for item in inputs:
            handle = next(local)
            if is_remote(str(item.source)):
                folder = self.staging / item.role
                future: Future = (self._opening.submit(open_remote_model, str(item.source), folder)
                                  if item.kind is None else
                                  self._opening.submit(open_remote_artifact, str(item.source), item.kind, folder))
                handle = future.result
            handles.append(handle)
        return handles

    def input_file(self, ckpt: Checkpoint, path: Path) -> InputFile:
        repo = remote_of(ckpt)
        if repo is None or path in self.complete:
            return super().input_file(ckpt, path)
        self.repos[path] = repo
        return InputFile(path, repo.sizes[path.name], fetched=True)

    def on_disk(self, ckpt: Checkpoint) -> bool:
        """A local checkpoint, or a Hub one whose files :meth:`fetch_whole` brought."""
        return remote_of(ckpt) is None or all(path in self.complete for path in ckpt.files)

    def fetch_whole(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Download every file of the Hub ``checkpoints`` now, :data:`FETCHERS` at a time, each checked as it
        arrives (as while streaming); they stay staged until :meth:`done` and are not fetched again."""
        files = {path: repo for ckpt in checkpoints if (repo := remote_of(ckpt)) is not None
                 for path in ckpt.files if path not in self.complete}
        self._forget_other_commits(files)
        arrivals = Arrivals(threading.Condition())

        def fetch(path: Path) -> None:
            fetch_into(files[path], path, files[path].sizes[path.name], arrivals, lambda: None)
            self.complete.add(path)

        with ThreadPoolExecutor(FETCHERS, thread_name_prefix="perta-fetch") as pool:
            for done in [pool.submit(fetch, path) for path in files]:
                done.result()

    def needed_bytes(self, plans: Sequence[StreamPlan]) -> int:
        """The fetched files of ``INPUT_AHEAD + 1`` consecutive output shards, at most (an input is kept until the
        last shard that reads it is written), for the stream that needs the most (streams run one by one)."""
        return max((window(plan) for plan in plans), default=0)

    # -- fetching --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self, plan: StreamPlan) -> Iterator[None]:
        if not any(f.fetched for files in plan.needs for f in files):
            yield  # every input is local: nothing to fetch
            return
        self._forget_other_commits({f.path: self.repos[f.path] for files in plan.needs for f in files if f.fetched})
        self._run = _Fetching(plan, self.repos, self.stats)
        try:
            with self._run, _gil_handoff():  # as apply: threads overlap, torch's own only contend
                yield
        finally:
            self._run = None

    def wait(self, path: Path, end: int) -> None:
        if self._run is not None:
            self._run.wait(path, end)

    def written(self, shard: PlannedShard) -> None:
        if self._run is not None:
            self._run.written(shard)

    def settle(self, shard: PlannedShard) -> None:
        if self._run is not None:
            self._run.settle(shard)

    def rate(self) -> float:
        """Bytes per second downloaded (0 when nothing was)."""
        s = self.stats
        return s["download_bytes"] / s["download_s"] if s["download_s"] else 0.0

    def _forget_other_commits(self, files: dict[Path, Any]) -> None:
        """Delete the weights of a role folder downloaded from another commit (an earlier run of other inputs),
        then mark each folder of ``files`` (path -> its RemoteRepo) with the commit its files come from."""
        folders = {path.parent: repo for path, repo in files.items()}
        for folder, repo in folders.items():
            marker, stamp = folder / MARKER, f"{repo.repo_id}@{repo.sha}\n"
            if not (marker.is_file() and marker.read_text() == stamp):
                for stale in folder.glob("*.safetensors"):
                    stale.unlink()
                write_atomic(marker, stamp)

    def done(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def close(self) -> None:
        self._opening.shutdown(wait=True)

    def __enter__(self) -> HubSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def window(plan: StreamPlan) -> int:
    """Peak bytes of fetched inputs on disk while ``plan`` streams: over the output shards ``k``, the fetched files
    first read by shard ``k + INPUT_AHEAD`` or before and last read by shard ``k`` or after."""
    first, last = plan.first_use(), plan.last_use()
    files = {f.path: f for fs in plan.needs for f in fs if f.fetched}
    return max((sum(f.size for f in files.values() if first[f.path] <= k + INPUT_AHEAD and last[f.path] >= k)
                for k in range(len(plan.shards))), default=0)


class _Fetching:
    """The downloads of one planned stream and the bounds they keep (see the module docstring)."""

    def __init__(self, plan: StreamPlan, repos: dict[Path, Any], stats: dict[str, Any]) -> None:
        self.plan, self.repos, self.stats = plan, repos, stats
        self.position = {shard.filename: k for k, shard in enumerate(plan.shards)}
        self.last_use = plan.last_use()
        self.fetched = {f.path: f for files in plan.needs for f in files if f.fetched}
        self.workers = Workers()
        self.cond = self.workers.cond
        self.arrivals = Arrivals(self.cond)
        self.verified: set[Path] = set()  # fetched files complete and checked against what the Hub lists
        self.written_count = 0  # output shards written (their inputs deleted)
        self.download_end = 0.0

    def _download(self) -> None:
        """Start the fetched files of each output shard in first-use order once at most ``INPUT_AHEAD`` shards
        before it are unwritten: the inputs of ``INPUT_AHEAD + 1`` output shards are on disk at most."""
        started: set[Path] = set()
        with ThreadPoolExecutor(FETCHERS, thread_name_prefix="perta-fetch") as pool:
            for k, files in enumerate(self.plan.needs):
                with self.cond:
                    while k > self.written_count + INPUT_AHEAD and not self.workers.stop.is_set():
                        self.cond.wait(0.5)
                self.workers.check()
                for f in files:
                    if f.fetched and f.path not in started:
                        started.add(f.path)
                        pool.submit(self.workers.guard(lambda f=f: self._fetch(f)))

    def _fetch(self, f: InputFile) -> None:
        self.workers.check()
        start = time.perf_counter()
        fetch_into(self.repos[f.path], f.path, f.size, self.arrivals, self.workers.check)
        with self.cond:  # download_s: the time any download was running
            self.verified.add(f.path)
            self.cond.notify_all()
            self.stats["download_bytes"] += f.size
            self.stats["download_s"] += time.perf_counter() - max(start, self.download_end)
            self.download_end = time.perf_counter()

    def wait(self, path: Path, end: int) -> None:
        if path in self.fetched:
            self.arrivals.wait(path, end, self.workers.check)
        self.workers.check()

    def written(self, shard: PlannedShard) -> None:
        """Delete the fetched inputs no later shard reads; let the next shard's inputs start."""
        k = self.position[shard.filename]
        for path, last in self.last_use.items():
            if last <= k and path in self.fetched:
                path.unlink(missing_ok=True)
        with self.cond:
            self.written_count += 1
            self.cond.notify_all()

    def settle(self, shard: PlannedShard) -> None:
        """Block until every fetched file ``shard`` was read from is complete and matches what the Hub lists (its
        download raises, and the run stops, if it does not)."""
        needs = [f.path for f in self.plan.needs[self.position[shard.filename]] if f.fetched]
        with self.cond:
            while not all(path in self.verified for path in needs):
                self.workers.check()
                self.cond.wait(0.5)

    def __enter__(self) -> _Fetching:
        self.workers.start(self._download, "perta-download")
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> None:
        self.workers.__exit__(kind, err, tb)
        if isinstance(err, Exception) and isinstance(self.workers.error, Exception) and self.workers.error is not err:
            # a download failed (e.g. other bytes than the Hub lists: the file is deleted) and the merge, reading
            # that file, failed because of it before it saw the download's error: the download's is the cause
            raise self.workers.error from err


@contextlib.contextmanager
def _gil_handoff(seconds: float = SWITCH_INTERVAL) -> Iterator[None]:
    """A short GIL switch interval for the block (restored after).

    The merge releases the GIL around each chunk's torch op (hundreds per tensor) and must take it back from
    the download threads, which hold it while they copy data; at Python's default 5 ms a tensor merged
    while inputs arrive took 2.4 s instead of 0.1 s here (2 CPU cores)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
