"""A recipe's ``data:`` entries: data specs as the commands take them, and data made from other data.

An entry is a data spec (``tofu:forget01`` for the bundled TOFU copy, ``org/name:config`` for a Hub dataset, a
local ``.json``/``.jsonl``/``.parquet`` file relative to the recipe) or a derived set, written by the runner to
``OUT/data/<name>.json`` before any step reads it:

* ``{from: SPEC_OR_REF, rows: "START:STOP"}``: those rows (Python slice bounds; negative counts from the end);
* ``{concat: [SPEC_OR_REF_OR_DERIVED, ...]}``: the rows of each, in order.

A derived set keeps the fields every one of its rows has (TOFU: ``question``, ``answer``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import RecipeError
from perta_hub.recipes.values import Ref, as_ref, shown

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Spec:
    """A data spec the commands take as it is (local files made absolute)."""

    spec: str


@dataclass(frozen=True)
class Rows:
    """Rows ``start:stop`` of another entry."""

    source: Spec | Ref | Rows | Concat
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class Concat:
    """The rows of each part, in order."""

    parts: tuple[Spec | Ref | Rows | Concat, ...]


Entry = Spec | Ref | Rows | Concat


def parse_spec(value: str, base_dir: Path) -> Spec:
    """A spec string: a local file (made absolute against ``base_dir``) or a ``repo:config`` / ``tofu:CONFIG``."""
    path = (base_dir / Path(value).expanduser())
    if path.suffix in LOCAL_SUFFIXES or path.exists() or ":" not in value:
        return Spec(str(path.resolve()))
    return Spec(value)


def parse_entry(path: str, value: Any, base_dir: Path) -> Entry:
    """A ``data:`` value (or a part of one)."""
    if isinstance(value, str):
        ref = as_ref(value, path)
        return ref if ref is not None else parse_spec(value, base_dir)
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: must be a data spec (tofu:CONFIG, org/name:config, a file), a reference "
                          f"${{name}}, {{from: ..., rows: START:STOP}} or {{concat: [...]}} (got {shown(value)})")
    keys = set(value)
    if keys == {"concat"}:
        parts = value["concat"]
        if not isinstance(parts, list) or not parts:
            raise RecipeError(f"{path}.concat: must be a non-empty list of data (got {shown(parts)})")
        return Concat(tuple(parse_entry(f"{path}.concat[{i}]", v, base_dir) for i, v in enumerate(parts)))
    if keys == {"from", "rows"}:
        return Rows(parse_entry(f"{path}.from", value["from"], base_dir), *parse_rows(f"{path}.rows", value["rows"]))
    raise RecipeError(f"{path}: keys {', '.join(map(str, value)) or 'none'} do not make data; use {{from: ..., "
                      "rows: START:STOP}} or {concat: [...]}")


def parse_rows(path: str, value: Any) -> tuple[int | None, int | None]:
    """``"START:STOP"`` (either may be left out) as two ints or None."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or text.count(":") != 1:
        raise RecipeError(f"{path}: must be START:STOP, e.g. \"0:40\" or \"-40:\" (got {shown(value)})")
    bounds = []
    for part in text.split(":"):
        try:
            bounds.append(int(part) if part.strip() else None)
        except ValueError:
            raise RecipeError(f"{path}: must be START:STOP with integers (got {shown(value)})") from None
    return bounds[0], bounds[1]


def refs_of(entry: Entry) -> list[str]:
    """The names an entry refers to."""
    if isinstance(entry, Ref):
        return [entry.name]
    if isinstance(entry, Rows):
        return refs_of(entry.source)
    if isinstance(entry, Concat):
        return [n for p in entry.parts for n in refs_of(p)]
    return []


def is_derived(entry: Entry) -> bool:
    return isinstance(entry, (Rows, Concat))


def plain(entry: Entry) -> Any:
    """The entry as the resolved recipe writes it."""
    if isinstance(entry, Spec):
        return entry.spec
    if isinstance(entry, Ref):
        return str(entry)
    if isinstance(entry, Rows):
        start = "" if entry.start is None else entry.start
        stop = "" if entry.stop is None else entry.stop
        return {"from": plain(entry.source), "rows": f"{start}:{stop}"}
    return {"concat": [plain(p) for p in entry.parts]}


class DataSet:
    """Loads and derives the ``data:`` entries of one recipe (rows cached per spec)."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def rows(self, entry: Entry) -> list[dict[str, Any]]:
        """The rows of an entry (a derived one keeps the fields all its rows have)."""
        if isinstance(entry, Ref):
            return self.rows(self.entries[entry.name])
        if isinstance(entry, Spec):
            if entry.spec not in self._rows:
                self._rows[entry.spec] = load_rows(entry.spec)
            return self._rows[entry.spec]
        rows = (self.rows(entry.source)[entry.start:entry.stop] if isinstance(entry, Rows)
                else [r for p in entry.parts for r in self.rows(p)])
        common = set.intersection(*(set(r) for r in rows)) if rows else set()
        return [{k: v for k, v in r.items() if k in common} for r in rows]

    def text(self, name: str) -> str:
        """The JSON a derived entry is written as."""
        return json.dumps(self.rows(self.entries[name]), ensure_ascii=False)

    def identity(self, name: str) -> str:
        """What a step's key holds for this entry: the sha256 of a local file or derived set, else the spec."""
        entry = self.entries[name]
        while isinstance(entry, Ref):
            entry = self.entries[entry.name]
        if is_derived(entry):
            return "sha256:" + hashlib.sha256(self.text(name).encode()).hexdigest()
        assert isinstance(entry, Spec)
        local = local_file(entry.spec)
        if local is not None:
            from perta_hub.io.fingerprint import file_sha256

            return "sha256:" + file_sha256(local)
        return entry.spec

    def write(self, name: str, folder: Path) -> Path:
        """Write a derived entry to ``folder/<name>.json`` (left as it is when it holds these rows)."""
        from perta_hub.io.atomic import write_atomic

        path = folder / f"{name}.json"
        text = self.text(name)
        if not (path.is_file() and path.read_text() == text):
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)
        return path


def local_file(spec: str) -> Path | None:
    """The local file a spec names (bundled TOFU included), None for a Hub dataset."""
    from perta_hub.data.loading import locate

    path = locate(spec)
    return path if path is not None and path.is_file() else None


def load_rows(spec: str) -> list[dict[str, Any]]:
    """The rows of a spec: a JSON list or JSONL file read directly, anything else through ``load_qa``."""
    from perta_hub.data.loading import load_qa

    path = local_file(spec)
    if path is not None and path.suffix == ".json":
        rows = json.loads(path.read_text())
        if isinstance(rows, list):
            return rows
    if path is not None and path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list(load_qa(spec).to_list())
