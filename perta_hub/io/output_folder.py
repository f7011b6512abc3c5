"""Output folders with one writer each: claimed under a lock, resumable, finished atomically.

A folder being written holds a ``.perta-run`` marker with the run id (a hash of the inputs' identities and
every parameter) and is locked (``flock`` on the folder itself) for the whole run, so a second run on the same
``-o`` is refused with one line and never writes into the first run's files. A re-run with the same id resumes;
a folder holding anything else (another model, another run) is refused rather than overwritten. The marker is
replaced by ``perta_config.json``, which keeps the run id, when the output is complete; a complete folder is
left untouched by a re-run (no file rewritten).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, OutputError, PertaError
from perta_hub.io.atomic import write_atomic
from perta_hub.io.fingerprint import file_sha256
from perta_hub.records import CONFIG_NAME, Record, read_record
from perta_hub.runtime.invocation import (
    current_command,  # noqa: F401 (the CLI sets it; callers import it here)
    current_recipe_step,
)

MARKER = ".perta-run"


def make_run_id(payload: dict[str, Any]) -> str:
    """A stable id for a run: sha256 of the JSON of ``payload`` (inputs' fingerprints and parameters)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class FolderState(enum.Enum):
    """What an output folder holds, judged from its marker and ``perta_config.json``."""

    EMPTY = "empty"  # missing, or an empty folder
    RESUMABLE = "resumable"  # an interrupted run with the same run id
    COMPLETE = "complete"  # the finished output of the same run id
    FOREIGN = "foreign"  # anything else: another run, another model, other files


class OutputFolder:
    """One output folder and its life: check -> claim (lock, marker) -> write -> finish (record, card).

    Use as a context manager around the writing; the lock is held until the block ends. On a
    :class:`PertaError` inside the block (bad input found late) the folder is put back as it was: removed if
    this run created it, emptied if it was empty; other failures (interrupt, full disk) keep it resumable.
    """

    def __init__(self, path: str | Path, run_id: str, inputs: Sequence[Path] = ()) -> None:
        self.path = Path(path).expanduser()
        self.run_id = run_id
        self.inputs = [Path(p) for p in inputs]
        self.created = False
        self.created_parents: list[Path] = []
        self.was_empty = False
        self.complete = False
        self._fd: int | None = None

    # -- state ---------------------------------------------------------------------------------------------
    def state(self) -> FolderState:
        """What the folder holds now (no lock taken)."""
        folder = self.path
        if not folder.is_dir() or not any(not p.name.endswith(".partial") for p in folder.iterdir()):
            return FolderState.EMPTY  # temporaries (``.NAME.partial``) are never an output
        marker, config = folder / MARKER, folder / CONFIG_NAME
        if marker.is_file():
            return FolderState.RESUMABLE if marker.read_text().strip() == self.run_id else FolderState.FOREIGN
        if config.is_file():
            try:
                if read_record(folder).run_id == self.run_id:
                    return FolderState.COMPLETE
            except CheckpointError:
                pass  # a record that does not validate is no finished output of this run
        return FolderState.FOREIGN

    def check(self) -> None:
        """Refuse, before any work, a folder that is an input, a file, or holds something else."""
        resolved = self.path.resolve()
        for item in self.inputs:
            item = item.resolve()
            if resolved == item or resolved in item.parents:
                raise OutputError(f"the output folder {self.path} is (or contains) the input {item}; choose another -o")
        if self.path.is_file():
            raise OutputError(f"{self.path} is a file; -o needs a folder")
        check_writable(self.path)
        if self.state() is FolderState.FOREIGN:
            raise OutputError(self._foreign_message())

    def _foreign_message(self) -> str:
        if (self.path / MARKER).is_file():
            return (f"{self.path} holds an interrupted run of other inputs or options; re-run that command to "
                    "finish it, or choose another -o or remove the folder")
        held = ", ".join(sorted(p.name for p in self.path.iterdir())[:3])
        return f"{self.path} already holds a different model or run ({held}...); choose another -o or remove it"

    # -- claim and release ---------------------------------------------------------------------------------
    def claim(self, needed_bytes: int = 0) -> bool:
        """Create (if needed) and lock the folder, then mark it for this run.

        Args:
            needed_bytes: bytes the run will write; refused up front when the file system has less free.
        Returns:
            True when the folder already holds this run's complete output (then nothing is written).
        Raises:
            OutputError: an input, a file, another run's folder, a folder another process is writing, or a
                folder that cannot be written (read-only, no permission, too little space).
        """
        self.check()
        missing = [d for d in (self.path, *self.path.absolute().parents) if not d.exists()]
        try:
            self.path.mkdir(parents=True)
            self.created = True
            self.created_parents = missing[1:]  # e.g. the sweep folder above ``alpha-*/``, deepest first
        except FileExistsError:
            pass
        except OSError as err:
            raise OutputError(f"cannot create {self.path} ({err.strerror}); choose a writable -o") from None
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            self.created = False  # the other run owns it now
            raise OutputError(f"{self.path} is being written by another perta-hub run; wait for it to finish, "
                              "or choose another -o") from None
        try:
            return self._mark(needed_bytes)
        except OutputError:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            self.release()
            raise

    def _mark(self, needed_bytes: int) -> bool:
        """Under the lock: judge the folder again, check it can take the output, write the run marker."""
        state = self.state()
        if state is FolderState.FOREIGN:
            raise OutputError(self._foreign_message())
        if state is FolderState.COMPLETE:
            self.complete = True
            return True
        self.was_empty = state is FolderState.EMPTY
        if not os.access(self.path, os.W_OK):
            raise OutputError(f"cannot write to {self.path} (permission denied); choose a writable -o")
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            raise OutputError(f"{self.path} needs {needed_bytes / 1e9:.2f} GB but its file system has "
                              f"{free / 1e9:.2f} GB free; free space or choose another -o")
        try:
            write_atomic(self.path / MARKER, self.run_id + "\n")
        except OSError as err:
            raise OutputError(f"cannot write to {self.path} ({err.strerror}); choose a writable -o") from None
        return False

    def release(self) -> None:
        """Drop the lock (the marker stays until :meth:`finish`)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def restore(self) -> None:
        """Undo this run's writes after a failure: remove the folder if this run created it, empty it if it was
        empty; a folder that held a resumable run keeps it. Never touches a folder this run did not claim."""
        if self._fd is None or self.complete:
            return
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.created_parents:  # made by this run too; kept if anything else is in them
                with contextlib.suppress(OSError):
                    parent.rmdir()
        elif self.was_empty:
            for item in self.path.iterdir():
                shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)

    def finish(self, record: Any, card: Any | None, digests: dict[Path, str] | None = None) -> None:
        """Write the card and ``perta_config.json`` (``record`` with the sha256 of every file written, see
        :func:`output_files`, and the recipe step that wrote it under ``perta-hub run``), then drop the run marker."""
        step = current_recipe_step()
        record = dataclasses.replace(record, files=output_files(self.path, digests or {}),
                                     **({"recipe": step} if step is not None else {}))
        if card is not None:
            write_atomic(self.path / "README.md", str(card))
        write_atomic(self.path / CONFIG_NAME, record.to_json())
        (self.path / MARKER).unlink(missing_ok=True)
        self.complete = True

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> None:
        if err is not None and isinstance(err, PertaError):
            self.restore()
        self.release()


@contextmanager
def claimed(folders: Sequence[OutputFolder], needed_bytes: int = 0) -> Iterator[list[OutputFolder]]:
    """Claim every folder (all checked first, so a refusal writes nothing); yields those still to write.

    On a :class:`PertaError` each folder is restored (see :meth:`OutputFolder.restore`); every lock is
    released at the end.
    """
    for folder in folders:
        folder.check()
    with ExitStack() as stack:
        pending = []
        for folder in folders:
            stack.enter_context(folder)
            if not folder.claim(needed_bytes):
                pending.append(folder)
        yield pending


def output_files(folder: Path, digests: dict[Path, str]) -> dict[str, str]:
    """sha256 of every file of a written folder but its card and record, by name in name order (recursing into
    folders such as a LoRA ``adapter/``): from ``digests`` (shards hashed while written) or the hash cache. A
    shard of ``digests`` no longer in the folder (uploaded by a streaming run, then deleted) is listed too."""
    gone = [path for path in digests if path.parent == folder and not path.exists()]
    return {str(path.relative_to(folder)): digests.get(path) or file_sha256(path)
            for path in sorted([*(p for p in folder.rglob("*") if p.is_file()), *gone])
            if not any(part.startswith(".") for part in path.relative_to(folder).parts)
            and path.relative_to(folder).as_posix() not in ("README.md", CONFIG_NAME)}


def check_writable(path: Path, what: str = "-o") -> None:
    """Refuse a ``path`` whose nearest existing folder cannot be written (read-only file system, no permission)."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK):  # also false for root on a read-only file system
        raise OutputError(f"cannot write to {existing} (read-only or no permission); choose a writable {what}")


def refuse_unusable(path: str | Path, what: str = "-o") -> None:
    """Refuse, before any work and before the run id is known, a file, a folder that cannot be written, or a
    folder that holds files but no perta-hub output (neither a run marker nor ``perta_config.json``)."""
    path = Path(path).expanduser()
    if path.is_file():
        raise OutputError(f"{path} is a file; {what} needs a folder")
    check_writable(path, what)
    if (path.is_dir() and any(not p.name.endswith(".partial") for p in path.iterdir())
            and not ((path / MARKER).exists() or (path / CONFIG_NAME).exists())):
        held = ", ".join(sorted(p.name for p in path.iterdir())[:3])
        raise OutputError(f"{path} already holds other files ({held}...); choose another {what} or remove it")


def finished_record(path: str | Path) -> Record | None:
    """The record of a finished perta-hub output in ``path`` (no run marker), else None."""
    path = Path(path).expanduser()
    if (path / MARKER).exists() or not (path / CONFIG_NAME).is_file():
        return None
    return read_record(path)


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
