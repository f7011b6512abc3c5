"""The card check ``push`` runs: the Hub's metadata rules, and no forget-set example quoted in the card.

The forget data is found from what the artifact recorded, never from the working directory: the data
descriptions in ``perta_config.json`` (``forget_data``; ``data`` of a fine-tuned model) hold ``source`` and
``files: [{"path", "sha256"}]`` (absolute paths), and each file is read there and checked against its
sha256; a Hub dataset (no local files) is loaded at its recorded commit (``source`` = ``org/name@sha``).
Older records without ``files`` fall back to the recorded spec (a local file, the bundled TOFU copy, a
``data_dir``). When the data of a forget-derived artifact cannot be read (moved, deleted, changed since,
unreachable) the push is refused unless the check is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError

CONFIG_NAME = "perta_config.json"
#: kinds derived from the forget data, and the ``perta_config.json`` keys describing that data
FORGET_DATA_KEYS = {"task_vector": ("forget_data",), "weight_map": ("forget_data",),
                    "finetuned_model": ("data", "forget_data")}


@dataclass(frozen=True)
class ForgetTexts:
    """The forget data's questions and answers, or why they could not be read (``missing``)."""

    texts: list[str]
    missing: str | None = None


def check_card_before_push(folder: Path, kind: str | None, *, skip_card_check: bool = False) -> str | None:
    """Refuse a card the Hub would reject, or one that quotes forget-set examples.

    Returns:
        a note to print when ``skip_card_check`` let an unreadable forget data pass, else None.
    Raises:
        InputError: an invalid card; a card quoting the forget data; the forget data of a forget-derived
            artifact unreadable (moved, changed, not offline) and ``skip_card_check`` not given.
    """
    from perta_hub.cards.render import find_forget_examples, hub_metadata_problems

    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    problems = hub_metadata_problems(text)
    if problems:
        raise InputError(f"the card {card} is invalid: {'; '.join(problems)}; fix it, then push")
    forget = forget_texts(folder, kind)
    if forget.missing:
        if not skip_card_check:
            raise InputError(f"cannot check the card {card} for forget-set examples: {forget.missing}; restore the "
                             "data, or pass --skip-card-check to push without the check")
        return f"push: the card was not checked for forget-set examples ({forget.missing})"
    found = find_forget_examples(text, forget.texts) if forget.texts else []
    if found:
        raise InputError(f"the card {card} quotes {len(found)} forget-set example(s); cards must never contain "
                         "forget data: remove them, then push")
    return None


def forget_texts(folder: Path, kind: str | None) -> ForgetTexts:
    """Questions and answers of the forget data an artifact of ``kind`` records (read without network)."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return ForgetTexts([])
    if not isinstance(config, dict):
        return ForgetTexts([])
    texts: list[str] = []
    for key in FORGET_DATA_KEYS.get(kind or "", ()):
        info = config.get(key)
        if not isinstance(info, dict):
            continue
        read = _read_recorded(info) if "files" in info else _read_legacy(info)
        if read.missing:
            return read
        texts += read.texts
    return ForgetTexts(texts)


def _fields(info: dict[str, Any]) -> list[str]:
    return [str(info.get("question_field") or "question"), str(info.get("answer_field") or "answer")]


def _rows_texts(rows: Any, info: dict[str, Any]) -> list[str]:
    fields = _fields(info)
    return [str(row[f]) for row in rows for f in fields if isinstance(row.get(f), str)]


def _read_recorded(info: dict[str, Any]) -> ForgetTexts:
    """Each recorded file by its absolute path, checked against its recorded sha256; a Hub dataset at the
    recorded commit."""
    from perta_hub.data.describe import file_sha256
    from perta_hub.data.loading import load_qa
    from perta_hub.errors import PertaError

    source = str(info.get("source") or info.get("spec") or "the forget data")
    files = info.get("files")
    if not isinstance(files, list):
        return ForgetTexts([], f"the record of {source} has no valid list of data files")
    if not files:  # a Hub dataset: load it at the recorded commit (the push needs the network anyway)
        spec = source + (f":{info['config']}" if info.get("config") else "")
        try:
            return ForgetTexts(_rows_texts(load_qa(spec), info))
        except PertaError as err:
            return ForgetTexts([], f"the forget data {spec} cannot be loaded ({err})")
    texts: list[str] = []
    for item in files:
        path = Path(str(item.get("path") or "")) if isinstance(item, dict) else Path(str(item))
        want = item.get("sha256") if isinstance(item, dict) else None
        if not path.is_absolute() or not path.is_file():
            return ForgetTexts([], f"the forget data {source} is no longer at {path}")
        if want and file_sha256(path) != want:
            return ForgetTexts([], f"the forget data file {path} changed since the artifact was made (sha256 differs)")
        try:
            texts += _rows_texts(load_qa(str(path)), info)
        except PertaError as err:
            return ForgetTexts([], f"the forget data file {path} cannot be read ({err})")
    return ForgetTexts(texts)


def _read_legacy(info: dict[str, Any]) -> ForgetTexts:
    """Records without ``files``: the spec as recorded (a local file, the bundled TOFU copy, a data_dir, a Hub
    dataset)."""
    from perta_hub.data.loading import load_qa
    from perta_hub.errors import PertaError

    spec = info.get("spec")
    if not spec:
        return ForgetTexts([])
    data_dir = info.get("data_dir")
    if info.get("local_file"):
        if not Path(info["local_file"]).expanduser().is_file():
            return ForgetTexts([], f"the forget data {info['local_file']} is not reachable from {Path.cwd()}")
    elif data_dir and not Path(data_dir).expanduser().is_dir():
        return ForgetTexts([], f"the forget data folder {data_dir} is not reachable from {Path.cwd()}")
    try:
        rows = load_qa(str(spec), data_dir=data_dir)
    except PertaError as err:
        return ForgetTexts([], f"the forget data {spec} cannot be read ({err})")
    return ForgetTexts(_rows_texts(rows, info))
