"""Privacy: the forget-derived repos a record names are private (not readable without a token), and the card
quotes no forget-set example (the scan ``push`` runs, :mod:`perta_hub.hub.card_check`).

Forget-derived: task vectors, weight maps and models fine-tuned on the forget data (``PRIVATE_KINDS`` of
:mod:`perta_hub.hub.publish`). For an unlearned model these are its task vector, its weight map and the
fine-tuned model its task vector was made from; for a task vector, its fine-tuned model; a forget-derived
output verified from the Hub is itself checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perta_hub.errors import PertaError
from perta_hub.records import UNSET
from perta_hub.verification.integrity import recorded_inputs
from perta_hub.verification.result import VerifyResult
from perta_hub.verification.sources import Subject, input_record, reason

LEVEL = "privacy"


def anonymous_access(repo_id: str) -> tuple[bool | None, str]:
    """Whether anyone can read ``repo_id`` without a token: (True/False, detail), or (None, why unknown)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, token=False)
    except (RepositoryNotFoundError, GatedRepoError):
        return False, "not readable without a token"
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403, 404):
            return False, f"not readable without a token (HTTP {status})"
        return None, f"the Hub answered HTTP {status}"
    except Exception as err:  # noqa: BLE001 - offline mode, network errors: the check could not be made
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    return True, "readable by anyone, without a token"


def _forget_derived(result: VerifyResult, subject: Subject) -> tuple[list[tuple[str, Any]], list[tuple[Path, str]]]:
    """(role, recorded input) of each forget-derived Hub or local input, and (folder, kind) of each record whose
    forget data the card is scanned against."""
    record = subject.record
    inputs = recorded_inputs(record)
    derived: list[tuple[str, Any]] = []
    records: list[tuple[Path, str]] = []
    if record.kind in ("task_vector", "weight_map", "finetuned_model"):
        records.append((subject.folder, record.kind))
    if record.kind == "model":
        for role in ("task_vector", "weights"):
            if role not in inputs:
                continue
            derived.append((role, inputs[role]))
            try:
                folder, sub = input_record(inputs[role])
            except PertaError as err:
                result.add(LEVEL, f"{role} record", "unverified", f"cannot read the {role.replace('_', ' ')}'s record "
                           f"to find its fine-tuned model and forget data ({reason(err)})")
                continue
            records.append((folder, sub.kind))
            finetuned = getattr(sub, "finetuned", UNSET)
            if finetuned is not UNSET and finetuned is not None:
                derived.append(("finetuned model (of the task vector)", finetuned))
                _finetuned_record(finetuned, records)
    elif record.kind == "task_vector" and "finetuned" in inputs:
        derived.append(("finetuned", inputs["finetuned"]))
        _finetuned_record(inputs["finetuned"], records)
    return derived, records


def _finetuned_record(item: Any, records: list[tuple[Path, str]]) -> None:
    """Add a fine-tuned model's folder to the card scan when its record can be read (it records its data)."""
    try:
        folder, sub = input_record(item)
    except PertaError:
        return  # a plain model without a perta-hub record, or one that is gone: its data is recorded elsewhere
    records.append((folder, sub.kind))


def check_repos(result: VerifyResult, subject: Subject, derived: list[tuple[str, Any]]) -> None:
    """One line per forget-derived repo: private (pass), public (fail), local (not checked), unknown."""
    from perta_hub.hub.publish import PRIVATE_KINDS

    repos: list[tuple[str, str | None, str]] = []
    if subject.is_hub and subject.record.kind in PRIVATE_KINDS:
        repos.append((f"this {subject.record.kind.replace('_', ' ')}", subject.repo_id, subject.source))
    for role, item in derived:
        repo_id = getattr(item, "repo_id", None)
        repos.append((role.replace("_", " "), repo_id.partition("@")[0] if repo_id else None, str(item.source)))
    if not repos:
        result.add(LEVEL, "private inputs", "skipped", "the record names no forget-derived input "
                   "(task vector, weight map or fine-tuned model)")
    for role, repo_id, source in repos:
        name = f"{role} private"
        if repo_id is None:
            result.add(LEVEL, name, "skipped", f"{source} is a local folder, not a Hub repo: nothing published to check")
            continue
        public, detail = anonymous_access(repo_id)
        if public is None:
            result.add(LEVEL, name, "unverified", f"cannot tell whether {repo_id} is private ({detail})")
        elif public:
            result.add(LEVEL, name, "fail", f"{repo_id} is public ({detail}), but it is derived from the forget data; "
                       "make it private")
        else:
            result.add(LEVEL, name, "pass", f"{repo_id} is {detail}")


def check_card_scan(result: VerifyResult, subject: Subject, records: list[tuple[Path, str]]) -> None:
    """The card is valid for the Hub and quotes none of the forget data the output and its inputs record."""
    from perta_hub.cards.render import find_forget_examples, hub_metadata_problems
    from perta_hub.hub.card_check import FORGET_DATA_KEYS, forget_texts

    card = subject.folder / "README.md"
    if not card.is_file():
        result.add(LEVEL, "card scan", "skipped", "the output has no card (README.md)")
        return
    text = card.read_text(encoding="utf-8")
    problems = hub_metadata_problems(text)
    if problems:
        result.add(LEVEL, "card scan", "fail", f"the card is invalid for the Hub: {'; '.join(problems)}")
        return
    texts: list[str] = []
    for folder, kind in records:
        if kind not in FORGET_DATA_KEYS:
            continue
        found = forget_texts(folder, kind)
        if found.missing:
            result.add(LEVEL, "card scan", "unverified", f"cannot check the card for forget-set examples: "
                       f"{found.missing}")
            return
        texts += found.texts
    if not texts:
        result.add(LEVEL, "card scan", "skipped", "no forget data is recorded by the output or its inputs, so the "
                   "card cannot be scanned for it")
        return
    quoted = find_forget_examples(text, texts)
    if quoted:
        result.add(LEVEL, "card scan", "fail", f"the card quotes {len(quoted)} forget-set example(s) (first: text "
                   f"#{quoted[0]} of the forget data); remove them")
    else:
        result.add(LEVEL, "card scan", "pass", f"the card quotes none of the {len(texts)} forget-set questions and "
                   "answers")


def check_privacy(result: VerifyResult, subject: Subject) -> None:
    """The privacy level."""
    derived, records = _forget_derived(result, subject)
    check_repos(result, subject, derived)
    check_card_scan(result, subject, records)
