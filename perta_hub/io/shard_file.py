"""One output file written front to back, with direct I/O where the file system takes it.

Writing through the page cache cost the kernel up to 4.5 s of CPU time per 1.7 GB on the machine
measured (copying into freshly allocated cache pages), while ``O_DIRECT`` writes of the same bytes
took 0.2 s of kernel time and 0.5-0.7 s in all (``python benchmarks/bench_apply.py`` prints both
write floors). So the data is gathered in
a page-aligned staging buffer and written with ``O_DIRECT`` in whole blocks; the padded last block is
cut back with ``ftruncate``. Where ``O_DIRECT`` is missing or refused (tmpfs, macOS, some network file
systems) or ``PERTA_HUB_DIRECT_IO=0`` is set, the file is written through the page cache instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

BLOCK = 4096  # alignment of direct writes: offsets, lengths and buffer addresses
STAGING_BYTES = 4 << 20
HASH_BESIDE_BYTES = 1 << 16  # smaller pieces are hashed in the writing thread (a thread hand-off costs more)

_hasher: ThreadPoolExecutor | None = None
_hasher_lock = threading.Lock()


def _hash_thread() -> ThreadPoolExecutor:
    """The thread that hashes written bytes while the writer's ``pwrite`` runs (made on first use)."""
    global _hasher
    with _hasher_lock:
        if _hasher is None:
            _hasher = ThreadPoolExecutor(1, thread_name_prefix="perta-sha256")
        return _hasher


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes-like) at ``offset``, however many calls it takes."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def direct_io_enabled() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get("PERTA_HUB_DIRECT_IO", "1") != "0"


class ShardFile:
    """A new file of ``len(header) + data_size`` bytes: the header, then data appended in order."""

    def __init__(self, path: Path, header: bytes, data_size: int, *, digest: bool = False) -> None:
        self.path = path
        #: sha256 of the bytes written (``digest=True``): the file's hash once :meth:`finish` returns, without
        #: reading it back. Each block is hashed in a second thread while ``pwrite`` writes it (both only read
        #: it; hashlib and the write release the GIL), so hashing costs CPU time but little wall time.
        self.sha256 = hashlib.sha256() if digest else None
        self.size = len(header) + data_size
        self.pos = 0  # bytes accepted so far (file offset of the next byte)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.staging: mmap.mmap | None = None
        if direct_io_enabled():
            try:
                direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                pass  # the file system refuses direct I/O: write through the page cache
            else:
                os.close(self.fd)
                self.fd = direct_fd
                self.staging = mmap.mmap(-1, STAGING_BYTES)  # page-aligned
        self.staged = 0  # bytes waiting in the staging buffer; they start at file offset pos - staged
        self._append(header)

    def write_at(self, offset: int, data: Any) -> None:
        """Append ``data``, which must belong at file offset ``offset`` (tensors come in file order)."""
        if offset != self.pos:
            raise RuntimeError(f"{self.path}: write at byte {offset}, expected {self.pos}")
        self._append(data)

    def _hash_beside(self, view: Any) -> Future | None:
        """Start hashing ``view`` (the next bytes of the file, in order) while the caller writes it; the caller
        waits for the returned future before ``view`` may change. Small pieces are hashed at once."""
        if self.sha256 is None or not len(view):
            return None
        if len(view) < HASH_BESIDE_BYTES:
            self.sha256.update(view)
            return None
        return _hash_thread().submit(self.sha256.update, view)

    def _write_hashed(self, view: Any, offset: int) -> None:
        """``pwrite`` ``view`` at ``offset`` while it is hashed (through the page cache)."""
        hashing = self._hash_beside(view)
        try:
            _pwrite_all(self.fd, view, offset)
        finally:
            if hashing is not None:
                hashing.result()

    def _append(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        if self.staging is None:
            self._write_hashed(view, self.pos)
            self.pos += len(view)
            return
        while view:
            n = min(len(view), STAGING_BYTES - self.staged)
            self.staging[self.staged:self.staged + n] = view[:n]
            self.staged += n
            self.pos += n
            view = view[n:]
            if self.staged == STAGING_BYTES:
                self._flush_staging()

    def _flush_staging(self) -> None:
        assert self.staging is not None
        start = self.pos - self.staged
        length = self.staged + (-self.staged % BLOCK)  # whole blocks; the padding is cut off at the end
        hashing = self._hash_beside(memoryview(self.staging)[: self.staged])  # the staged bytes, not the padding
        try:
            _pwrite_all(self.fd, memoryview(self.staging)[:length], start)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            # direct I/O refused (or cut short at a file-size limit): the rest goes through the page cache
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_WRONLY)
            _pwrite_all(self.fd, memoryview(self.staging)[: self.staged], start)
            self.staging = None
        finally:
            if hashing is not None:
                hashing.result()  # the buffer is refilled only once it is hashed
        self.staged = 0

    def finish(self) -> None:
        """Write what is staged and cut the file to its exact size (call once every byte is appended)."""
        if self.pos != self.size:
            raise RuntimeError(f"{self.path}: {self.pos} bytes written, {self.size} planned")
        if self.staging is not None and self.staged:
            self._flush_staging()
        os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.staging is not None:
            with contextlib.suppress(BufferError):  # a failed write's traceback holds a view; freed with it
                self.staging.close()
            self.staging = None
