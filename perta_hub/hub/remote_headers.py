"""Hub checkpoints and artifacts opened from their headers only: no weight is downloaded to open them.

The repo's commit is resolved once (every later read is pinned to it); the small files (``config.json``,
tokenizer files, ``perta_config.json``, the ``*.safetensors.index.json``) are downloaded into a local staging
folder; each safetensors file's header is read with HTTP range requests on its resolve URL (the first
100 kB, then the rest of the header if it is longer) and validated by the same rules as a local file
(:func:`perta_hub.io.safetensors_format.parse_header_bytes`, against the size the Hub lists). The result is an
ordinary :class:`~perta_hub.io.reader.Checkpoint` whose entries point at where each shard *will* be once
:func:`perta_hub.hub.stream_fetch.fetch_into` has downloaded it, so the merge job's checks and its ``load`` work unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, InputError
from perta_hub.io.artifacts import Artifact
from perta_hub.io.hub_source import _hub_errors, looks_like_repo_id, split_repo_id
from perta_hub.io.reader import MODEL_FILE_PATTERNS, Checkpoint, check_file_name, index_files
from perta_hub.io.safetensors_format import MAX_HEADER_BYTES, TensorEntry, parse_header_bytes
from perta_hub.records import CONFIG_NAME, read_record

FIRST_READ = 100_000  # bytes of a file's start read at once (most headers fit)


@dataclass
class RemoteRepo:
    """A Hub repo pinned to one commit, with the size of each of its files."""

    source: str
    repo_id: str
    revision: str | None
    sha: str
    sizes: dict[str, int]

    def url(self, filename: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, filename, revision=self.sha)


def is_remote(source: str | Path | None) -> bool:
    """True for a Hub repo id (not an existing local path)."""
    return source is not None and not Path(str(source)).expanduser().exists() and looks_like_repo_id(str(source))


def resolve_repo(source: str) -> RemoteRepo:
    """Resolve ``org/name[@revision]`` to its commit and file sizes (one ``repo_info`` call)."""
    from huggingface_hub import HfApi

    repo_id, revision = split_repo_id(source)
    try:
        with _hub_errors(repo_id, revision, "reading"):
            info = HfApi().repo_info(repo_id, revision=revision, files_metadata=True)
    except ValueError as err:
        raise InputError(f"{source!r} is neither an existing folder nor a valid repo id: {err}") from err
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    return RemoteRepo(source, repo_id, revision, str(info.sha), sizes)


def fetch_small(repo: RemoteRepo, patterns: list[str], dest: Path) -> Path:
    """Download the files matching ``patterns`` (small JSON and text files) of ``repo`` into ``dest``."""
    from huggingface_hub import snapshot_download

    dest.mkdir(parents=True, exist_ok=True)
    with _hub_errors(repo.repo_id, repo.revision, "downloading"):
        snapshot_download(repo.repo_id, revision=repo.sha, allow_patterns=patterns, local_dir=str(dest))
    return dest


def read_range(repo: RemoteRepo, filename: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a file of ``repo`` (one HTTP range request)."""
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers

    headers = {**build_hf_headers(), "Range": f"bytes={start}-{end - 1}"}
    with _hub_errors(repo.repo_id, repo.revision, "reading"):
        response = get_session().get(repo.url(filename), headers=headers)
        hf_raise_for_status(response)
    data = response.content
    if response.status_code == 200 and start:  # a server without range support: the whole file came
        data = data[start:end]
    return data[: end - start]


def remote_entries(repo: RemoteRepo, filename: str, local: Path) -> list[TensorEntry]:
    """The tensors of one remote safetensors file, from its header alone (``local``: where it will be)."""
    size = repo.sizes.get(filename)
    if size is None:
        raise CheckpointError(f"{repo.source} has no file {filename}; re-upload it")
    where = f"{repo.repo_id}@{repo.sha[:12]}/{filename}"
    first = read_range(repo, filename, 0, min(size, FIRST_READ)) if size else b""
    if len(first) < 8:
        raise CheckpointError(f"{where} is not a safetensors file (only {size} bytes); re-upload it")
    (header_len,) = struct.unpack("<Q", first[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise CheckpointError(f"{where} has a corrupt safetensors header (length {header_len}, file {size} bytes); "
                              "re-upload it")
    raw = first[8:8 + header_len]
    if len(raw) < header_len:
        raw += read_range(repo, filename, len(first), 8 + header_len)
    _, entries = parse_header_bytes(raw, size, local)
    return entries


def _weight_files(repo: RemoteRepo, staging: Path, prefix: str | None) -> tuple[str, list[str]]:
    """(prefix, shard file names in shard order) of a remote repo, as :func:`find_weight_files` finds them."""
    names = set(repo.sizes)
    prefixes = [prefix] if prefix else ["model"] + sorted(
        n[: -len(".safetensors.index.json")] for n in names if n.endswith(".safetensors.index.json")
    ) + sorted(n[: -len(".safetensors")] for n in names if n.endswith(".safetensors") and "-of-" not in n
               and "/" not in n)
    for pre in prefixes:
        index = f"{pre}.safetensors.index.json"
        if index in names:
            path = staging / index
            if not path.is_file():
                fetch_small(repo, [index], staging)
            files = [p.name for p in index_files(path, hub=True)]
            missing = [f for f in files if f not in names]
            if missing:
                raise CheckpointError(f"{repo.source} is incomplete: {missing[0]} named in {index} is missing; "
                                      "re-upload it")
            return pre, files
        if f"{pre}.safetensors" in names:
            return pre, [f"{pre}.safetensors"]
    raise CheckpointError(f"{repo.source} holds no safetensors weights; pass a repo of safetensors weights")


def remote_checkpoint(repo: RemoteRepo, staging: Path, prefix: str | None = None) -> Checkpoint:
    """A :class:`Checkpoint` of ``repo`` built from headers; its files are to be fetched into ``staging``."""
    pre, names = _weight_files(repo, staging, prefix)
    entries: dict[str, TensorEntry] = {}
    files = []
    for name in names:
        local = check_file_name(staging, name, staging / f"{pre}.safetensors.index.json", hub=True)
        files.append(local)
        for entry in remote_entries(repo, name, local):
            if entry.name in entries:
                raise CheckpointError(f"tensor {entry.name} appears in both {entries[entry.name].file.name} and "
                                      f"{name} of {repo.source}")
            entries[entry.name] = entry
    ckpt = Checkpoint(staging, repo.source, pre, files, entries, repo.sha)
    ckpt.remote = repo  # type: ignore[attr-defined]
    return ckpt


def open_remote_model(source: str, staging: Path) -> Checkpoint:
    """A Hub model from its headers; config, tokenizer and index files downloaded into ``staging``."""
    repo = resolve_repo(source)
    fetch_small(repo, MODEL_FILE_PATTERNS, staging)
    return remote_checkpoint(repo, staging)


class RemoteArtifact(Artifact):
    """An artifact repo whose groups are read from their headers (see :func:`remote_checkpoint`)."""

    repo: RemoteRepo

    def group(self, prefix: str) -> Checkpoint:
        return self.checked(remote_checkpoint(self.repo, self.root, prefix), prefix)


def open_remote_artifact(source: str, expected_kind: str | None, staging: Path) -> RemoteArtifact:
    """An artifact repo's record (``perta_config.json``) and index files, downloaded into ``staging``."""
    repo = resolve_repo(source)
    fetch_small(repo, [CONFIG_NAME, "README.md", "*.safetensors.index.json"], staging)
    if not (staging / CONFIG_NAME).is_file():
        raise CheckpointError(f"{source} is not a perta-hub artifact (no {CONFIG_NAME}); create one with "
                              "`perta-hub task-vector` or `perta-hub compute-weights`")
    record = read_record(staging)
    if expected_kind and record.kind != expected_kind:
        raise InputError(f"{source} is a {record.kind} artifact, not a {expected_kind}; check the option you passed "
                         "it to")
    artifact = RemoteArtifact(staging, source, record, repo.sha)
    artifact.repo = repo
    return artifact


def remote_of(ckpt: Checkpoint) -> Any:
    """The :class:`RemoteRepo` of a checkpoint opened from headers, else None."""
    return getattr(ckpt, "remote", None)
