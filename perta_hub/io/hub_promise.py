"""What the Hub promises about each file of a commit, and the checks of downloaded bytes against it.

``HfApi().repo_info(..., files_metadata=True)`` lists, for every file of a commit, its size and either the
sha256 of its content (``lfs.sha256``: files stored in LFS or Xet, weights among them) or its git blob id
(``blob_id``: the sha1 of ``b"blob <size>\\0" + content``, files stored in git: JSON, tokenizer files, the
card). A :class:`Promise` holds that for one file. Every file perta-hub downloads is checked against its
promise before it is used (docs/hub.md, "What is checked on download"):

- the HTTP answer itself (:func:`check_answer`): a range request answered with the bytes asked for (its
  ``Content-Range`` start and total), a whole-file answer as long as the Hub lists;
- the bytes (:class:`Digest`): their hash equals the promised sha256 or git blob id, computed while they are
  written (the streaming fetch) or once after a ``snapshot_download`` (:func:`check_file`, cached by size and
  modification time in :mod:`perta_hub.io.fingerprint`).

A file that fails is deleted (its HF cache blob too), so a re-run downloads it again, and the failure is one
:class:`DownloadMismatch` line naming the file, what differs and what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import HubError

CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")


class DownloadMismatch(HubError):
    """Downloaded bytes that are not what the Hub lists for the file (size, hash or header)."""


def mismatch(where: str, what: str) -> DownloadMismatch:
    """The one-line error of a file that is not what the Hub lists (``where``: ``repo@sha/file``)."""
    return DownloadMismatch(f"{where}: the downloaded bytes are not what the Hub lists ({what}); they were discarded "
                            "and nothing was published: re-run the same command; if it repeats, the server or a proxy "
                            "on the way is serving other bytes")


@dataclass(frozen=True)
class Promise:
    """What the Hub lists for one file: its size and the sha256 (LFS) or git blob id (git) of its bytes."""

    size: int | None
    sha256: str | None = None
    blob_id: str | None = None

    @classmethod
    def of_sibling(cls, sibling: Any) -> Promise:
        """From a ``RepoSibling`` of ``repo_info(..., files_metadata=True)``."""
        lfs = getattr(sibling, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha256 is None and isinstance(lfs, dict):
            sha256 = lfs.get("sha256")
        size = getattr(sibling, "size", None)
        return cls(None if size is None else int(size), _hex(sha256, 64), _hex(getattr(sibling, "blob_id", None), 40))

    @classmethod
    def of_blob_name(cls, name: str) -> Promise | None:
        """From the name of an HF cache blob: the ``ETag`` the Hub sent with the file (a sha256 for LFS files, the
        git blob id for files in git); None for another name."""
        return cls(None, _hex(name, 64), None) if len(name) == 64 else (
            cls(None, None, _hex(name, 40)) if len(name) == 40 else None)


def _hex(value: Any, length: int) -> str | None:
    value = str(value).lower() if isinstance(value, str) else None
    return value if value is not None and len(value) == length and _HEX.fullmatch(value) else None


def promises(info: Any) -> dict[str, Promise]:
    """File name -> :class:`Promise` of every file of a ``repo_info(..., files_metadata=True)`` answer."""
    return {s.rfilename: Promise.of_sibling(s) for s in getattr(info, "siblings", None) or []}


class Digest:
    """The running hash a promise is checked by: sha256 of the bytes, or git's blob sha1 when the Hub lists only
    a git blob id (a file stored in git; its size, part of what git hashes, is the promised one)."""

    def __init__(self, promise: Promise, where: str, size: int | None = None) -> None:
        """``size``: the size git hashes when the promise lists none (a cache blob name: the file's own)."""
        size = promise.size if promise.size is not None else size
        if promise.sha256 is not None:
            self.kind, self.want, self.hash = "sha256", promise.sha256, hashlib.sha256()
        elif promise.blob_id is not None and size is not None:
            self.kind, self.want = "git blob id", promise.blob_id
            self.hash = hashlib.sha1(b"blob %d\0" % size)
        else:
            raise DownloadMismatch(f"the Hub lists no sha256 or git blob id for {where}, so its download cannot be "
                                   "checked; ask the repo's owner to re-upload it")
        self.where = where

    def update(self, data: bytes | memoryview) -> None:
        self.hash.update(data)

    def check(self) -> None:
        """Raise :class:`DownloadMismatch` unless the bytes fed so far hash to the promised value."""
        got = self.hash.hexdigest()
        if got != self.want:
            raise mismatch(self.where, f"{self.kind} {got[:12]}, listed {self.want[:12]}")


def discard(path: Path) -> None:
    """Delete a downloaded file, and the HF cache blob it links to (so a re-run downloads it again)."""
    try:
        if path.is_symlink():
            Path(os.path.realpath(path)).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    except OSError:
        pass


def check_file(path: Path, promise: Promise, where: str) -> None:
    """Check a downloaded file against its promise: size, then sha256 (from the hash cache when the file is
    unchanged since it was last hashed) or git blob id. On a mismatch the file is deleted (see :func:`discard`).

    Raises:
        DownloadMismatch: the file is not what the Hub lists.
    """
    from perta_hub.io.fingerprint import file_sha256

    try:
        size = path.stat().st_size
        if promise.size is not None and size != promise.size:
            raise mismatch(where, f"{size} bytes, listed {promise.size}")
        digest = Digest(promise, where, size)
        if promise.sha256 is not None:
            got = file_sha256(path)
            if got != promise.sha256:
                raise mismatch(where, f"sha256 {got[:12]}, listed {promise.sha256[:12]}")
            return
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        digest.check()
    except DownloadMismatch:
        discard(path)
        raise


def check_answer(response: Any, where: str, start: int, size: int) -> None:
    """Check an HTTP answer to a GET of a file from byte ``start`` (a range request past 0) against the size the
    Hub lists: a ``206`` must hold the bytes from ``start`` of a file of ``size`` bytes (``Content-Range``), a
    ``200`` the whole file (``Content-Length``, when the body is not compressed).

    Raises:
        DownloadMismatch: the server answers with other bytes than those asked for.
    """
    headers = response.headers
    if response.status_code == 206:
        content_range = headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
        if not match or int(match[1]) != start or (match[3] != "*" and int(match[3]) != size):
            raise mismatch(where, f"asked for the bytes from {start} of {size}, the server sent "
                                  f"{content_range or 'a 206 without Content-Range'}")
    elif response.status_code == 200:
        length = headers.get("Content-Length")
        if length is not None and headers.get("Content-Encoding", "identity") == "identity" and (
                not length.isdigit() or int(length) != size):
            raise mismatch(where, f"the server sends {length} bytes, listed {size}")
