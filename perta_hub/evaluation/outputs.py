"""The files ``perta-hub evaluate`` writes: results JSON, the retain model's logs, the plot.

Each is checked before any model runs (an existing file is refused unless ``overwrite``) and
written through :func:`perta_hub.io.atomic.write_atomic`, so a file is never half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perta_hub.errors import OutputError
from perta_hub.io.atomic import write_atomic


def check_new_file(path: str | Path, what: str, *, overwrite: bool = False) -> Path:
    """Refuse ``path`` unless it is free (or ``overwrite`` and a file); returns it with ``~`` expanded.

    Args:
        path: the file to be written.
        what: how the message names it (``-o``, ``--plot``, ...).
        overwrite: replace an existing file (never a folder).
    Raises:
        OutputError: one line naming the file and what to do.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"{what} {p} is a folder; pass a file path")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputError(f"{what} {p} already exists; pass --overwrite to replace it or choose another path")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {p}: {parent} is not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {p}: no permission to write in {parent}; choose another path")
    return p


def check_outputs(outputs: Iterable[tuple[str, str | Path | None]], *, inputs: Iterable[str | Path | None] = (),
                  overwrite: bool = False) -> None:
    """:func:`check_new_file` for each ``(what, path)`` given; two outputs on one file, or an output on
    an input file, are refused even with ``overwrite``."""
    seen: dict[Path, str] = {}
    read = {Path(i).expanduser().resolve(): str(i) for i in inputs if i is not None}
    for what, path in outputs:
        if path is None:
            continue
        key = Path(path).expanduser().resolve()
        if key in read:
            raise OutputError(f"{what} {path} is also an input ({read[key]}); choose another path")
        if key in seen:
            raise OutputError(f"{seen[key]} and {what} both name {path}; choose two paths")
        seen[key] = what
        check_new_file(path, what, overwrite=overwrite)


def save_results(results: Any, path: str | Path) -> Path:
    """Write results as indented JSON (creating the parent folder), atomically; returns the path."""
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=2, allow_nan=False) + "\n")
    return out


def retain_logs_path(output: str | Path | None, forget_split: str) -> Path:
    """Where ``--retain-model`` saves its logs: beside ``-o`` (``<stem>.retain.json``), else the cwd."""
    if output is not None:
        out = Path(output).expanduser()
        return out.with_name(f"{out.stem}.retain.json")
    return Path(f"tofu_{forget_split}_retain_logs.json")
