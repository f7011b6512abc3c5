"""Content hashes of local files, cached by (path, size, mtime) so a file is hashed once.

The cache lives in ``$PERTA_HUB_CACHE`` (default ``~/.cache/perta-hub``) as ``file-hashes.json``. Files under
:data:`CACHED_FROM_BYTES` are hashed as they are, neither looked up nor stored: hashing one takes well under a
millisecond, while the cache is one JSON file, parsed whole on its first lookup in a process and written whole on
each store (every ``apply`` stored its output's ``config.json`` and index, twice rewriting a cache that only grew).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


def _cache_path() -> Path:
    root = os.environ.get("PERTA_HUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "perta-hub")
    return Path(root) / "file-hashes.json"


#: files of at least this many bytes have their hash cached; smaller ones are hashed each time
CACHED_FROM_BYTES = 1 << 20


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def quick_fingerprint(files: list[Path]) -> str:
    """sha256 of the files' names, sizes and modification times (no content read): changes on rewrite."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(_stat_key(path).encode())
    return digest.hexdigest()


#: the cache as last read or written by this process: (cache file, its (size, mtime_ns) then, its entries)
_loaded: tuple[Path, tuple[int, int], dict[str, str]] | None = None
_lock = threading.Lock()


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_cache(cache_file: Path) -> dict[str, str]:
    """The cache's entries, parsed again only when the file changed since this process last read or wrote it
    (a command looks up every input and output file: one parse instead of one per file). Call under ``_lock``."""
    global _loaded
    state = _file_state(cache_file)
    if _loaded is not None and _loaded[0] == cache_file and _loaded[1] == state:
        return _loaded[2]
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    _loaded = (cache_file, state, cache) if state is not None else None
    return cache


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes, from the cache when the file is unchanged (a small file: hashed at once)."""
    if path.stat().st_size < CACHED_FROM_BYTES:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    key = _stat_key(path)
    with _lock:
        value = _read_cache(_cache_path()).get(key)
    if value is not None:
        return str(value)
    with path.open("rb") as fh:
        value = hashlib.file_digest(fh, "sha256").hexdigest()
    remember_sha256(path, value)
    return value


def remember_sha256(path: Path, value: str) -> None:
    """Store ``value`` as the sha256 of ``path`` as it is now (a writer that hashed the bytes it wrote); a file
    under :data:`CACHED_FROM_BYTES` is not stored (:func:`file_sha256` hashes it at once)."""
    global _loaded
    if path.stat().st_size < CACHED_FROM_BYTES:
        return
    cache_file = _cache_path()
    key = _stat_key(path)
    with _lock:
        cache = dict(_read_cache(cache_file))  # entries other processes wrote since are kept
        cache[key] = value
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            return  # a read-only home only costs re-hashing next time
        state = _file_state(cache_file)
        _loaded = (cache_file, state, cache) if state is not None else None


def content_hash(files: list[Path]) -> str:
    """sha256 over (file name, sha256 of its bytes) for each file, in order: a folder's content identity."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()
