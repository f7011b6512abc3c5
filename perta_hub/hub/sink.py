"""A job's output uploaded to a Hub repo as it is written (the *sink* of ``apply --stream --push``).

1. **Before anything leaves the machine** (:meth:`HubSink.delivering`): the folder's side files, card and record
   are written as they will be published and checked by the forget-data rule ``push`` and ``verify`` share
   (:func:`perta_hub.hub.card_check.check_card_before_push`; ``--skip-card-check`` as for ``push``). A refusal
   is one line; the repo is not even created.
2. **While the engine streams**: each finished output shard (its sha256 computed while it was written, never
   re-read for hashing; renamed only once its inputs passed the source's checks) is pre-uploaded to LFS
   (``preupload_lfs_files``) by an uploader thread while the next one is merged, then deleted; the
   ``CommitOperationAdd`` the client marked uploaded is kept for the commit. At most
   :data:`~perta_hub.hub.stream_plan.OUTPUT_SLOTS` output shards are on disk at once (a slot is taken when a
   shard's first tensor is read, :meth:`HubSink.opening`, and given back when its upload is confirmed).
3. **When every shard is uploaded** (:meth:`HubSink.finish`): **one commit** adds the shards, the index, config,
   tokenizer files, the card and ``perta_config.json`` (the push allow-list), and deletes stale weight files;
   then, as ``push`` does, a second small commit records that commit's sha in ``perta_config.json`` and the card.

Resume: ``.perta-stream.json`` (in the staging folder beside the output, kept until the commit) lists the shards
whose upload the server confirmed; a re-run asks the server (``list_lfs_files``) whether it still holds them,
neither recomputes nor uploads those (:meth:`HubSink.delivered`), and commits them by sha256
(:func:`uploaded_op`). Nothing is committed before every shard is uploaded, so the repo never holds a partial
output.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import io
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perta_hub.errors import HubError, InputError
from perta_hub.hub.stream_plan import OUTPUT_SLOTS
from perta_hub.io.atomic import write_atomic
from perta_hub.io.hub_source import _hub_errors, split_repo_id
from perta_hub.io.sharding import SHARD_METADATA
from perta_hub.jobs.sink import Sink
from perta_hub.records import CONFIG_NAME
from perta_hub.runtime.workers import Workers

if TYPE_CHECKING:
    from perta_hub.io.output_folder import OutputFolder
    from perta_hub.io.sharding import PlannedShard
    from perta_hub.jobs.engine import Job
    from perta_hub.records import Record

STATE = ".perta-stream.json"
#: what a forget-data refusal tells the user of a streaming run (nothing of it was uploaded)
CARD_FIX = ("nothing was published; remove them where they come from (the target's files or the command line), "
            "then re-run")


class HubSink(Sink):
    """One output folder published to ``repo`` shard by shard (see the module docstring).

    Args:
        repo: ``org/name`` (created if missing) or ``org/name@branch``.
        private: visibility of a new repo (None: the Hub's default, as ``push`` does for a model).
        revision: the branch to commit to (created from ``main`` if missing); default ``main``.
        skip_card_check: publish even when the forget data the card is checked against can no longer be read.
        state_dir: where the resume state is kept (the staging folder beside the output).
    Attributes:
        result: the :class:`~perta_hub.hub.publish.PushResult` once :meth:`finish` committed.
        notes: one-line remarks for the user (a card check that was skipped).
    """

    def __init__(self, repo: str, *, private: bool | None, revision: str | None, skip_card_check: bool,
                 state_dir: Path, commit_message: str | None = None) -> None:
        self.repo_id, at_revision = split_repo_id(repo)
        self.branch = revision or at_revision or "main"
        self.private, self.skip_card_check, self.commit_message = private, skip_card_check, commit_message
        self.state_path = state_dir / STATE
        self.api: Any = None
        self.url = ""
        self.state: dict[str, Any] = {}
        self.checked = False
        self.result: Any = None
        self.notes: list[str] = []
        self.ops: dict[str, Any] = {}  # shard name -> its pre-uploaded CommitOperationAdd (file deleted)
        self.upload_stats = {"upload_bytes": 0, "upload_s": 0.0}
        self._uploads: _Uploads | None = None

    def open(self, folders: Sequence[OutputFolder]) -> None:
        """One output, a write token, and the state an interrupted run of the same repo and run left."""
        from huggingface_hub import HfApi, get_token

        if len(folders) != 1:
            raise InputError("--stream writes one output; give one --alpha")
        token = get_token()
        if not token:
            raise HubError(f"pushing to {self.repo_id} needs a Hugging Face token with write access: set HF_TOKEN or "
                           "run `hf auth login`")
        self.api = HfApi(token=token)
        self.state = {"repo_id": self.repo_id, "run_id": folders[0].run_id, "uploaded": {}}
        if self.state_path.is_file():
            previous = json.loads(self.state_path.read_text())
            if previous.get("repo_id") == self.repo_id and previous.get("run_id") == folders[0].run_id:
                self.state["uploaded"] = previous.get("uploaded", {})

    def needed_bytes(self, shards: Sequence[PlannedShard], outputs: int) -> int:
        """The :data:`OUTPUT_SLOTS` largest output shards (headers included): those on disk at once at most."""
        sizes = sorted((len(s.header(SHARD_METADATA)) + s.data_size for s in shards), reverse=True)
        return sum(sizes[:OUTPUT_SLOTS])

    @contextlib.contextmanager
    def delivering(self, job: Job, folders: Sequence[OutputFolder]) -> Iterator[None]:
        """Check what will be published, create the repo, keep the confirmed uploads of an interrupted run, then
        upload each shard written until the block ends (and wait for the last upload)."""
        folder = folders[0].path
        job.finish_folder(0, folder)  # the side files, card and record as they will be published, checked now
        record, card = job.preview(0, folder)
        if card is not None:
            write_atomic(folder / "README.md", str(card))
        write_atomic(folder / CONFIG_NAME, self.record(record).to_json())
        self._check_card(folder)
        self._connect(folder)
        with _hub_errors(self.repo_id, self.branch, "pushing to"):
            done = _confirmed(self.api, self.repo_id, self.state["uploaded"])
        self.state["uploaded"] = {k: v for k, v in self.state["uploaded"].items() if k in done}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_path, json.dumps(self.state, indent=2) + "\n")
        for stale in folder.glob("*.safetensors"):  # shards of an interrupted run not confirmed uploaded
            if stale.name not in done:
                stale.unlink()
        self._uploads = _Uploads(self)
        try:
            with self._uploads:
                yield
        finally:
            self._uploads = None

    def delivered(self, folder: OutputFolder) -> dict[Path, str]:
        """The shards the server holds (confirmed uploads of this run and an interrupted one): path -> sha256."""
        return {folder.path / name: v["sha256"] for name, v in self.state.get("uploaded", {}).items()}

    def opening(self, shard: PlannedShard) -> None:
        if self._uploads is not None:
            self._uploads.take_slot()

    def written(self, path: Path, digest: str) -> None:
        if self._uploads is not None:
            self._uploads.put(path, digest)

    def record(self, record: Record) -> Record:
        return dataclasses.replace(record, mode="stream")

    def finish(self, folders: Sequence[Path], wrote: bool) -> Any:
        """Commit the folder (see the module docstring), or find the commit of a stream finished before."""
        folder = folders[0]
        if not self.checked and (wrote or self.state["uploaded"]):
            self._check_card(folder)  # a folder an interrupted run finished: what it publishes is checked here
        self._connect(folder)
        if not wrote and not self.state["uploaded"]:
            self.result = self._already_pushed(folder)
            return self.result
        self.result = self._commit(folder)
        self.state_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_path.parent.rmdir()  # the staging folder, when nothing else is staged there
        return self.result

    # -- steps ---------------------------------------------------------------------------------------------------
    def _check_card(self, folder: Path) -> None:
        """The forget-data rule ``push`` applies (card, side files, record), before anything is uploaded."""
        from perta_hub.hub.card_check import check_card_before_push
        from perta_hub.records import record_of

        note = check_card_before_push(folder, record_of(folder), skip_card_check=self.skip_card_check, fix=CARD_FIX)
        if note:
            self.notes.append(note)
        self.checked = True

    def _connect(self, folder: Path) -> None:
        """Create the repo (and the branch) if missing; once."""
        from perta_hub.hub.publish import resolve_private

        if self.url:
            return
        with _hub_errors(self.repo_id, self.branch, "pushing to"):
            self.url = str(self.api.create_repo(self.repo_id, private=resolve_private(folder, self.private),
                                                exist_ok=True))
            if self.branch != "main" and not self.branch.startswith("refs/pr/"):
                self.api.create_branch(self.repo_id, branch=self.branch, exist_ok=True)

    def _already_pushed(self, folder: Path) -> Any:
        """A finished streaming run re-run: its recorded commit, if it was published to this repo and branch."""
        from perta_hub.hub.publish import PushResult, _recorded_commit

        commit = _recorded_commit(folder, self.repo_id, self.branch)
        if commit is None:
            raise InputError(f"{folder} holds a finished output that was not streamed to {self.repo_id}; push it with "
                             f"`perta-hub push {folder} {self.repo_id}`")
        with _hub_errors(self.repo_id, self.branch, "pushing to"):
            head = self.api.repo_info(self.repo_id, revision=self.branch).sha
            private = self.api.repo_info(self.repo_id).private
        return PushResult(self.repo_id, commit, head, self.branch, self.url, private, None, False, (), ())

    def _commit(self, folder: Path) -> Any:
        """One commit of every shard (pre-uploaded: by this run, or :func:`uploaded_op` for an earlier one), the
        index, side files, card and record; then the record commit."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        from perta_hub.hub.allowlist import plan_upload, weight_files
        from perta_hub.hub.publish import (
            STALE_PATTERNS,
            PushResult,
            _command_of,
            _record_publication,
            default_commit_message,
            folder_kind,
        )

        kind = folder_kind(folder)
        shard_names = [n for n in weight_files(folder, kind) if n.endswith(".safetensors")]  # uploaded, gone
        uploaded = self.state["uploaded"]
        missing = [name for name in shard_names if name not in uploaded]
        if missing:
            raise HubError(f"{len(missing)} shard(s) of {folder} were not uploaded ({missing[0]}...); re-run the same "
                           "command to finish")
        upload = tuple(sorted(set(plan_upload(folder, kind).upload) | set(shard_names)))
        ops: list[Any] = []
        for name in upload:
            if name in self.ops:
                ops.append(self.ops[name])
            elif name in uploaded:
                ops.append(uploaded_op(name, uploaded[name]))
            else:
                ops.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)))
        api, repo_id, branch = self.api, self.repo_id, self.branch
        with _hub_errors(repo_id, branch, "pushing to"):
            head_before = api.repo_info(repo_id, revision=branch).sha
            remote = api.list_repo_files(repo_id, revision=branch)
            ops += [CommitOperationDelete(path_in_repo=p) for p in remote if p not in upload
                    and any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in STALE_PATTERNS)]
            commit = api.create_commit(repo_id, ops, commit_message=self.commit_message or default_commit_message(folder),
                                       commit_description=_command_of(folder), revision=branch,
                                       parent_commit=head_before)
            data_commit = head = commit.oid
            recorded = _record_publication(folder, repo_id, branch, data_commit, self.url)
            if recorded:
                record_ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in recorded]
                head = api.create_commit(repo_id, record_ops, commit_message=f"Record the published commit "
                                         f"{data_commit[:12]}", revision=branch).oid
            private = api.repo_info(repo_id).private
        return PushResult(repo_id, data_commit, head, branch, self.url, private, None, data_commit != head_before,
                          (), tuple(self.notes))


def _confirmed(api: Any, repo_id: str, uploaded: dict[str, dict[str, Any]]) -> set[str]:
    """The shards of ``uploaded`` whose content the server holds (``list_lfs_files``: sha256 and size)."""
    if not uploaded:
        return set()
    held = {(f.file_oid, int(f.size)) for f in api.list_lfs_files(repo_id)}
    return {name for name, v in uploaded.items() if (v["sha256"], int(v["size"])) in held}


class _Uploads:
    """The uploader thread and the output slots it gives back (see the module docstring)."""

    def __init__(self, sink: HubSink) -> None:
        self.sink = sink
        self.queue: queue.Queue = queue.Queue()
        self.slots = threading.Semaphore(OUTPUT_SLOTS)
        self.workers = Workers()
        self.stats = sink.upload_stats

    def take_slot(self) -> None:
        """Wait until fewer than ``OUTPUT_SLOTS`` output shards are on disk (written, queued or uploading)."""
        while not self.slots.acquire(timeout=0.5):
            self.workers.check()
        self.workers.check()

    def put(self, path: Path, digest: str) -> None:
        self.workers.check()
        self.queue.put((path, digest))

    def _run(self) -> None:
        """Upload the shards queued, in order, until the end mark (or the run stops)."""
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                self.workers.check()
                continue
            if item is None or self.workers.stop.is_set():
                return
            self._upload(*item)

    def _upload(self, path: Path, digest: str) -> None:
        """Pre-upload one shard (``preupload_lfs_files``), keep its operation for the commit, delete it."""
        from huggingface_hub import CommitOperationAdd

        sink = self.sink
        size = path.stat().st_size
        with path.open("rb") as fh:
            sample = fh.read(512)
        op = CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        op.upload_info.sha256 = bytes.fromhex(digest)  # hashed while written: not read again for it
        start = time.perf_counter()
        with _hub_errors(sink.repo_id, sink.branch, "pushing to"):
            sink.api.preupload_lfs_files(sink.repo_id, [op], revision=sink.branch)
        if op.path_or_fileobj != b"":  # the client frees the operations it uploaded, and only those
            raise HubError(f"{sink.repo_id} does not store {path.name} in LFS (see its .gitattributes), which "
                           "--stream needs; run apply, then push")
        self.stats["upload_s"] += time.perf_counter() - start
        self.stats["upload_bytes"] += size
        sink.ops[path.name] = op
        sink.state["uploaded"][path.name] = {"sha256": digest, "size": size,
                                             "sample": base64.b64encode(sample).decode()}
        write_atomic(sink.state_path, json.dumps(sink.state, indent=2) + "\n")
        path.unlink()
        self.slots.release()

    def __enter__(self) -> _Uploads:
        self.workers.start(self._run, "perta-upload")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.queue.put(None)  # after the shards queued: the uploader drains them first
        self.workers.__exit__(*exc)


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
