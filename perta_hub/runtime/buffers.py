"""Host memory for streaming many large tensors through one process.

Profiling a CPU merge (``perf record`` on benchmarks/bench_apply.py) showed the kernel zero-filling
fresh result buffers page by page as the largest single cost, more than the arithmetic. The streaming
commands therefore reuse result buffers (:class:`BufferPool`), and the CLI tunes the allocators once per
process (:func:`tune_allocator`).
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: set once tune_allocator has run in this process
_TUNED = False
#: set once skip_exit_collection has run in this process
_EXIT_FROZEN = False


def tune_allocator() -> None:
    """Allocator settings for streaming many large tensors, for the whole process (once; later calls do
    nothing). Process-wide, so only the CLI turns it on (for the process it owns); library calls leave the
    host process's allocators alone.

    - torch's CPU allocator puts buffers of 2 MiB and more on transparent huge pages
      (``THP_MEM_ALLOC_ENABLE``, read by torch at its first allocation of that size; a value the user set
      wins): a 512th of the page faults of 4 KiB pages.
    - glibc serves buffers of 4 MiB and more with mmap, so freed tensors return to the OS. Without it
      glibc raises its mmap threshold after the first large free (up to 32 MiB) and keeps freed tensors
      in the heap: peak RSS of the 0.85B-parameter merge of bench_apply.py went from 0.95 GB to 0.83 GB.
      A no-op where glibc is absent.
    """
    import ctypes
    import ctypes.util

    global _TUNED
    if _TUNED:
        return
    _TUNED = True
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD; the merger's 1 MiB chunk buffers stay in the heap
    except (OSError, AttributeError):
        pass


def skip_exit_collection() -> None:
    """Spare the interpreter's last garbage collection at exit, for the whole process (once; later calls do
    nothing): an exit handler moves every object left into the permanent generation (``gc.freeze``), which no
    collection walks. Process-wide, so only the CLI turns it on, as :func:`tune_allocator`.

    That collection walks every object torch and the other imports made, to free memory the process is about to
    give back anyway: about 0.25 s of CPU at the end of each command (``perf record`` of ``apply`` on the
    0.85B-parameter model of bench_apply.py). Exit handlers still run (logging flushes its handlers) and
    objects not in reference cycles are still freed as before; perta-hub closes what it writes explicitly.
    """
    global _EXIT_FROZEN
    if _EXIT_FROZEN:
        return
    _EXIT_FROZEN = True
    atexit.register(gc.freeze)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (the stream makes no cycles; each full collection walks
    every object torch created at import, about 5% of a CPU merge's time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class BufferPool:
    """CPU buffers handed back after use and handed out again for results of the same byte size.

    Thread-safe: the compute thread takes, the writer thread gives back. At most ``max_free_bytes``
    are kept unused; beyond that a returned buffer is freed.
    """

    def __init__(self, max_free_bytes: int) -> None:
        self.max_free_bytes = max_free_bytes
        self._free: dict[int, list[Any]] = {}
        self._free_bytes = 0
        self._lock = threading.Lock()

    @property
    def free_bytes(self) -> int:
        """Bytes of buffers kept for reuse."""
        return self._free_bytes

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialised CPU tensor of ``shape`` and ``dtype``, reused when one of that size is free."""
        import torch

        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            free = self._free.get(nbytes)
            buffer = free.pop() if free else None
            if buffer is not None:
                self._free_bytes -= nbytes
        if buffer is None:
            buffer = torch.empty(nbytes, dtype=torch.uint8)
        return buffer.view(dtype).reshape(shape)

    def give(self, tensor: Any) -> None:
        """Return a tensor from :meth:`empty` once nothing reads it any more."""
        import torch

        buffer = tensor.reshape(-1).view(torch.uint8)
        nbytes = buffer.numel()
        with self._lock:
            if nbytes and self._free_bytes + nbytes <= self.max_free_bytes:
                self._free.setdefault(nbytes, []).append(buffer)
                self._free_bytes += nbytes
