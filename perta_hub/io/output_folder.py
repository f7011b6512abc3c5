"""Output folders that never destroy anything: claimed before writing, resumable, finished atomically.

A folder being written holds a ``.perta-run`` marker with the run id (a hash of the inputs' identities
and every parameter). A re-run with the same id resumes; a folder holding anything else (another model,
another run) is refused rather than overwritten. The marker is replaced by ``perta_config.json``, which
keeps the run id, when the output is complete.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perta_hub._version import __version__
from perta_hub.errors import OutputError, PertaError
from perta_hub.io.atomic import write_atomic

MARKER = ".perta-run"
CONFIG_NAME = "perta_config.json"


def make_run_id(payload: dict[str, Any]) -> str:
    """A stable id for a run: sha256 of the JSON of ``payload`` (inputs' fingerprints and parameters)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def current_command() -> str:
    """The command line that is running (``perta-hub ...``), or a note that the Python API was used."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"perta-hub", "__main__.py", "cli.py"}:
        return "perta-hub " + " ".join(shlex.quote(a) for a in argv[1:])
    return "perta_hub Python API (" + " ".join(shlex.quote(a) for a in argv[:1]) + ")"


def claim_output(folder: Path, run_id: str, inputs: list[Path]) -> bool:
    """Make ``folder`` ready for this run, or refuse.

    Returns:
        True when the folder already holds this run's complete output (nothing to redo but checks).
    Raises:
        OutputError: the folder is an input, or holds another model or another run.
    """
    folder = folder.expanduser()
    resolved = folder.resolve()
    for item in inputs:
        item = item.resolve()
        if resolved == item or resolved in item.parents:
            raise OutputError(f"the output folder {folder} is (or contains) the input {item}; choose another -o")
    if folder.is_file():
        raise OutputError(f"{folder} is a file; -o needs a folder")
    if folder.is_dir() and any(folder.iterdir()):
        marker = folder / MARKER
        config = folder / CONFIG_NAME
        if marker.is_file() and marker.read_text().strip() == run_id:
            return False
        if config.is_file() and not marker.exists():
            try:
                if json.loads(config.read_text()).get("run_id") == run_id:
                    return True
            except ValueError:
                pass
        held = ", ".join(sorted(p.name for p in folder.iterdir())[:3])
        raise OutputError(
            f"{folder} already holds a different model or run ({held}...); choose another -o or remove it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / MARKER, run_id + "\n")
    return False


def finish_output(folder: Path, config: dict[str, Any], card: Any | None) -> None:
    """Write ``perta_config.json`` (with the version) and the card, then drop the run marker."""
    config = {"perta_hub_version": __version__, **config}
    if card is not None:
        write_atomic(folder / "README.md", str(card))
    write_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False, default=str) + "\n")
    (folder / MARKER).unlink(missing_ok=True)


@contextmanager
def claimed_outputs(folders: list[Path], run_ids: list[str], inputs: list[Path]) -> Iterator[None]:
    """Claim every output folder for the block; on a PertaError, remove the folders this run created.

    An interrupt or any other failure keeps them, so that the same command resumes.
    """
    fresh = [not f.exists() or not any(f.iterdir()) for f in folders]
    for folder, run_id in zip(folders, run_ids, strict=True):
        claim_output(folder, run_id, inputs)
    try:
        yield
    except PertaError:
        for folder, new in zip(folders, fresh, strict=True):
            if new:
                shutil.rmtree(folder, ignore_errors=True)
        raise


def copy_side_files(source: Path, dest: Path) -> list[str]:
    """Copy a model folder's config, generation config, tokenizer and other small files (not weights,
    indexes, cards or perta files) through temporary names. Returns the names copied."""
    skip_suffixes = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json", ".partial", ".lock")
    copied = []
    for item in sorted(source.iterdir()):
        if (not item.is_file() or item.name.startswith(".") or item.name.endswith(skip_suffixes)
                or item.name in {"README.md", CONFIG_NAME}):
            continue
        tmp = dest / f".{item.name}.partial"
        shutil.copyfile(item, tmp)
        tmp.replace(dest / item.name)
        copied.append(item.name)
    return copied
