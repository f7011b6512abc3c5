"""Input downloads of the streaming mode, written in place as they arrive so that a tensor can be merged as soon
as its own bytes are on disk (not the whole file).

Each remote input file is fetched with one HTTP GET of its resolve URL (pinned to the commit its header was
read from) and appended to its final path in the staging folder; :class:`Arrivals` counts the bytes each file
holds so far and lets a reader wait for a byte offset. A transfer broken mid-stream is resumed with a range
request (up to :data:`RETRIES` times in a row without new bytes); an interrupted run resumes from the bytes on
disk. A file is complete when it holds exactly the size the Hub lists. The requests go through
``huggingface_hub``'s public HTTP helpers (``get_session``, ``build_hf_headers``, ``hf_raise_for_status``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class _Appender:
    """Where a download writes: appends at the file's end, reports each chunk to ``arrivals``."""

    def __init__(self, path: Path, start: int, arrivals: Arrivals, check: Callable[[], None]) -> None:
        self.path, self.pos, self.arrivals, self.check = path, start, arrivals, check
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def write(self, data: bytes) -> int:
        self.check()
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.pos)
            view, self.pos = view[n:], self.pos + n
        self.arrivals.set(self.path, self.pos)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        os.ftruncate(self.fd, size)
        return size

    def close(self) -> None:
        os.close(self.fd)


def fetch_into(remote: Any, path: Path, size: int, arrivals: Arrivals, check: Callable[[], None]) -> None:
    """Download ``remote``'s file ``path.name`` to ``path`` (``size`` bytes), resuming from the bytes already
    there; every chunk written is reported to ``arrivals``. ``check`` raises to abandon the transfer."""
    from huggingface_hub import get_session

    path.parent.mkdir(parents=True, exist_ok=True)
    have = path.stat().st_size if path.is_file() else 0
    if have > size:
        path.unlink()
        have = 0
    arrivals.set(path, have)
    if have == size:
        return
    out = _Appender(path, have, arrivals, check)
    broken = _transport_error(get_session())
    tries = RETRIES
    try:
        with _hub_errors(remote.repo_id, remote.revision, "downloading"):
            while out.pos < size:
                before = out.pos
                try:
                    _get(remote.url(path.name), out, size)
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
    arrivals.set(path, size)


def _get(url: str, out: _Appender, size: int) -> None:
    """One GET of ``url`` from byte ``out.pos`` on (a range request past 0), written to ``out``."""
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    if out.pos:
        headers["Range"] = f"bytes={out.pos}-"
    timeout = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)  # the client's own default and variable
    with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
        hf_raise_for_status(response)
        if out.pos and response.status_code == 200:  # the range was ignored: the whole file comes again
            out.seek(0)
            out.truncate(0)
        for chunk in response.iter_bytes(CHUNK):
            out.write(chunk)
            if out.pos > size:
                raise OSError(f"{url} sent more than the {size} bytes the Hub lists; re-run the same command")


def _transport_error(session: Any) -> type[Exception]:
    """The transport-error base class (connection lost, timeout) of the HTTP library behind ``get_session()``:
    ``httpx`` for huggingface_hub 1, ``httpx2`` for 2."""
    library = sys.modules[type(session).__module__.split(".")[0]]
    return library.TransportError


def remove_stale_inputs(staging: Path) -> None:
    """Delete weight files left in ``staging`` by a run of other inputs (they would be taken as downloaded)."""
    for path in staging.rglob("*.safetensors"):
        path.unlink(missing_ok=True)
