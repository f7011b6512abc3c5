"""Input downloads of a Hub source (:mod:`perta_hub.hub.source`), written in place as they arrive so that a
tensor can be merged as soon as its own bytes are on disk (not the whole file).

Each remote input file is fetched with one HTTP GET of its resolve URL (pinned to the commit its header was
read from) and appended to its final path in the staging folder; :class:`Arrivals` counts the bytes each file
holds so far and lets a reader wait for a byte offset. A transfer broken mid-stream is resumed with a range
request (up to :data:`RETRIES` times in a row without new bytes); an interrupted run resumes from the bytes on
disk. A file is complete when it holds exactly the size the Hub lists.

Every file is checked against what the Hub lists for it (:mod:`perta_hub.io.hub_promise`) as it arrives: each
answer's range and length; its first bytes against the header read by range when the file was opened (so no
tensor is read from a file whose header is not the one it was planned from); and its sha256 (git blob id for a
file stored in git), hashed as the bytes are appended (a resumed download re-hashes the prefix on disk first),
so a large file is not read a second time. A file that fails is deleted and the download raises one
:class:`~perta_hub.io.hub_promise.DownloadMismatch` line; no output shard is renamed into place (let alone
uploaded) before every input file it was read from has passed (:meth:`perta_hub.hub.source.HubSource.settle`).
The requests go through ``huggingface_hub``'s public HTTP helpers (``get_session``, ``build_hf_headers``,
``hf_raise_for_status``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perta_hub.io.hub_promise import CHUNK as READ_CHUNK
from perta_hub.io.hub_promise import Digest, DownloadMismatch, check_answer, mismatch
from perta_hub.io.hub_source import _hub_errors

RETRIES = 5  # attempts in a row that bring no new bytes before a download fails
CHUNK = 1 << 20


class Arrivals:
    """Bytes on disk of each input file being fetched (a prefix of the file), with waiting on an offset."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.have: dict[Path, int] = {}

    def set(self, path: Path, nbytes: int) -> None:
        with self.cond:
            if nbytes > self.have.get(path, -1):
                self.have[path] = nbytes
                self.cond.notify_all()

    def wait(self, path: Path, end: int, check: Callable[[], None]) -> None:
        """Block until ``path`` holds at least ``end`` bytes; ``check`` raises when the run is failing."""
        with self.cond:
            while self.have.get(path, -1) < end:
                check()
                self.cond.wait(0.5)


class _Verifier:
    """Checks the bytes of one download as they arrive, in order: the first ones against the header read by range
    (``head``), all of them against the sha256 or git blob id the Hub lists (:class:`Digest`)."""

    def __init__(self, remote: Any, name: str) -> None:
        self.where = remote.where(name)
        self.promise = remote.promise(name)
        self.head: bytes = remote.headers.get(name, b"")
        self.restart()

    def restart(self) -> None:
        self.digest = Digest(self.promise, self.where)
        self.pos = 0

    def feed(self, data: bytes | memoryview) -> None:
        if self.pos < len(self.head):
            n = min(len(data), len(self.head) - self.pos)
            got, want = bytes(data[:n]), self.head[self.pos:self.pos + n]
            if got != want:
                at = self.pos + next(i for i in range(n) if got[i] != want[i])
                raise mismatch(self.where, f"byte {at} differs from the header read by range when it was opened")
        self.digest.update(data)
        self.pos += len(data)

    def feed_file(self, path: Path, nbytes: int) -> None:
        """Feed the first ``nbytes`` already on disk (a resumed download)."""
        if not nbytes:
            return
        with path.open("rb") as fh:
            while self.pos < nbytes:
                chunk = fh.read(min(READ_CHUNK, nbytes - self.pos))
                if not chunk:
                    raise OSError(f"{path} shrank while it was read; re-run the same command")
                self.feed(chunk)


class _Appender:
    """Where a download writes: appends at the file's end, checks each chunk (:class:`_Verifier`) before writing
    it, reports each chunk to ``arrivals``."""

    def __init__(self, path: Path, start: int, arrivals: Arrivals, check: Callable[[], None],
                 verifier: _Verifier) -> None:
        self.path, self.pos, self.arrivals, self.check, self.verifier = path, start, arrivals, check, verifier
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def write(self, data: bytes) -> int:
        self.check()
        self.verifier.feed(data)
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.pos)
            view, self.pos = view[n:], self.pos + n
        self.arrivals.set(self.path, self.pos)
        return len(data)

    def restart(self) -> None:
        """Start the file again from byte 0 (a server that answered a range request with the whole file)."""
        os.ftruncate(self.fd, 0)
        self.pos = 0
        self.verifier.restart()

    def close(self) -> None:
        os.close(self.fd)


def fetch_into(remote: Any, path: Path, size: int, arrivals: Arrivals, check: Callable[[], None]) -> None:
    """Download ``remote``'s file ``path.name`` to ``path`` (``size`` bytes), resuming from the bytes already
    there; every chunk written is reported to ``arrivals``. ``check`` raises to abandon the transfer.

    Raises:
        DownloadMismatch: the bytes are not what the Hub lists (header, size or hash); ``path`` is deleted.
    """
    from huggingface_hub import get_session

    path.parent.mkdir(parents=True, exist_ok=True)
    verifier = _Verifier(remote, path.name)
    have = path.stat().st_size if path.is_file() else 0
    if have > size:
        path.unlink()
        have = 0
    try:
        verifier.feed_file(path, have)  # a resumed download: the bytes already there are checked too
        arrivals.set(path, have)
        if have < size:
            _download(remote, path, size, have, arrivals, check, verifier, get_session())
        verifier.digest.check()
    except DownloadMismatch:
        path.unlink(missing_ok=True)
        raise
    arrivals.set(path, size)


def _download(remote: Any, path: Path, size: int, have: int, arrivals: Arrivals, check: Callable[[], None],
              verifier: _Verifier, session: Any) -> None:
    """GET the rest of ``path`` from byte ``have`` on, resuming a broken transfer (see the module docstring)."""
    out = _Appender(path, have, arrivals, check, verifier)
    broken = _transport_error(session)
    tries = RETRIES
    try:
        with _hub_errors(remote.repo_id, remote.revision, "downloading"):
            while out.pos < size:
                before = out.pos
                try:
                    _get(remote.url(path.name), out, size, verifier.where)
                except broken:
                    if out.pos == before and tries <= 1:
                        raise
                tries = RETRIES if out.pos > before else tries - 1
                if out.pos < size:
                    if tries <= 0:
                        raise OSError(f"the download of {path.name} stops at byte {out.pos} of {size}; re-run the "
                                      "same command")
                    check()
                    time.sleep(1)
    finally:
        out.close()


def _get(url: str, out: _Appender, size: int, where: str) -> None:
    """One GET of ``url`` from byte ``out.pos`` on (a range request past 0), written to ``out``; the answer's range
    and length are checked against the size the Hub lists (:func:`check_answer`) before a byte is written."""
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers

    headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
    if out.pos:
        headers["Range"] = f"bytes={out.pos}-"
    timeout = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)  # the client's own default and variable
    with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
        hf_raise_for_status(response)
        check_answer(response, where, out.pos, size)
        if out.pos and response.status_code == 200:  # the range was ignored: the whole file comes again
            out.restart()
        for chunk in response.iter_bytes(CHUNK):
            if out.pos + len(chunk) > size:
                raise mismatch(where, f"the server sends more than the {size} bytes listed")
            out.write(chunk)


def _transport_error(session: Any) -> type[Exception]:
    """The transport-error base class (connection lost, timeout) of the HTTP library behind ``get_session()``:
    ``httpx`` for huggingface_hub 1, ``httpx2`` for 2."""
    library = sys.modules[type(session).__module__.split(".")[0]]
    return library.TransportError
