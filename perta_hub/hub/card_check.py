"""The one forget-data rule ``push`` and ``verify --privacy`` share: the Hub's metadata rules for the card, and
no forget-set example quoted in the card or in any other text file the folder publishes.

**Whose forget data.** An artifact's own forget data (its kind's ``forget_data_keys`` in
:mod:`perta_hub.records`: ``forget_data``; ``data`` of a fine-tuned model), then that of each input it declares
``forget_inputs``, followed down (an unlearned model: its task vector and weight map, then the task vector's
fine-tuned model). An artifact input (a task vector, a weight map) whose record cannot be read makes the
forget data unreachable; a model input without a record (a plain model, or one gone) adds nothing.

**Where the data is read.** From what the record holds, never from the working directory: the data
descriptions hold ``source`` and ``files: [{"path", "sha256"}]`` (absolute paths), and each file is read there
and checked against its sha256; a Hub dataset (no local files) is loaded at its recorded commit (``source`` =
``org/name@sha``). Older records without ``files`` fall back to the recorded spec (a local file, the bundled
TOFU copy, a ``data_dir``). When the data cannot be read (moved, deleted, changed since, unreachable) ``push``
is refused unless the check is skipped (``--skip-card-check``) and ``verify`` reports the scan NOT VERIFIED.

**What counts as a quote** (:func:`find_forget_examples`). Both sides are normalised (:func:`normalise`): HTML
entities decoded, Unicode NFKC, zero-width characters and soft hyphens removed, markdown links and images
reduced to their text, HTML tags and comment markers removed, emphasis characters (``*``, ``_``, ``~``,
backticks) removed, case folded; the text is then compared as its sequence of words (letters and digits;
punctuation and whitespace only separate words). A forget-set question or answer is quoted when any
:data:`QUOTE_WORDS` consecutive words of it appear consecutively in a scanned file; a shorter one when all its
words do and they hold at least :data:`MIN_WHOLE_CHARS` characters. Each file is also scanned with the markup
kept as word separators (text hidden inside a tag's attributes still counts).

**Which files.** Every file being uploaded except weight files (:data:`BINARY_SUFFIXES`), read as UTF-8
(undecodable bytes separate words): the card, ``config.json``, tokenizer and chat-template files, files added
with ``--include``.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perta_hub.errors import InputError, PertaError
from perta_hub.records import ArtifactRef, Record, WeightsRef

if TYPE_CHECKING:
    from perta_hub.verification.locate import InputSearch

#: a forget-set text is quoted when this many consecutive words of it appear in a published text file
QUOTE_WORDS = 8
#: a forget-set text shorter than QUOTE_WORDS words counts only whole, and only from this many characters
#: (its words joined by single spaces): short answers ("Yes", a year) would match unrelated text
MIN_WHOLE_CHARS = 12
#: files not scanned as text (weights)
BINARY_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5", ".onnx", ".npz",
                   ".npy")

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e"
                                    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u3164"
                                    "\ufe00\ufe01\ufe02\ufe03\ufe0e\ufe0f\ufeff\uffa0"))
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)|!?\[([^\]]*)\]\[[^\]]*\]")
_TAG = re.compile(r"<!--|-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
_EMPHASIS = str.maketrans("", "", "*_~`")
_WORD = re.compile(r"[^\W_]+")


def normalise(text: str, *, strip_markup: bool = True) -> list[str]:
    """The words of ``text`` as the forget-data rule compares them (see the module's documentation);
    ``strip_markup=False`` keeps links, tags and emphasis characters as word separators."""
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    if strip_markup:
        text = _LINK.sub(lambda m: m.group(1) if m.group(1) is not None else (m.group(2) or ""), text)
        text = _TAG.sub("", text).translate(_EMPHASIS)
    return _WORD.findall(text.casefold())


def find_forget_examples(body: Any, texts: Iterable[str]) -> list[int]:
    """Indices of the forget-set texts (questions, answers) that ``body`` quotes (see the module's documentation:
    :data:`QUOTE_WORDS` consecutive words, or a shorter text whole)."""
    wanted: dict[int, dict[tuple[str, ...], list[int]]] = {}
    for i, text in enumerate(texts):
        words = normalise(str(text))
        if len(words) >= QUOTE_WORDS:
            grams = {tuple(words[j:j + QUOTE_WORDS]) for j in range(len(words) - QUOTE_WORDS + 1)}
        elif words and len(" ".join(words)) >= MIN_WHOLE_CHARS:
            grams = {tuple(words)}
        else:
            continue
        for gram in grams:
            wanted.setdefault(len(gram), {}).setdefault(gram, []).append(i)
    if not wanted:
        return []
    raw = body if isinstance(body, str) else str(body)
    found: set[int] = set()
    for words in (normalise(raw), normalise(raw, strip_markup=False)):
        for n, grams in wanted.items():
            for gram in zip(*(words[k:] for k in range(n)), strict=False):
                hit = grams.get(gram)
                if hit:
                    found.update(hit)
    return sorted(found)


@dataclass(frozen=True)
class ForgetTexts:
    """The forget data's questions and answers, or why they could not be read (``missing``)."""

    texts: list[str]
    missing: str | None = None


@dataclass(frozen=True)
class ForgetScan:
    """What the rule found: ``missing`` (the forget data could not be read: nothing scanned), the number of
    forget-set texts scanned for, and each scanned file quoting some (name, indices of the texts quoted)."""

    texts: int
    quoted: tuple[tuple[str, tuple[int, ...]], ...] = ()
    missing: str | None = None
    scanned: tuple[str, ...] = ()


def scan_folder(folder: Path, record: Record | None, files: Sequence[str],
                where: InputSearch | None = None) -> ForgetScan:
    """Apply the rule: the forget data of ``record`` and its forget-derived inputs (:func:`rule_forget_texts`;
    ``where``: where local inputs are looked for, by default around ``folder``), searched for in each of ``files``
    (relative to ``folder``) that is text (not a weight file)."""
    from perta_hub.verification.locate import InputSearch

    forget = rule_forget_texts(record, where or InputSearch.around(folder))
    if forget.missing:
        return ForgetScan(0, missing=forget.missing)
    scanned = tuple(name for name in files if not name.lower().endswith(BINARY_SUFFIXES)
                    and (folder / name).is_file())
    if not forget.texts:
        return ForgetScan(0, scanned=scanned)
    quoted = []
    for name in scanned:
        text = (folder / name).read_bytes().decode("utf-8", errors="replace")
        found = find_forget_examples(text, forget.texts)
        if found:
            quoted.append((name, tuple(found)))
    return ForgetScan(len(forget.texts), tuple(quoted), scanned=scanned)


def quote_message(folder: Path, scan: ForgetScan) -> str:
    """The one line naming what quotes forget data (the card first), for push and verify."""
    quoted = sorted(scan.quoted, key=lambda item: item[0] != "README.md")
    name, found = quoted[0]
    what = f"the card {folder / name}" if name == "README.md" else f"the file {folder / name}"
    more = f" (so do {', '.join(n for n, _ in quoted[1:])})" if len(quoted) > 1 else ""
    return f"{what} quotes {len(found)} forget-set example(s) (first: text #{found[0]} of the forget data){more}"


def check_card_before_push(folder: Path, record: Record | None, *, skip_card_check: bool = False,
                           files: Sequence[str] | None = None, fix: str = "remove them, then push") -> str | None:
    """Refuse a card the Hub would reject, or a card or other text file quoting forget-set examples (``record``:
    the folder's, None for a plain model folder; ``files``: the files being uploaded, default what
    :func:`perta_hub.hub.allowlist.plan_upload` uploads; ``fix``: what the refusal tells the user to do).

    Returns:
        a note to print when ``skip_card_check`` let an unreadable forget data pass, else None.
    Raises:
        InputError: an invalid card; a file quoting the forget data; the forget data of the artifact or of its
            forget-derived inputs unreadable (moved, changed, not offline) and ``skip_card_check`` not given.
    """
    from perta_hub.cards.render import hub_metadata_problems

    card = folder / "README.md"
    if files is None:
        from perta_hub.hub.allowlist import plan_upload

        files = plan_upload(folder, record.kind if record else None).upload
    if card.is_file():
        problems = hub_metadata_problems(card.read_text(encoding="utf-8"))
        if problems:
            raise InputError(f"the card {card} is invalid: {'; '.join(problems)}; fix it, then push")
    scan = scan_folder(folder, record, files)
    if scan.missing:
        if not skip_card_check:
            raise InputError(f"cannot check the card {card} for forget-set examples: {scan.missing}; restore the "
                             "data, or pass --skip-card-check to push without the check")
        return f"push: the card was not checked for forget-set examples ({scan.missing})"
    if scan.quoted:
        raise InputError(f"{quote_message(folder, scan)}; published files must never contain forget data: {fix}")
    return None


def rule_forget_texts(record: Record | None, where: InputSearch | None = None) -> ForgetTexts:
    """The forget data the rule scans for: ``record``'s own (:func:`forget_texts`), then that of each input it
    declares ``forget_inputs``, followed down (found as :func:`perta_hub.verification.sources.input_record` says);
    an artifact input whose record cannot be read is ``missing``."""
    from perta_hub.verification.integrity import recorded_inputs
    from perta_hub.verification.sources import input_record, reason

    if record is None:
        return ForgetTexts([])
    texts: list[str] = []
    todo: list[tuple[Record, str]] = [(record, "")]
    seen: set[str] = set()  # inputs already followed (a hand-made record may name itself)
    while todo:
        current, via = todo.pop(0)
        found = forget_texts(current)
        if found.missing:
            return ForgetTexts([], found.missing + via)
        texts += found.texts
        inputs = recorded_inputs(current)
        for role in type(current).forget_inputs:
            item = inputs.get(role)
            key = f"{getattr(item, 'source', '')}@{getattr(item, 'revision', '')}"
            if item is None or key in seen:
                continue
            seen.add(key)
            name = role.replace("_", " ")
            try:
                sub = input_record(item, where)[1]
            except PertaError as err:
                if isinstance(item, (ArtifactRef, WeightsRef)):
                    return ForgetTexts([], f"the {name} record {item.source} cannot be read to find its forget data "
                                           f"({reason(err)})")
                continue  # a model input: a plain model without a record, or gone (its data is recorded elsewhere)
            todo.append((sub, f" (the forget data of the {name} {item.source})"))
    return ForgetTexts(list(dict.fromkeys(texts)))


def forget_texts(record: Record | None) -> ForgetTexts:
    """Questions and answers of the forget data a record describes (its kind's ``forget_data_keys``; read
    without network)."""
    texts: list[str] = []
    for key in record.forget_data_keys if record is not None else ():
        info = record.get(key)
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
