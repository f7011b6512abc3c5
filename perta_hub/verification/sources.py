"""Where the output being verified and its recorded inputs are: a local folder, or a Hub repo at a commit.

Everything is read through the storage layer (:mod:`perta_hub.io.hub_source` for downloads); for a Hub repo
the file listing comes with each LFS file's sha256 (``HfApi.model_info(files_metadata=True)``), so shard
hashes are checked against the Hub without downloading the shards.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, HubError, InputError, PertaError
from perta_hub.records import CONFIG_NAME, Record, read_record

SHA_RE = re.compile(r"[0-9a-f]{40}")
LOCAL_RE = re.compile(r"sha256:[0-9a-f]{64}")
#: the small files of an output downloaded for the integrity level (the weights only for --recompute)
SMALL_PATTERNS = ["*.json", "README.md", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
WEIGHT_PATTERNS = ["*.safetensors"]


@dataclass
class Subject:
    """The output being verified.

    Attributes:
        source: what the user passed.
        folder: local folder (the output itself, or the downloaded snapshot).
        record: its ``perta_config.json``.
        repo_id, revision: the Hub repo and resolved commit (None for a local folder).
        remote: Hub files at that commit -> LFS sha256 (None for a file stored in git, not LFS).
        weights_local: whether ``folder`` holds the weight files (always for a local folder).
    """

    source: str
    folder: Path
    record: Record
    repo_id: str | None = None
    revision: str | None = None
    remote: dict[str, str | None] | None = None
    weights_local: bool = True
    local_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def present(self) -> list[str]:
        """Names of the output's files (the Hub listing, or the folder's non-hidden files), in name order."""
        if self.remote is not None:
            return sorted(n for n in self.remote if "/" not in n and n != ".gitattributes")
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def open_subject(source: str, *, with_weights: bool) -> Subject:
    """Open a local output folder, or download a Hub output (``org/name[@revision]``) at its commit.

    Raises:
        PertaError: not a perta-hub output, an invalid record, a missing repo or revision, no access.
    """
    from perta_hub.io import hub_source as hub

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{source} is a file; verify takes an output folder or a Hub repo id")
        return Subject(source, path, read_record(path))
    if not hub.looks_like_repo_id(source):
        raise InputError(f"{source} does not exist; pass an output folder or a Hub repo id (org/name[@revision])")
    repo_id, revision = hub.split_repo_id(source)
    patterns = SMALL_PATTERNS + (WEIGHT_PATTERNS if with_weights else [])
    folder, sha = hub.download(source, patterns)
    remote = hub_files(repo_id, sha)
    if CONFIG_NAME not in remote:
        raise CheckpointError(f"{source} is not a perta-hub output (no {CONFIG_NAME} at commit {sha})")
    return Subject(source, folder, read_record(folder), repo_id, sha, remote, weights_local=with_weights)


def hub_files(repo_id: str, revision: str, token: Any = None) -> dict[str, str | None]:
    """Files of a Hub repo at ``revision``: name -> LFS sha256 (None for files stored in git)."""
    from huggingface_hub import HfApi

    from perta_hub.io.hub_source import _hub_errors

    with _hub_errors(repo_id, revision, "listing"):
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token)
    out: dict[str, str | None] = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        out[sibling.rfilename] = sha
    return out


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes, read now (never from a cache: an audit re-reads what it checks)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def pinned_source(item: Any) -> str:
    """What to open for a recorded input: ``repo_id@revision`` for a Hub input, else the recorded path."""
    repo_id = getattr(item, "repo_id", None)
    repo_id = repo_id if isinstance(repo_id, str) else None
    if repo_id:
        return f"{repo_id.partition('@')[0]}@{item.revision}"
    return str(item.source)


def input_record(item: Any) -> tuple[Path, Record]:
    """The folder and record of a recorded artifact input (only its ``perta_config.json`` is downloaded).

    Raises:
        PertaError: the input cannot be reached (moved, private without a token, revision gone) or holds no
            record.
    """
    from perta_hub.io import hub_source as hub

    source = pinned_source(item)
    if is_local(source):
        return Path(source), read_record(source)
    if not getattr(item, "repo_id", None):
        raise InputError(f"the recorded input {item.source} is no longer at that path on this machine")
    folder, _ = hub.download(source, [CONFIG_NAME, "README.md"])
    return folder, read_record(folder)


def reason(err: BaseException) -> str:
    """A one-line reason from a perta-hub error (or any error)."""
    if isinstance(err, (PertaError, HubError)):
        return str(err)
    return f"{type(err).__name__}: {err}"
