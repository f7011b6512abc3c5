"""What ``perta-hub run`` knows about each step of an output folder: ``<root>/.recipe/<step>.json``.

A step's state holds its key (a hash of its resolved options and its inputs' identities), whether it is
``running`` (started, not finished: a re-run with the same key resumes it) or ``finished`` (with its outputs,
their identity, its wall time and the work it did, for the time estimates), and the command line it ran. The whole
run holds ``OUT/.recipe/lock`` (``flock``), so two runs never write the same folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perta_hub.errors import OutputError

STATE_DIR = ".recipe"


def state_path(root: Path, name: str) -> Path:
    return root / STATE_DIR / f"{name}.json"


def read_state(root: Path, name: str) -> dict[str, Any] | None:
    """The state of step ``name`` under ``root``, None when it never started (or the file is unreadable)."""
    try:
        data = json.loads(state_path(root, name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(root: Path, name: str, state: dict[str, Any]) -> None:
    """Write a step's state (atomically)."""
    from perta_hub.io.atomic import write_atomic

    path = state_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state, indent=2, default=str) + "\n")


def now() -> str:
    """The local time, as the states record it."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``OUT/.recipe/lock`` for the block; another run on the same folder is refused with one line."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(out / STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{out} is being run by another `perta-hub run`; wait for it, or choose another -o") \
                from None
        yield
    finally:
        os.close(fd)


def output_identity(path: Path) -> str:
    """The identity of one output: a perta-hub folder by its record (the sha256 of every file and the run id), any
    other folder or file by the sha256 of its bytes."""
    from perta_hub.io.fingerprint import content_hash, file_sha256
    from perta_hub.io.output_folder import finished_record

    if path.is_dir():
        record = finished_record(path)
        if record is not None and record.get("files"):
            payload = json.dumps({"files": record.get("files"), "run_id": record.get("run_id")}, sort_keys=True)
            return "record:" + hashlib.sha256(payload.encode()).hexdigest()
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        return "files:" + content_hash(files)
    return "sha256:" + file_sha256(path)


def identity_of(outputs: list[Path]) -> str:
    """The identity of a step's outputs together."""
    digest = hashlib.sha256()
    for path in outputs:
        digest.update(f"{path.name}:{output_identity(path)}\n".encode())
    return digest.hexdigest()


def outputs_exist(outputs: list[Path]) -> bool:
    """Every output is there and finished (a perta-hub folder without its run marker)."""
    from perta_hub.io.output_folder import MARKER

    return all(p.exists() and not (p.is_dir() and (p / MARKER).exists()) for p in outputs)
