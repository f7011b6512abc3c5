"""Where the output being verified and its recorded inputs are: a local folder, or a Hub repo at a commit.

Everything is read through the storage layer (:mod:`perta_hub.io.hub_source` for downloads); for a Hub repo
the file listing comes with each LFS file's sha256 (``HfApi.model_info(files_metadata=True)``), so shard
hashes are checked against the Hub without downloading the shards. Recorded inputs are found by
:mod:`perta_hub.verification.locate`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, HubError, InputError, PertaError
from perta_hub.records import CONFIG_NAME, Record, read_record
from perta_hub.verification.locate import InputSearch, close, is_hub_input, locate, pinned_source

SHA_RE = re.compile(r"[0-9a-f]{40}")
LOCAL_RE = re.compile(r"sha256:[0-9a-f]{64}")
#: the small files of an output downloaded for the integrity level (the weights only for --recompute)
SMALL_PATTERNS = ["*.json", "README.md", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
WEIGHT_PATTERNS = ["*.safetensors"]


class InvalidRecord(CheckpointError):
    """The output's ``perta_config.json`` is there but does not validate: a FAIL (a missing record, or a Hub
    repo that cannot be read, is NOT VERIFIED instead)."""


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
        inputs: where recorded local inputs are looked for (:class:`InputSearch`).
    """

    source: str
    folder: Path
    record: Record
    repo_id: str | None = None
    revision: str | None = None
    remote: dict[str, str | None] | None = None
    weights_local: bool = True
    inputs: InputSearch = field(default_factory=InputSearch)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def present(self) -> list[str]:
        """The output's files as relative POSIX paths, in name order: the Hub listing at the commit (but
        ``.gitattributes``), or every file under the folder (hidden files and folders left out: run markers and
        temporaries, which ``push`` never uploads)."""
        if self.remote is not None:
            return sorted(n for n in self.remote if n != ".gitattributes")
        names = (p.relative_to(self.folder) for p in self.folder.rglob("*") if p.is_file())
        return sorted(n.as_posix() for n in names if not any(part.startswith(".") for part in n.parts))


def open_subject(source: str, *, with_weights: bool, search: tuple[Path, ...] = ()) -> Subject:
    """Open a local output folder, or download a Hub output (``org/name[@revision]``) at its commit.

    ``search``: more folders where moved local inputs are looked for by content hash (``verify --search``).
    Raises:
        InputError: ``source`` is a file, or neither an existing folder nor a repo id.
        InvalidRecord: a ``perta_config.json`` that does not validate.
        PertaError: not a perta-hub output (no record), a missing repo or revision, no access.
    """
    from perta_hub.io import hub_source as hub

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{source} is a file; verify takes an output folder or a Hub repo id")
        return Subject(source, path, _record(path), inputs=InputSearch.around(path, search))
    if not hub.looks_like_repo_id(source):
        raise InputError(f"{source} does not exist; pass an output folder or a Hub repo id (org/name[@revision])")
    repo_id, _ = hub.split_repo_id(source)
    patterns = SMALL_PATTERNS + (WEIGHT_PATTERNS if with_weights else [])
    folder, sha = hub.download(source, patterns)
    remote = hub_files(repo_id, sha)
    if CONFIG_NAME not in remote:
        raise CheckpointError(f"{source} is not a perta-hub output (no {CONFIG_NAME} at commit {sha})")
    return Subject(source, folder, _record(folder), repo_id, sha, remote, weights_local=with_weights,
                   inputs=InputSearch(None, search))


def _record(folder: Path) -> Record:
    """The folder's record; one that is there but does not validate raises :class:`InvalidRecord`."""
    if not (folder / CONFIG_NAME).is_file():
        return read_record(folder)  # raises: not a perta-hub output
    try:
        return read_record(folder)
    except CheckpointError as err:
        raise InvalidRecord(str(err)) from None


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


def input_record(item: Any, where: InputSearch | None = None) -> tuple[Path, Record]:
    """The folder and record of a recorded input: of a Hub input only its ``perta_config.json`` and card are
    downloaded; a local one is looked for as :func:`perta_hub.verification.locate.locate` says (by content hash
    only where its recorded place no longer holds it).

    Raises:
        PertaError: the input cannot be reached (moved, private without a token, revision gone) or holds no
            record.
    """
    from perta_hub.io import hub_source as hub

    if is_hub_input(item):
        folder, _ = hub.download(pinned_source(item), [CONFIG_NAME, "README.md"])
        return folder, read_record(folder)
    found = locate(item, opener_of(item), where, check_hash=False)
    root = Path(found.opened.root)
    close(found.opened)
    return root, read_record(root)


def opener_of(item: Any) -> Any:
    """How a recorded input is opened (to read it, and to learn its content hash): a task vector or weight map
    reference as that artifact, any other input as a model checkpoint."""
    from perta_hub.io.artifacts import load_artifact
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.records import ArtifactRef, WeightsRef

    if isinstance(item, ArtifactRef):
        return lambda s: load_artifact(s, "task_vector")
    if isinstance(item, WeightsRef):
        return lambda s: load_artifact(s, "weight_map")
    return lambda s: open_checkpoint(s)


def reason(err: BaseException) -> str:
    """A one-line reason from a perta-hub error (or any error)."""
    if isinstance(err, (PertaError, HubError)):
        return str(err)
    return f"{type(err).__name__}: {err}"
