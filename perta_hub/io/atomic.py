"""Atomic file helpers: a file is either its old self or wholly new, never half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write a small file (text, or bytes as given) through a temporary name and a rename.

    On any failure the temporary file is removed and ``path`` keeps its old content.
    """
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with tmp.open("wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
