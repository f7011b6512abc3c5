"""Content hashes of local files, cached by (path, size, mtime) so a file is hashed once.

The cache lives in ``$PERTA_HUB_CACHE`` (default ``~/.cache/perta-hub``) as ``file-hashes.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def _cache_path() -> Path:
    root = os.environ.get("PERTA_HUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "perta-hub")
    return Path(root) / "file-hashes.json"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def quick_fingerprint(files: list[Path]) -> str:
    """sha256 of the files' names, sizes and modification times (no content read): changes on rewrite."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(_stat_key(path).encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes, from the cache when the file is unchanged."""
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    key = _stat_key(path)
    if key in cache:
        return str(cache[key])
    with path.open("rb") as fh:
        value = hashlib.file_digest(fh, "sha256").hexdigest()
    remember_sha256(path, value)
    return value


def remember_sha256(path: Path, value: str) -> None:
    """Store ``value`` as the sha256 of ``path`` as it is now (a writer that hashed the bytes it wrote)."""
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    cache[_stat_key(path)] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs re-hashing next time


def content_hash(files: list[Path]) -> str:
    """sha256 over (file name, sha256 of its bytes) for each file, in order: a folder's content identity."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()
