"""Hub-to-Hub streaming apply: merge shard by shard, never holding more than a few shards on local disk.

``apply MODEL --task-vector TV [--weights WM] --push REPO --stream``:

1. The inputs are opened from their headers (:mod:`perta_hub.hub.remote_headers`) and every check of
   :class:`~perta_hub.merge.apply.PerTAMergeJob` runs before a weight is downloaded.
2. Downloads, merge and uploads overlap. Downloader threads (:mod:`perta_hub.hub.stream_fetch`) fetch the
   input files of output shards ``k`` and ``k + 1`` in first-use order, each appended in place as it arrives;
   a tensor is merged (the job's own ``load``/``combine`` through :func:`perta_hub.io.writer.stream_shards`,
   torch on one thread as in ``apply``) as soon as its own bytes are on disk in every input, and an uploader
   pre-uploads each finished output shard to LFS (its sha256 is computed while it is written, never re-read
   for hashing) while the next one is merged, then deletes it. Each input file is checked against what the Hub
   lists for it as it arrives (its header against the one read by range, before any of its tensors is read;
   its sha256 once it is complete, see :mod:`perta_hub.hub.stream_fetch`), and an output shard is uploaded
   only when every input file it was read from has passed: a file that fails stops the run before anything
   made from it leaves the machine. An input file is deleted once the last output
   shard that reads it is written. At most :data:`OUTPUT_SLOTS` output shards are on disk at once (a slot is
   taken when a shard's first tensor is read, given back when its upload is confirmed).
3. When every shard is uploaded, **one commit** adds the shards, the index, config, tokenizer files, the card
   and ``perta_config.json`` (the push allow-list), and deletes stale weight files; then, as ``push`` does, a
   second small commit records that commit's sha in ``perta_config.json`` and the card.

Resume: ``.perta-stream.json`` in the staging folder (beside the output, kept until the commit) lists the shards whose upload the server confirmed; a
re-run asks the server (``list_lfs_files``) whether it still holds them, neither recomputes nor uploads those, and
commits them by sha256 (:func:`uploaded_op`).
Nothing is committed before every shard is uploaded, so the repo never holds a partial output.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import io
import json
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perta_hub.errors import HubError, InputError
from perta_hub.hub.remote_headers import is_remote, open_remote_artifact, open_remote_model
from perta_hub.hub.stream_fetch import Arrivals, fetch_into, remove_stale_inputs
from perta_hub.hub.stream_plan import INPUT_AHEAD, OUTPUT_SLOTS, MergePlan, _read_for, save_rates
from perta_hub.io.atomic import write_atomic
from perta_hub.io.fingerprint import file_sha256
from perta_hub.io.hub_source import _hub_errors, split_repo_id
from perta_hub.io.output_folder import OutputFolder, claimed
from perta_hub.io.sharding import SHARD_METADATA, index_json
from perta_hub.io.writer import Output, stream_shards
from perta_hub.merge.apply import PerTAMergeJob
from perta_hub.records import CONFIG_NAME, read_record
from perta_hub.runtime.devices import one_torch_thread

STATE = ".perta-stream.json"
SWITCH_INTERVAL = 2e-4  # seconds: the GIL's switch interval while downloads and the merge overlap
FETCHERS = 4  # input files downloaded at once (one output shard's: the first tensors arrive soonest)


class RemoteMergeJob(PerTAMergeJob):
    """A :class:`PerTAMergeJob` whose Hub inputs are opened from their headers; their files are fetched into
    ``staging`` on demand (local inputs are read in place). The Hub inputs are opened at once, in threads, while
    the job imports torch; their errors are raised in the order :class:`PerTAMergeJob` opens them."""

    def __init__(self, model: str | Path, task_vector: str | Path, *args: Any, staging: Path, **kwargs: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.staging = staging
        self.opening: dict[tuple[str, str], Any] = {}
        with ThreadPoolExecutor(3, thread_name_prefix="perta-headers") as pool:
            if is_remote(model):
                self.opening["model", str(model)] = pool.submit(open_remote_model, str(model), staging / "target")
            for source, kind in ((task_vector, "task_vector"), (kwargs.get("weights"), "weight_map")):
                if is_remote(source):
                    self.opening[kind, str(source)] = pool.submit(open_remote_artifact, str(source), kind,
                                                                  staging / kind)
            super().__init__(model, task_vector, *args, **kwargs)

    def open_model(self, model: str | Path, allow_pickle: bool, out_dir: str | Path) -> Any:
        if ("model", str(model)) in self.opening:
            return self.opening["model", str(model)].result()
        return super().open_model(model, allow_pickle, out_dir)

    def open_artifact(self, source: str | Path, kind: str) -> Any:
        if (kind, str(source)) in self.opening:
            return self.opening[kind, str(source)].result()
        return super().open_artifact(source, kind)


def staging_for(out_dir: str | Path) -> Path:
    """Where the streaming mode keeps input files: ``.<name>.perta-inputs`` beside the output folder."""
    out = Path(out_dir).expanduser()
    return out.parent / f".{out.name}.perta-inputs"


class _Failed(Exception):
    pass


class _Pipeline:
    """The downloader and uploader threads and the bounds they keep (see the module docstring)."""

    def __init__(self, plan: MergePlan, api: Any, repo_id: str, branch: str, folder: Path, state_path: Path,
                 state: dict[str, Any], skip: set[str]) -> None:
        self.plan, self.api, self.repo_id, self.branch, self.folder = plan, api, repo_id, branch, folder
        self.state, self.state_path = state, state_path
        self.todo = [k for k, s in enumerate(plan.shards) if s.filename not in skip]
        self.position = {plan.shards[k].filename: k for k in self.todo}
        self.last_use: dict[Path, int] = {}
        for k in self.todo:
            for f in plan.needs[k]:
                self.last_use[f.path] = k
        self.cond = threading.Condition()
        self.arrivals = Arrivals(self.cond)
        self.verified: set[Path] = set()  # input files complete and checked against what the Hub lists
        for path, file in plan.files.items():
            if file.remote is None:
                self.arrivals.set(path, file.size)
                self.verified.add(path)
        self.download_end = 0.0
        self.reading = -1  # the output shard whose tensors are being read
        self.finished_count = 0  # output shards written (their inputs deleted)
        self.slots = threading.Semaphore(OUTPUT_SLOTS)
        self.uploads: queue.Queue = queue.Queue()
        self.ops: dict[str, Any] = {}  # shard name -> its pre-uploaded CommitOperationAdd (file deleted)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.stats = {"download_bytes": 0, "download_s": 0.0, "upload_bytes": 0, "upload_s": 0.0}
        self.shard_of = {spec.name: k for k in self.todo for spec in plan.shards[k].tensors}
        self.threads = [threading.Thread(target=self._guard(self._download), name="perta-download", daemon=True),
                        threading.Thread(target=self._guard(self._upload), name="perta-upload", daemon=True)]

    def _guard(self, fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except _Failed:
                pass
            except BaseException as err:  # handed to the merge thread
                self.error = self.error or err
                self.stop.set()
                with self.cond:
                    self.cond.notify_all()
        return run

    def _check(self) -> None:
        if self.error is not None or self.stop.is_set():
            raise self.error or _Failed()

    # -- downloads ---------------------------------------------------------------------------------------
    def _download(self) -> None:
        """Fetch the input files of each output shard in first-use order, ``FETCHERS`` at a time, once at most
        ``INPUT_AHEAD`` shards before it are unfinished: the inputs of ``INPUT_AHEAD + 1`` output shards are on
        disk at most. Files are not waited for as a whole: :meth:`load` waits for the bytes of its tensor."""
        from concurrent.futures import ThreadPoolExecutor

        started: set[Path] = set()
        with ThreadPoolExecutor(FETCHERS, thread_name_prefix="perta-fetch") as pool:
            for i, k in enumerate(self.todo):
                with self.cond:
                    while i > self.finished_count + INPUT_AHEAD and not self.stop.is_set():
                        self.cond.wait(0.5)
                self._check()
                for f in self.plan.needs[k]:
                    if f.remote is not None and f.path not in started:
                        started.add(f.path)
                        pool.submit(self._guard(lambda f=f: self._fetch(f)))

    def _fetch(self, f: Any) -> None:
        self._check()
        start = time.perf_counter()
        fetch_into(f.remote, f.path, f.size, self.arrivals, self._check)
        with self.cond:  # download_s: the time any download was running
            self.verified.add(f.path)
            self.cond.notify_all()
            self.stats["download_bytes"] += f.size
            self.stats["download_s"] += time.perf_counter() - max(start, self.download_end)
            self.download_end = time.perf_counter()

    def load(self, job: PerTAMergeJob, name: str) -> Any:
        """``job.load`` once the bytes of ``name`` are local in every input; takes an output slot at each new
        shard."""
        k = self.shard_of[name]
        if k != self.reading:
            while not self.slots.acquire(timeout=0.5):
                self._check()
            with self.cond:
                self.reading = k
                self.cond.notify_all()
        for ckpt in _read_for(job, name):
            entry = ckpt.entries[name]
            self.arrivals.wait(entry.file, entry.offset + entry.nbytes, self._check)
        self._check()
        return job.load(name)

    # -- finished shards -----------------------------------------------------------------------------------
    def finished(self, path: Path, digest: str) -> None:
        """A shard is written (renamed, its sha256 known): delete inputs no later shard needs, queue its upload."""
        self._check()
        k = self.position[path.name]
        for file, last in self.last_use.items():
            if last <= k and self.plan.files[file].remote is not None:
                file.unlink(missing_ok=True)
        with self.cond:
            self.finished_count += 1
            self.cond.notify_all()
        self.uploads.put((path, digest))

    def _upload(self) -> None:
        """Pre-upload each finished shard (``preupload_lfs_files``), keep its operation for the commit, delete it."""
        from huggingface_hub import CommitOperationAdd

        for _ in self.todo:
            while True:
                try:
                    path, digest = self.uploads.get(timeout=0.5)
                    break
                except queue.Empty:
                    self._check()
            self._wait_verified(self.position[path.name])
            size = path.stat().st_size
            with path.open("rb") as fh:
                sample = fh.read(512)
            op = CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
            op.upload_info.sha256 = bytes.fromhex(digest)  # hashed while written: not read again for it
            start = time.perf_counter()
            with _hub_errors(self.repo_id, self.branch, "pushing to"):
                self.api.preupload_lfs_files(self.repo_id, [op], revision=self.branch)
            if op.path_or_fileobj != b"":  # the client frees the operations it uploaded, and only those
                raise HubError(f"{self.repo_id} does not store {path.name} in LFS (see its .gitattributes), which "
                               "--stream needs; run apply, then push")
            self.stats["upload_s"] += time.perf_counter() - start
            self.stats["upload_bytes"] += size
            self.ops[path.name] = op
            self.state["uploaded"][path.name] = {"sha256": digest, "size": size,
                                                 "sample": base64.b64encode(sample).decode()}
            write_atomic(self.state_path, json.dumps(self.state, indent=2) + "\n")
            path.unlink()
            self.slots.release()

    def _wait_verified(self, k: int) -> None:
        """Block until every input file output shard ``k`` was read from is complete and matches what the Hub lists
        (its download raises, and the run stops, if it does not)."""
        with self.cond:
            while not all(f.path in self.verified for f in self.plan.needs[k]):
                self._check()
                self.cond.wait(0.5)

    def __enter__(self) -> _Pipeline:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.stop.set()
        for thread in self.threads:
            thread.join()
        if exc[0] is None and self.error is not None:
            raise self.error


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


class _Digests(dict):
    """The writer's ``digests`` map: each finished shard is handed on as soon as it is recorded."""

    def __init__(self, on_shard: Any) -> None:
        super().__init__()
        self.on_shard = on_shard

    def __setitem__(self, path: Path, digest: str) -> None:
        super().__setitem__(path, digest)
        self.on_shard(path, digest)


def _confirmed(api: Any, repo_id: str, uploaded: dict[str, dict[str, Any]]) -> set[str]:
    """The shards of ``uploaded`` whose content the server holds (``list_lfs_files``: sha256 and size)."""
    if not uploaded:
        return set()
    held = {(f.file_oid, int(f.size)) for f in api.list_lfs_files(repo_id)}
    return {name for name, v in uploaded.items() if (v["sha256"], int(v["size"])) in held}


class ShardGone(HubError):
    """A shard an interrupted run uploaded is not on the Hub any more (its bytes were asked for)."""


class _Withheld(io.BufferedIOBase):
    """Stands in for a shard uploaded by an interrupted run, deleted since: its first bytes, for
    ``CommitOperationAdd`` to read once; sealed, any read raises :class:`ShardGone`, so a commit can never send
    these bytes in place of the shard."""

    def __init__(self, name: str, sample: bytes) -> None:
        super().__init__()
        self.name, self.sample, self.pos, self.sealed = name, sample, 0, False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = max(0, offset + (0, self.pos, len(self.sample))[whence])
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        if self.sealed:
            raise ShardGone(f"{self.name}, uploaded by an interrupted run, is no longer on the Hub; delete the output "
                            "folder and its staging folder (.<name>.perta-inputs beside it), then re-run the same "
                            "command")
        end = len(self.sample) if size is None or size < 0 else self.pos + size
        data = self.sample[self.pos:end]
        self.pos += len(data)
        return data

    read1 = read


def uploaded_op(name: str, info: dict[str, Any]) -> Any:
    """A ``CommitOperationAdd`` of a shard an earlier run pre-uploaded (``info``: its sha256, size and first
    bytes), whose file is gone. The public API cannot add a file by sha256 alone: the operation is made from a
    :class:`_Withheld` stand-in and its ``upload_info`` given the shard's size and sha256 (docs/hub.md)."""
    from huggingface_hub import CommitOperationAdd

    stand_in = _Withheld(name, base64.b64decode(info.get("sample", "")))
    op = CommitOperationAdd(path_in_repo=name, path_or_fileobj=stand_in)
    op.upload_info.size = int(info["size"])
    op.upload_info.sha256 = bytes.fromhex(info["sha256"])
    stand_in.sealed = True
    return op


def stream_apply(job: RemoteMergeJob, plan: MergePlan, repo: str, *, private: bool | None, revision: str | None,
                 commit_message: str | None, progress: bool) -> Any:
    """Merge, pre-upload and commit ``job``'s single output to ``repo`` (see the module docstring).

    Returns:
        the :class:`~perta_hub.hub.publish.PushResult` of the commit.
    """
    from huggingface_hub import HfApi, get_token

    from perta_hub.hub.publish import resolve_private

    if len(job.folders) != 1:
        raise InputError("--stream writes one output; give one --alpha")
    repo_id, at_revision = split_repo_id(repo)
    branch = revision or at_revision or "main"
    token = get_token()
    if not token:
        raise HubError(f"pushing to {repo_id} needs a Hugging Face token with write access: set HF_TOKEN or run "
                       "`hf auth login`")
    api = HfApi(token=token)
    out = OutputFolder(job.folders[0], job.run_ids[0], job.local_inputs())
    with _hub_errors(repo_id, branch, "pushing to"):
        url = str(api.create_repo(repo_id, private=resolve_private(out.path, private), exist_ok=True))
        if branch != "main" and not branch.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=branch, exist_ok=True)
    state_path = job.staging / STATE
    state: dict[str, Any] = {"repo_id": repo_id, "run_id": job.run_ids[0], "uploaded": {}}
    if state_path.is_file():
        previous = json.loads(state_path.read_text())
        if previous.get("repo_id") == repo_id and previous.get("run_id") == job.run_ids[0]:
            state["uploaded"] = previous.get("uploaded", {})
        else:
            remove_stale_inputs(job.staging)
    else:
        remove_stale_inputs(job.staging)  # downloads without a record of their run are not trusted
    with claimed([out], plan.stream_disk_bound()) as pending:
        if not pending and not state["uploaded"]:
            return _already_pushed(api, out.path, repo_id, branch, url)
        done = _confirmed(api, repo_id, state["uploaded"])
        state["uploaded"] = {k: v for k, v in state["uploaded"].items() if k in done}
        ops = _merge_and_upload(job, plan, api, repo_id, branch, out, state, done, progress) if pending else {}
    result = _commit(plan, api, repo_id, branch, out.path, state, ops, commit_message, url)
    shutil.rmtree(job.staging, ignore_errors=True)
    return result


def _already_pushed(api: Any, folder: Path, repo_id: str, branch: str, url: str) -> Any:
    """A finished streaming run re-run: its recorded commit, if it was published to this repo and branch."""
    from perta_hub.hub.publish import PushResult, _recorded_commit

    commit = _recorded_commit(folder, repo_id, branch)
    if commit is None:
        raise InputError(f"{folder} holds a finished output that was not streamed to {repo_id}; push it with "
                         f"`perta-hub push {folder} {repo_id}`")
    head = api.repo_info(repo_id, revision=branch).sha
    return PushResult(repo_id, commit, head, branch, url, api.repo_info(repo_id).private, None, False, (), ())


def _merge_and_upload(job: RemoteMergeJob, plan: MergePlan, api: Any, repo_id: str, branch: str, out: OutputFolder,
                      state: dict[str, Any], done: set[str], progress: bool) -> dict[str, Any]:
    """Merge and pre-upload the shards not in ``done``; returns their pre-uploaded operations by name."""
    folder = out.path
    job.staging.mkdir(parents=True, exist_ok=True)
    write_atomic(job.staging / STATE, json.dumps(state, indent=2) + "\n")
    for stale in folder.glob("*.safetensors"):  # shards of an interrupted run not confirmed uploaded
        if stale.name not in done:
            stale.unlink()
    started = time.perf_counter()
    job.started()
    pipeline = _Pipeline(plan, api, repo_id, branch, folder, job.staging / STATE, state, done)
    shards = [plan.shards[k] for k in pipeline.todo]
    stream = job.streams()[0]
    with pipeline, one_torch_thread(), _gil_handoff():  # as apply: threads overlap, torch's own only contend
        stream_shards(shards, [Output(folder, SHARD_METADATA)], stream.prefix, lambda n: pipeline.load(job, n),
                      stream.combine, desc=f"{stream.desc}, streamed", progress=progress,
                      digests=_Digests(pipeline.finished), recycle=stream.recycle, held_bytes=stream.held_bytes)
    wall = time.perf_counter() - started
    stats = pipeline.stats
    save_rates(download=stats["download_bytes"] / stats["download_s"] if stats["download_s"] else 0,
               upload=stats["upload_bytes"] / stats["upload_s"] if stats["upload_s"] else 0,
               merge=sum(s.data_size for s in shards) / wall if wall else 0)
    write_atomic(folder / f"{stream.prefix}.safetensors.index.json", index_json(plan.shards))
    job.finish_folder(0, folder)
    record, card = job.record(0, folder)
    files = {name: v["sha256"] for name, v in state["uploaded"].items()}
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.name not in ("README.md", CONFIG_NAME):
            files.setdefault(path.name, file_sha256(path))
    record = dataclasses.replace(record, files=dict(sorted(files.items())), mode="stream")
    out.finish(record, card)  # hashes the files on disk; the uploaded shards are no longer there: the record
    finished = read_record(folder)  # lists them too (hashed while written), with what finish added (a recipe step)
    write_atomic(folder / CONFIG_NAME, dataclasses.replace(finished, files=record.files).to_json())
    job.close()
    return pipeline.ops


def _commit(plan: MergePlan, api: Any, repo_id: str, branch: str, folder: Path, state: dict[str, Any],
            ops_by_name: dict[str, Any], commit_message: str | None, url: str) -> Any:
    """One commit of every shard (pre-uploaded: ``ops_by_name`` by this run, :func:`uploaded_op` by an earlier
    one), the index, side files, card and record; then the record commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    from perta_hub.hub.allowlist import plan_upload
    from perta_hub.hub.publish import (
        STALE_PATTERNS,
        PushResult,
        _command_of,
        _record_publication,
        default_commit_message,
        folder_kind,
    )

    missing = [s.filename for s in plan.shards if s.filename not in state["uploaded"]]
    if missing:
        raise HubError(f"{len(missing)} shard(s) of {folder} were not uploaded ({missing[0]}...); re-run the same "
                       "command to finish")
    shard_names = [s.filename for s in plan.shards]  # uploaded already, no longer on disk
    upload = tuple(sorted(set(plan_upload(folder, folder_kind(folder)).upload) | set(shard_names)))
    ops: list[Any] = []
    for name in upload:
        if name in ops_by_name:
            ops.append(ops_by_name[name])
        elif name in state["uploaded"]:
            ops.append(uploaded_op(name, state["uploaded"][name]))
        else:
            ops.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)))
    with _hub_errors(repo_id, branch, "pushing to"):
        head_before = api.repo_info(repo_id, revision=branch).sha
        remote = api.list_repo_files(repo_id, revision=branch)
        ops += [CommitOperationDelete(path_in_repo=p) for p in remote if p not in upload
                and any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in STALE_PATTERNS)]
        commit = api.create_commit(repo_id, ops, commit_message=commit_message or default_commit_message(folder),
                                   commit_description=_command_of(folder), revision=branch, parent_commit=head_before)
        data_commit = commit.oid
        head = data_commit
        recorded = _record_publication(folder, repo_id, branch, data_commit, url)
        if recorded:
            record_ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in recorded]
            head = api.create_commit(repo_id, record_ops, commit_message=f"Record the published commit "
                                     f"{data_commit[:12]}", revision=branch).oid
        private = api.repo_info(repo_id).private
    return PushResult(repo_id, data_commit, head, branch, url, private, None, data_commit != head_before, (), ())
