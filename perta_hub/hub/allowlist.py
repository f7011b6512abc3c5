"""What ``push`` uploads: an explicit allow-list per artifact kind, everything else left out and reported.

A folder's files are sorted into the upload (the weight files its indexes name, or its single-file
weights; ``config.json``, ``generation_config.json``, tokenizer and chat-template files, ``perta_config.json``,
``README.md``, the LoRA adapter in ``adapter/``, and whatever ``include`` patterns add) and the files left
out (training logs, ``trainer_state.json``, optimizer states, ``checkpoint-*/``, data files, nested
artifacts, ``*.bin``...). Hidden files (run markers, ``.*.partial`` temporaries, caches) are never uploaded
and never reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from perta_hub.errors import InputError
from perta_hub.io.reader import index_files, outside_link
from perta_hub.records import CONFIG_NAME, RECORDS

#: the model's side files: configuration, tokenizer and chat template
SIDE_FILES = (
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", "chat_template.json",
)
RECORD_FILES = (CONFIG_NAME, "README.md")
#: the LoRA adapter ``finetune --lora-rank`` writes beside the merged weights
ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")
_SHARD_NAME = re.compile(r"-\d+-of-\d+$")


@dataclass(frozen=True)
class UploadPlan:
    """The files (paths relative to the folder, ``/``-separated) a push sends and those it leaves out."""

    upload: tuple[str, ...]
    left_out: tuple[str, ...]

    def left_out_line(self) -> str | None:
        """One line naming the files left out (a folder left out whole is named once), or None."""
        if not self.left_out:
            return None
        return (f"push: left out {len(self.left_out)} file(s) that are not part of the artifact: "
                f"{', '.join(summarise(self.left_out, self.upload))} (add one with --include PATTERN)")


def summarise(left_out: tuple[str, ...], upload: tuple[str, ...]) -> list[str]:
    """``left_out`` with each top-level folder none of whose files is uploaded shown as ``name/``."""
    uploaded_tops = {p.split("/", 1)[0] for p in upload if "/" in p}
    shown: list[str] = []
    for path in left_out:
        top, sep, _ = path.partition("/")
        item = f"{top}/" if sep and top not in uploaded_tops else path
        if item not in shown:
            shown.append(item)
    return shown


def member(folder: Path, name: object, where: str) -> str:
    """``name`` (read from ``where``) if it is a plain relative file name inside ``folder``, else refuse.

    A name may not be absolute, hold ``..`` or a backslash; the file it names may not resolve outside the
    folder (:func:`perta_hub.io.reader.outside_link`: judged by where its links lead; a Hub cache snapshot's
    links into its own repo's blob store are inside).
    """
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise InputError(f"{where} names {name!r}, which is not a file name; re-create {folder}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise InputError(f"{where} names {name!r}, which lies outside {folder}; refusing to read or upload it")
    if outside_link(folder, folder / name) is not None:
        raise InputError(f"{where} names {name!r}, a link to a file outside {folder}; refusing to read or "
                         "upload it")
    return pure.as_posix()


def check_hard_links(folder: Path, upload: tuple[str, ...]) -> None:
    """Refuse an uploaded file that is a hard link to a file outside ``folder``: its link count is higher than the
    number of its names inside the folder (a file linked only within the folder is fine).

    Raises:
        InputError: one line naming the file.
    """
    linked: dict[str, tuple[int, int, int]] = {}
    for name in upload:
        stat = (folder / name).stat()
        if stat.st_nlink > 1:
            linked[name] = (stat.st_dev, stat.st_ino, stat.st_nlink)
    if not linked:
        return
    names: dict[tuple[int, int], set[Path]] = {}
    for root, _dirs, files in os.walk(folder):
        for file in files:
            path = Path(root) / file
            try:
                stat = path.stat()
            except OSError:
                continue
            names.setdefault((stat.st_dev, stat.st_ino), set()).add(path.resolve())
    for name, (dev, ino, count) in linked.items():
        inside = len(names.get((dev, ino), ()))
        if count > inside:
            raise InputError(f"{folder / name} is a hard link to a file outside {folder} ({count} links, {inside} "
                             "inside); refusing to upload it (copy the file into the folder if you trust it)")


def folder_files(folder: Path) -> list[str]:
    """Every non-hidden file under ``folder`` (relative, ``/``-separated, sorted); hidden folders skipped."""
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith((".partial", ".lock")):
            out.append(rel.as_posix())
    return sorted(out)


def weight_files(folder: Path, kind: str | None) -> list[str]:
    """The weight files of ``folder``: each index and the shards it names, else single ``<prefix>.safetensors``;
    only the prefixes of ``kind``'s groups (:meth:`perta_hub.records.Record.weight_prefixes`), any prefix in a
    plain model folder (``kind`` None) or one of an unknown kind.

    Raises:
        CheckpointError: an index that does not parse, or names a file outside the folder.
    """
    prefixes = RECORDS[kind].weight_prefixes() if kind in RECORDS else None
    files: list[str] = []
    indexed: set[str] = set()
    for index in sorted(folder.glob("*.safetensors.index.json")):
        prefix = index.name[: -len(".safetensors.index.json")]
        if prefixes is not None and prefix not in prefixes:
            continue
        names = [path.name for path in index_files(index)]  # each a plain file name inside the folder
        indexed.add(prefix)
        files.append(index.name)
        files += names
    for single in sorted(folder.glob("*.safetensors")):
        prefix = single.name[: -len(".safetensors")]
        if prefix in indexed or _SHARD_NAME.search(prefix) or (prefixes is not None and prefix not in prefixes):
            continue
        files.append(single.name)
    return list(dict.fromkeys(files))


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) matches the glob ``pattern``, the same on every Python.

    The pattern is matched against the whole path, segment by segment: ``*`` is any run of characters within
    one segment, ``?`` one character, ``[seq]`` / ``[!seq]`` one character of (not of) ``seq``; a segment that
    is exactly ``**`` is zero or more whole segments (``logs/**``: every file under ``logs/``; ``**/*.txt``:
    every ``.txt`` file, at the top or in any folder; ``a/*/b``: ``b`` exactly one folder below ``a``).
    Matching is case-sensitive.
    """
    return _glob_regex(pattern).fullmatch(path) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    segments = pattern.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(".+" if last else "(?:[^/]+/)*")
            continue
        parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def _segment_regex(segment: str) -> str:
    out, i = [], 0
    while i < len(segment):
        char = segment[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 1 if segment[i:i + 1] in ("!", "]") else i)
            if end < 0:
                out.append(re.escape(char))
                continue
            body = segment[i:end]
            i = end + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[{'^/' if negate else ''}{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def plan_upload(folder: str | Path, kind: str | None, include: list[str] | tuple[str, ...] = ()) -> UploadPlan:
    """Sort ``folder``'s files into what a push of an artifact of ``kind`` uploads and what it leaves out.

    Args:
        folder: the artifact or model folder.
        kind: ``kind`` of its ``perta_config.json`` (None for a plain model folder).
        include: glob patterns relative to the folder (``**`` crosses folders) adding files explicitly.
    Raises:
        CheckpointError: an index naming a file outside the folder.
        InputError: an ``include`` pattern that climbs out of the folder, a file linking outside it.
    """
    folder = Path(folder)
    present = folder_files(folder)
    chosen = set(weight_files(folder, kind))
    chosen.update(p for p in (*SIDE_FILES, *RECORD_FILES, *ADAPTER_FILES) if (folder / p).is_file())
    for pattern in include:
        pure = PurePosixPath(pattern)
        if not pattern or pure.is_absolute() or ".." in pure.parts or "\\" in pattern:
            raise InputError(f"--include {pattern!r} must be a glob pattern relative to {folder}")
        chosen.update(member(folder, p, f"--include {pattern!r}") for p in present if glob_match(pattern, p))
    upload = tuple(member(folder, p, str(folder)) for p in present if p in chosen)
    check_hard_links(folder, upload)
    return UploadPlan(upload, tuple(p for p in present if p not in chosen))
