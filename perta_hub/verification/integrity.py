"""Integrity: the files are those recorded, the indexes name exactly the files present, the card says what
``perta_config.json`` says, and every input is pinned by a commit (or a local content hash), not a branch."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

from perta_hub.records import CONFIG_NAME, RECORDS, UNSET, Record
from perta_hub.verification.result import VerifyResult
from perta_hub.verification.sources import LOCAL_RE, SHA_RE, Subject

LEVEL = "integrity"
#: files that are never in ``files``: the card and the record change on push; git's own attributes
UNRECORDED = ("README.md", CONFIG_NAME, ".gitattributes")


def recorded_inputs(record: Record) -> dict[str, Any]:
    """The inputs a record names (role -> object with ``source``, ``repo_id``, ``revision``), set ones only: the
    kind's ``inputs``, then its ``side_inputs``."""
    out = {}
    for role in (*record.inputs, *record.side_inputs):
        item = getattr(record, role, UNSET)
        if item is UNSET or item is None:
            continue
        if isinstance(item, dict):
            item = SimpleNamespace(source=str(item.get("source")), revision=str(item.get("revision")), repo_id=None,
                                   path=item.get("path"))
        out[role] = item
    return out


def card_roles() -> dict[str, str]:
    """The input lines a card may hold (``- task vector: `SOURCE` at `REVISION```): the role as written -> the
    record key, for every kind's ``inputs``."""
    return {role.replace("_", " "): role for cls in RECORDS.values() for role in cls.inputs}


def _short(sha: str | None) -> str:
    return "none" if sha is None else sha[:16] + "…"


def check_files(result: VerifyResult, subject: Subject, local: dict[str, str]) -> None:
    """Every recorded file is present with its recorded sha256 (local bytes and, on the Hub, the LFS oid).

    ``local``: sha256 of the files on disk (the folder, or the downloaded snapshot), by name.
    """
    recorded = subject.record.files
    present = subject.present()
    remote = subject.remote or {}
    if recorded is UNSET:
        if subject.is_hub and subject.weights_local and remote:
            bad = [(n, local.get(n), remote[n]) for n in present if remote.get(n) and local.get(n) != remote[n]]
            if bad:
                name, got, want = bad[0]
                result.add(LEVEL, "file hashes", "fail", f"{name}: downloaded sha256 {_short(got)} differs from the "
                           f"Hub's LFS sha256 {_short(want)} ({len(bad)} file(s) differ)")
                return
        result.add(LEVEL, "file hashes", "unverified",
                   f"{CONFIG_NAME} records no file hashes (written before perta-hub recorded them); the files "
                   "cannot be checked against the run that wrote them (re-create the output, or use --recompute)")
        return
    problems: list[str] = []
    for name, want in recorded.items():
        if name not in present:
            problems.append(f"{name} is recorded but missing")
            continue
        if name in remote and remote[name] is not None and remote[name] != want:
            problems.append(f"{name}: the Hub's LFS sha256 {_short(remote[name])} differs from the recorded "
                            f"{_short(want)}")
        elif name in local and local[name] != want:
            problems.append(f"{name}: sha256 {_short(local[name])} differs from the recorded {_short(want)}")
        elif name not in local and remote.get(name) is None:
            problems.append(f"{name}: not downloaded and not an LFS file, so its hash is unknown")
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        result.add(LEVEL, "file hashes", "fail", problems[0] + more)
        return
    where = "the Hub's LFS sha256 and the files' bytes" if subject.is_hub and subject.weights_local else (
        "the Hub's LFS sha256" if subject.is_hub else "the files' bytes")
    result.add(LEVEL, "file hashes", "pass", f"{len(recorded)} files match the recorded sha256 ({where})")


def check_indexes(result: VerifyResult, subject: Subject) -> None:
    """Each ``*.safetensors.index.json`` at the top of the output names shards that are present; with the shards
    on disk, the tensors of each shard's header are those the index maps to it. (Which weight files a loader picks
    up is :func:`perta_hub.verification.loadable.check_weight_files`.)"""
    from perta_hub.errors import PertaError
    from perta_hub.io.safetensors_format import _entries

    present = set(subject.present())
    problems: list[str] = []
    indexes = sorted(n for n in present if n.endswith(".safetensors.index.json") and "/" not in n)
    shards = 0
    for index in indexes:
        try:
            weight_map = json.loads((subject.folder / index).read_text())["weight_map"]
            named = set(weight_map.values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            problems.append(f"{index} is not a valid index ({err})")
            continue
        shards += len(named)
        problems += [f"{index} names {n}, which is not present" for n in sorted(named - present)]
        if subject.weights_local:
            for shard in sorted(named & present):
                try:
                    names = {e.name for e in _entries(subject.folder / shard)}
                except PertaError as err:
                    problems.append(f"{shard}: {err}")
                    continue
                mapped = {t for t, f in weight_map.items() if f == shard}
                if names != mapped:
                    diff = sorted(names ^ mapped)[0]
                    problems.append(f"{shard} holds tensors other than {index} maps to it (first: {diff})")
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        result.add(LEVEL, "indexes", "fail", problems[0] + more)
    elif indexes:
        what = "the shard headers and " if subject.weights_local else ""
        result.add(LEVEL, "indexes", "pass", f"{len(indexes)} index(es) name {shards} shard(s), all present ({what}"
                   "file names checked)")


def _card_claims(text: str) -> dict[str, Any]:
    """What a card states: provenance lines (role -> (source, revision)), alpha and method, base_model,
    the published commit."""
    claims: dict[str, Any] = {"inputs": {}}
    roles = card_roles()
    for role, source, revision in re.findall(r"^- ([a-z ]+): `(.*)` at `(.*)`\s*$", text, re.MULTILINE):
        if role in roles:
            claims["inputs"][roles[role]] = (source, revision)
    match = re.search(r"alpha = (\S+) and method `([^`]*)`", text)
    if match:
        claims["alpha"], claims["method"] = match.group(1), match.group(2)
    match = re.search(r"computed with the `([^`]*)` method", text)
    if match:
        claims["method"] = match.group(1)
    match = re.search(r"^base_model:\s*(\S+)\s*$", text, re.MULTILINE)
    if match:
        claims["base_model"] = match.group(1).strip("'\"")
    match = re.search(r"the files are those of commit `([0-9a-f]+)`", text)
    if match:
        claims["published"] = match.group(1)
    claims["tags"] = _card_tags(text)
    return claims


def _card_tags(text: str) -> list[str]:
    """The ``tags`` of a card's YAML header (empty when it has none or does not parse)."""
    from huggingface_hub import ModelCard

    try:
        tags = ModelCard(text, ignore_metadata_errors=True).data.to_dict().get("tags")
    except Exception:  # noqa: BLE001 - a header that does not parse is the privacy level's "card scan" failure
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _kind_problems(tags: list[str], kind: str) -> list[str]:
    """The card must be a card of the recorded kind: it carries the kind's tag and no other kind's (a record
    relabelled as another kind, e.g. a training output, then disagrees with its card)."""
    problems = []
    for other, cls in RECORDS.items():
        if cls.card_tag and cls.card_tag in tags and other != kind:
            problems.append(f"the card is that of a {other.replace('_', ' ')} (tag {cls.card_tag}) but {CONFIG_NAME} "
                            f"says the kind is {kind}")
    own = RECORDS[kind].card_tag
    if own and own not in tags:
        problems.append(f"the card does not carry the tag {own} of a {kind.replace('_', ' ')} card")
    return problems


def check_card_matches_record(result: VerifyResult, subject: Subject) -> None:
    """The card (``README.md``) states the record's alpha, method, inputs and revisions, and base model."""
    card = subject.folder / "README.md"
    if not card.is_file():
        result.add(LEVEL, "card", "fail", "the output has no card (README.md)")
        return
    claims = _card_claims(card.read_text(encoding="utf-8"))
    record = subject.record
    problems = _kind_problems(claims["tags"], record.kind)
    if record.kind == "model":
        if "alpha" not in claims:
            problems.append("the card does not state alpha")
        else:
            try:
                same = float(claims["alpha"]) == record.alpha
            except ValueError:
                same = False
            if not same:
                problems.append(f"the card says alpha = {claims['alpha']} but {CONFIG_NAME} says {record.alpha}")
    method = getattr(record, "method", UNSET)
    if "method" in claims and method is not UNSET and claims["method"] != method:
        problems.append(f"the card says method {claims['method']!r} but {CONFIG_NAME} says {method!r}")
    for role, item in recorded_inputs(record).items():
        if role in record.side_inputs:  # pinned, not on the card
            continue
        stated = claims["inputs"].get(role)
        if stated is None:
            problems.append(f"the card does not name the {role.replace('_', ' ')} input")
        elif stated != (str(item.source), str(item.revision)):
            problems.append(f"the card names the {role.replace('_', ' ')} as {stated[0]} at {stated[1]} but "
                            f"{CONFIG_NAME} records {item.source} at {item.revision}")
    hub = record.hub if record.hub is not UNSET else None
    if hub and claims.get("published") and claims["published"] != hub.get("commit"):
        problems.append(f"the card says the files are those of commit {claims['published']} but {CONFIG_NAME} "
                        f"records {hub.get('commit')}")
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        result.add(LEVEL, "card", "fail", problems[0] + more)
    else:
        stated = ", ".join(k for k in ("alpha", "method") if k in claims)
        result.add(LEVEL, "card", "pass", f"the card agrees with {CONFIG_NAME} ({stated + ', ' if stated else ''}"
                   f"{len(claims['inputs'])} input(s) and revisions)")


def check_pinned(result: VerifyResult, subject: Subject) -> None:
    """Every recorded input is pinned: a Hub input by a 40-hex commit sha, a local one by its content hash;
    the weight combination (p, lam, eps) of a model is recorded."""
    problems: list[str] = []
    inputs = recorded_inputs(subject.record)
    for role, item in inputs.items():
        revision = str(item.revision)
        if getattr(item, "repo_id", None):
            if not SHA_RE.fullmatch(revision):
                problems.append(f"the {role.replace('_', ' ')} {item.repo_id} is recorded at {revision!r}, a branch or "
                                "tag, not a commit sha")
        elif not LOCAL_RE.fullmatch(revision):
            problems.append(f"the {role.replace('_', ' ')} {item.source} is recorded at {revision!r}, not a content "
                            "hash (sha256:...)")
    weights = getattr(subject.record, "weights", None)
    if subject.record.kind == "model" and weights not in (None, UNSET):
        missing = [k for k in ("p", "lam", "eps") if getattr(weights, k) is UNSET]
        if missing:
            problems.append(f"the weight combination is not recorded ({', '.join(missing)} missing)")
        if weights.method and subject.record.method != f"perta-{weights.method}":
            problems.append(f"method {subject.record.method!r} does not match the weight map's {weights.method!r}")
    if problems:
        result.add(LEVEL, "inputs pinned", "fail", problems[0])
    else:
        result.add(LEVEL, "inputs pinned", "pass", f"{len(inputs)} input(s) pinned by commit sha or content hash")
