"""Reading safetensors checkpoints and artifacts, one tensor at a time.

A source is a local folder, a single ``.safetensors`` file, or a Hub repo id (``org/name`` or
``org/name@revision``, downloaded with only the files needed). Headers are parsed up front (names,
dtypes, shapes, byte offsets, truncation check) without reading any weight; each tensor is then mapped on
its own (a private copy-on-write ``mmap`` of its byte range), so reading costs no copy out of the page
cache and no zero-filled buffer, and its pages leave the process with the tensor.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import weakref
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from perta_hub.errors import CheckpointError, InputError
from perta_hub.io.fingerprint import content_hash, quick_fingerprint
from perta_hub.io.pickle_import import remove_scratch
from perta_hub.io.safetensors_format import TensorEntry, _entries

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Everything a model folder needs besides its weights (the Hub download asks for these and the weights).
MODEL_FILE_PATTERNS = [
    "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "README.md",
]


class TensorIndex:
    """Names and shapes of a set of tensors, read from ``entries`` (name -> an entry with a ``shape``, in order):
    the metadata side shared by :class:`Checkpoint` and the formed views over it (LoRA factors)."""

    entries: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape


class Checkpoint(TensorIndex):
    """A set of safetensors files read lazily, tensor by tensor.

    Attributes:
        root: local folder holding the files.
        source: what the user passed (folder path or repo id).
        prefix: file prefix (``model`` for models, ``task_vector`` etc. for artifacts).
        entries: name -> TensorEntry, in shard order (file order, then position in file).
    """

    def __init__(self, root: Path, source: str, prefix: str, files: list[Path],
                 entries: dict[str, TensorEntry], hub_sha: str | None) -> None:
        self.root = root
        self.source = source
        self.prefix = prefix
        self.files = files
        self.entries = entries
        self._hub_sha = hub_sha
        self._handles: dict[Path, int] = {}
        self.pickle_files: list[Path] = []  # the .bin files a converted copy was made from

    # -- metadata ---------------------------------------------------------------------------------
    def dtype(self, name: str) -> Any:
        import torch

        return getattr(torch, self.entries[name].torch_dtype_name)

    @property
    def num_parameters(self) -> int:
        total = 0
        for entry in self.entries.values():
            n = 1
            for dim in entry.shape:
                n *= dim
            total += n
        return total

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    @cached_property
    def config(self) -> dict[str, Any] | None:
        """The folder's ``config.json`` (None when absent)."""
        path = self.root / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def is_hub(self) -> bool:
        return self._hub_sha is not None

    @cached_property
    def revision(self) -> str:
        """The Hub commit sha, or ``sha256:<hex>`` of the local files' content (cached by size and mtime)."""
        return self._hub_sha or "sha256:" + content_hash((self.pickle_files or self.files) + self._side_files())

    @property
    def repo_id(self) -> str | None:
        """The Hub repo id (without ``@revision``) for Hub sources, else None."""
        return self.source.partition("@")[0] if self.is_hub else None

    @property
    def identity(self) -> str:
        """Cheap identity for run ids: the Hub sha, the local files' names, sizes and mtimes, or for a converted
        pickle checkpoint the content hash of the pickle files (its temporary copy is new each run)."""
        if self.pickle_files:
            return "pickle:" + content_hash(self.pickle_files)
        return self._hub_sha or "local:" + quick_fingerprint(self.files)

    def provenance(self) -> dict[str, Any]:
        """``{"source", "repo_id", "revision"}`` (and a local input's ``path``) as recorded in ``perta_config.json``."""
        return {"source": self.source, "repo_id": self.repo_id, "revision": self.revision,
                **recorded_path(self.source, self.is_hub)}

    def _side_files(self) -> list[Path]:
        return [p for p in (self.root / "config.json",) if p.is_file()]

    # -- reading ----------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """Read one tensor (``torch.Tensor`` in its stored dtype and shape, on CPU).

        The tensor is a private copy-on-write map of the file's bytes (``mmap.ACCESS_COPY``): no copy and
        no zeroed buffer, the pages of the page cache are used in place, writing to the tensor never
        touches the file, and the map goes away with the tensor. Where mapping fails it falls back to
        ``pread`` into a buffer of its own.
        """
        import torch

        entry = self.entries[name]
        fd = self._handles.get(entry.file)
        if fd is None:
            self.close()  # one open file per checkpoint at a time
            fd = self._handles[entry.file] = os.open(entry.file, os.O_RDONLY)
        dtype = getattr(torch, entry.torch_dtype_name)
        if entry.nbytes == 0:
            return torch.empty(entry.shape, dtype=dtype)
        if os.fstat(fd).st_size < entry.offset + entry.nbytes:
            raise CheckpointError(f"{entry.file} ended before tensor {name}; re-download or re-create it")
        start = entry.offset - entry.offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(fd, entry.offset + entry.nbytes - start, access=mmap.ACCESS_COPY, offset=start)
            raw = torch.frombuffer(mapped, dtype=torch.uint8, count=entry.nbytes, offset=entry.offset - start)
            return raw.view(dtype).reshape(entry.shape)
        except (OSError, ValueError, RuntimeError):  # no mmap on this file system, or unaligned data
            return self._pread(fd, entry).view(dtype).reshape(entry.shape)

    @staticmethod
    def _pread(fd: int, entry: TensorEntry) -> Any:
        import torch

        buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
        view, offset = memoryview(buffer.numpy()), entry.offset
        while view:
            n = os.preadv(fd, [view], offset)
            if n == 0:
                raise CheckpointError(f"{entry.file} ended while reading tensor {entry.name}; "
                                      "re-download or re-create it")
            view, offset = view[n:], offset + n
        return buffer

    def close(self) -> None:
        """Close the open file."""
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()

    def __del__(self) -> None:
        self.close()

    def iter_tensors(self) -> Iterator[tuple[str, Any]]:
        for name in self.entries:
            yield name, self.get(name)
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({self.source!r}, {len(self.entries)} tensors, {len(self.files)} files)"


def recorded_path(source: str | Path, is_hub: bool) -> dict[str, str]:
    """``{"path": <resolved absolute path>}`` of a local input, recorded beside its ``source`` so that ``verify``
    finds it from any directory; ``{}`` for a Hub input (pinned by repo id and commit)."""
    return {} if is_hub else {"path": str(Path(source).expanduser().resolve())}


def find_weight_files(folder: Path, prefix: str | None = None, *, hub: bool = False) -> tuple[str, list[Path]]:
    """Locate the safetensors files of ``folder`` (through ``<prefix>.safetensors.index.json`` when sharded).

    ``hub``: ``folder`` is a Hub snapshot (its files are symlinks into the cache's blob store, so only
    the names an index lists are judged, not where they resolve).
    Returns:
        (prefix, files in shard order).
    Raises:
        CheckpointError: no safetensors weights (a pickle checkpoint gets its own message), or an index
        naming a file outside ``folder``.
    """
    prefixes = [prefix] if prefix else ["model"] + sorted(
        p.name[: -len(".safetensors.index.json")] for p in folder.glob("*.safetensors.index.json")
    ) + sorted(p.stem for p in folder.glob("*.safetensors") if "-of-" not in p.stem)
    for pre in prefixes:
        index = folder / f"{pre}.safetensors.index.json"
        if index.is_file():
            files = index_files(index, hub=hub)
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{folder} is incomplete: {missing[0].name} named in {index.name} is missing; "
                                      "re-download it")
            return pre, files
        single = folder / f"{pre}.safetensors"
        if single.is_file():
            return pre, [single]
    raise CheckpointError(_no_weights_message(folder))


def index_files(index: Path, *, hub: bool = False) -> list[Path]:
    """The files an index (``*.index.json``, HF schema) names, in first-named order, each checked to be a
    plain file name of the index's own folder (see :func:`check_file_name`).

    Raises:
        CheckpointError: not an index (``weight_map`` a map of tensor name -> file name), or a name that
        leads out of the folder.
    """
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index} is not a valid safetensors index ({err}); re-download or re-create it") from err
    folder = index.parent
    return [check_file_name(folder, name, index, hub=hub) for name in dict.fromkeys(weight_map.values())]


def pickle_files(folder: Path) -> list[Path]:
    """The ``.bin`` files of a pickle checkpoint: those its index names (checked), else every ``*.bin``."""
    index = folder / "pytorch_model.bin.index.json"
    return index_files(index) if index.is_file() else sorted(folder.glob("*.bin"))


def check_file_name(folder: Path, name: str, named_in: Path, *, hub: bool = False) -> Path:
    """``folder / name``, where ``name`` (read from the file ``named_in``) must be a plain file name.

    Refused: an empty name, an absolute path, ``.``/``..``, any path separator, a NUL byte; for a local
    folder also a name that resolves (through symlinks) outside ``folder``, except a file of a Hub cache
    snapshot resolving into its repo's blob store. Hub snapshots (``hub``) are judged by the name only.
    """
    if (not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name) or (len(name) > 1 and name[1] == ":")):
        raise CheckpointError(f"{named_in} names {name!r}, which is not a plain file name in {folder}; "
                              "refusing to read it (re-download or re-create the folder)")
    path = folder / name
    if not hub:
        resolved = outside_link(folder, path)
        if resolved is not None:
            raise CheckpointError(f"{named_in} names {name!r}, a link to {resolved} outside {folder}; refusing to "
                                  "read it (copy the file into the folder if you trust it)")
    return path


_CACHE_REPO = re.compile(r"(?:models|datasets|spaces)--[^/]+")
_BLOB_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def snapshot_blobs(folder: Path) -> Path | None:
    """The blob store of the Hugging Face cache repo whose snapshot ``folder`` is, or None.

    ``folder`` (resolved) must be ``<cache>/<models|datasets|spaces>--<org>--<name>/snapshots/<revision>`` and that
    repo's ``blobs/`` a real folder (not a link) beside ``snapshots/``.
    """
    resolved = folder.resolve()
    snapshots, repo = resolved.parent, resolved.parent.parent
    if snapshots.name != "snapshots" or not _CACHE_REPO.fullmatch(repo.name):
        return None
    blobs = repo / "blobs"
    return blobs if blobs.is_dir() and not blobs.is_symlink() else None


def outside_link(folder: Path, path: Path) -> Path | None:
    """Where ``path`` (a file of the local ``folder``) really is, when that is outside ``folder``; else None.

    A path is judged by where it resolves (every link along it followed), never by folder names: inside
    ``folder`` is fine, and so is a blob of the Hub cache repo ``folder`` is a snapshot of (a file directly in
    that repo's own ``blobs/``, named by its sha1 or sha256, see :func:`snapshot_blobs`); anything else, a
    blob of another cache repo included, is outside.
    """
    resolved, inside = path.resolve(), folder.resolve()
    if resolved.is_relative_to(inside):
        return None
    blobs = snapshot_blobs(folder)
    if blobs is not None and resolved.parent == blobs and _BLOB_NAME.fullmatch(resolved.name):
        return None
    return resolved


def _no_weights_message(folder: Path) -> str:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        return (f"{folder} holds pickle weights ({pickles[0]}), not safetensors: pickle files can run code "
                "when loaded. Convert them (e.g. load and save_pretrained(safe_serialization=True)), or pass "
                "--allow-pickle if you trust the source")
    return f"{folder} holds no safetensors weights; pass a model folder, a .safetensors file or a Hub repo id"


def open_checkpoint(source: str | Path, *, prefix: str | None = None, allow_pickle: bool = False,
                    extra_patterns: list[str] | None = None, scratch: Path | None = None) -> Checkpoint:
    """Open a checkpoint or an artifact group for streaming reads.

    Args:
        source: local folder, a ``.safetensors`` file, or a Hub repo id ``org/name[@revision]``.
        prefix: the file prefix to read (``model`` by default; ``task_vector``, ``importance_forget``...).
        allow_pickle: convert a ``.bin`` checkpoint to a temporary safetensors copy instead of refusing.
        extra_patterns: more files to download from the Hub (the weights and small JSON files always are).
        scratch: where a pickle conversion's temporary copy goes (see :func:`scratch_for`); it is deleted
            when the checkpoint is released or the process exits, and the checkpoint's identity is the
            content hash of the pickle files, so a re-run resumes or finds its finished output.
    """
    from perta_hub.io import hub_source as hub

    source = str(source)
    hub_sha = None
    path = Path(source).expanduser()
    if not path.exists():
        if not hub.looks_like_repo_id(source):
            raise InputError(f"{source} does not exist; pass an existing folder or a Hub repo id (org/name[@revision])")
        pre = prefix or "model"
        patterns = [f"{pre}*.safetensors", f"{pre}.safetensors.index.json", *MODEL_FILE_PATTERNS, *(extra_patterns or [])]
        if not prefix:
            patterns.append("*.safetensors")
        if allow_pickle:
            patterns += ["*.bin", "*.bin.index.json"]
        path, hub_sha = hub.download(source, patterns)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(_no_weights_message(path.parent) if path.suffix in PICKLE_SUFFIXES
                                  else f"{path} is not a .safetensors file")
        files, root, pre = [path], path.parent, path.stem
    else:
        root = path
        try:
            pre, files = find_weight_files(path, prefix, hub=hub_sha is not None)
        except CheckpointError:
            if not allow_pickle:
                raise
            from perta_hub.io.pickle_import import convert_pickle_checkpoint

            root, pre, files, pickles = convert_pickle_checkpoint(path, pickle_files(path), scratch)
            ckpt = _checkpoint(root, source, pre, files, hub_sha)
            ckpt.pickle_files = pickles
            weakref.finalize(ckpt, remove_scratch, root)  # on release, on error, and at exit
            return ckpt
    return _checkpoint(root, source, pre, files, hub_sha)


def _checkpoint(root: Path, source: str, pre: str, files: list[Path], hub_sha: str | None) -> Checkpoint:
    entries: dict[str, TensorEntry] = {}
    for file in files:
        for entry in _entries(file):
            if entry.name in entries:
                raise CheckpointError(f"tensor {entry.name} appears in both {entries[entry.name].file.name} and {file.name}")
            entries[entry.name] = entry
    return Checkpoint(root, source, pre, files, entries, hub_sha)


def scratch_for(out_dir: str | Path) -> Path:
    """The output's temporary area: ``.<name>.perta-tmp`` beside ``out_dir`` (pickle conversions go there)."""
    out = Path(out_dir).expanduser()
    return out.parent / f".{out.name}.perta-tmp"
