"""Finding a recorded input, bound by content: a Hub input at its recorded commit; a local one at its recorded
absolute ``path`` (a record older than ``path``: its ``source`` as given, then relative to each folder above the
output), then by its content hash among the folders of :attr:`InputSearch.search` (the output's siblings and each
``verify --search DIR``, and the folders directly inside them).

A local input is accepted where its content hash (``sha256:`` over its files, as the command that recorded it
computed it) is the recorded one; the recorded place holding other content is returned only when no searched
folder holds the recorded content, so the caller reports the input as changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError, PertaError


@dataclass(frozen=True)
class InputSearch:
    """Where local recorded inputs are looked for besides their recorded path.

    Attributes:
        near: the output folder (a relative ``source`` of an older record is tried against each folder above it).
        search: folders searched by content hash (each, and the folders directly inside it).
    """

    near: Path | None = None
    search: tuple[Path, ...] = ()

    @classmethod
    def around(cls, folder: Path, extra: tuple[Path, ...] = ()) -> InputSearch:
        """For a local output ``folder``: ``extra`` (``--search``), then the folder's siblings."""
        return cls(folder, (*extra, folder.parent))


@dataclass(frozen=True)
class Found:
    """A recorded input as opened: ``where`` it was opened from, and ``moved_from`` (the recorded place) when it
    was found elsewhere by content hash."""

    where: str
    opened: Any
    moved_from: str | None = None


def pinned_source(item: Any) -> str:
    """What to open for a recorded input: ``repo_id@revision`` for a Hub input, else the recorded path (or, in an
    older record, the source as given)."""
    repo_id = getattr(item, "repo_id", None)
    if isinstance(repo_id, str) and repo_id:
        return f"{repo_id.partition('@')[0]}@{item.revision}"
    path = getattr(item, "path", None)
    return str(path) if isinstance(path, str) and path else str(item.source)


def is_hub_input(item: Any) -> bool:
    repo_id = getattr(item, "repo_id", None)
    return isinstance(repo_id, str) and bool(repo_id)


def _named(item: Any, near: Path | None) -> Iterator[Path]:
    """The places a local input's record names, the recorded one first: its path; in an older record without
    one, its source as given, then (a relative source) that source under each folder above ``near``."""
    path = getattr(item, "path", None)
    if isinstance(path, str) and path:
        yield Path(path)
        return
    source = Path(str(item.source)).expanduser()
    yield source
    if not source.is_absolute() and near is not None:
        for above in near.resolve().parents:
            yield above / source


def _searched(search: tuple[Path, ...]) -> Iterator[Path]:
    for folder in search:
        if folder.is_dir():
            yield folder
            yield from sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def close(opened: Any) -> None:
    """Close what an opener returned (a checkpoint; an artifact needs nothing)."""
    method = getattr(opened, "close", None)
    if callable(method):
        method()


def locate(item: Any, opener: Callable[[str], Any], where: InputSearch | None = None, *,
           check_hash: bool = True) -> Found:
    """Open the recorded input ``item`` (``source``, ``revision``, ``repo_id``, ``path``) with ``opener`` (which
    returns an object with a ``revision``).

    ``check_hash=False``: a named place that exists is taken as it is (reading a record, not checking content);
    the content hash still decides among searched folders.
    Raises:
        PertaError: a Hub input that cannot be fetched; a local input found nowhere (one line saying where it
            was looked for).
    """
    if is_hub_input(item):
        source = pinned_source(item)
        return Found(source, opener(source))
    where = where or InputSearch()
    recorded = pinned_source(item)
    tried: set[Path] = {where.near.resolve()} if where.near is not None else set()  # never the output itself
    changed: Found | None = None
    for i, place in enumerate(_named(item, where.near)):
        key = place.resolve()
        if key in tried or not place.exists():
            continue
        tried.add(key)
        try:
            opened = opener(str(place))
        except (PertaError, OSError):  # not an input of this kind, or unreadable: not this place
            continue
        if not check_hash or opened.revision == item.revision:
            return Found(str(place), opened)
        if i == 0:  # the recorded place holds other content: the input changed, unless found elsewhere
            changed = Found(str(place), opened)
        else:
            close(opened)
    for place in _searched(where.search):
        key = place.resolve()
        if key in tried:
            continue
        tried.add(key)
        try:
            opened = opener(str(place))
            same = opened.revision == item.revision
        except (PertaError, OSError):
            continue
        if same:
            if changed is not None:
                close(changed.opened)
            return Found(str(place), opened, recorded)
        close(opened)
    if changed is not None:
        return changed
    looked = ", ".join(str(p) for p in where.search) or "no other folder (pass --search DIR)"
    raise InputError(f"cannot find {recorded}: it is not there, and no folder searched by content hash holds its "
                     f"content {item.revision} (searched: {looked}); pass --search DIR where it now is")
