"""Privacy: the forget-derived repos a record names are private (not readable without a token), and the card
quotes no forget-set example (the scan ``push`` runs, :mod:`perta_hub.hub.card_check`).

Forget-derived: the kinds declared ``private`` in :mod:`perta_hub.records` (task vectors, weight maps, models
fine-tuned on the forget data), and the inputs a record declares ``forget_inputs``, followed one record down.
For an unlearned model these are its task vector, its weight map and the fine-tuned model its task vector was
made from; for a task vector, its fine-tuned model; a forget-derived output verified from the Hub is itself
checked too.
"""

from __future__ import annotations

from typing import Any

from perta_hub.errors import PertaError
from perta_hub.records import ArtifactRef, Record, WeightsRef
from perta_hub.verification.integrity import recorded_inputs
from perta_hub.verification.locate import InputSearch
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


def _forget_derived(result: VerifyResult, subject: Subject) -> tuple[list[tuple[str, Any]], list[Record]]:
    """(role, recorded input) of each forget-derived Hub or local input, and each record whose forget data the
    card is scanned against."""
    record = subject.record
    derived: list[tuple[str, Any]] = []
    records: list[Record] = [record] if record.private else []
    _forget_inputs(result, record, derived, records, subject.inputs)
    return derived, records


def _forget_inputs(result: VerifyResult, record: Record, derived: list[tuple[str, Any]], records: list[Record],
                   where: InputSearch, parent: str | None = None) -> None:
    """Add ``record``'s forget-derived inputs (its ``forget_inputs``) and, where readable, their records, then
    theirs (an unlearned model's task vector, then the task vector's fine-tuned model).

    An artifact input (recorded as an artifact reference: a task vector, a weight map) always has a record: one
    that cannot be read is a check left unverified. A model input may be a plain model without one, or gone
    (its data is recorded elsewhere).
    """
    inputs = recorded_inputs(record)
    for role in type(record).forget_inputs:
        if role not in inputs:
            continue
        item = inputs[role]
        derived.append((role if parent is None else f"{role} model (of the {parent.replace('_', ' ')})", item))
        try:
            sub = input_record(item, where)[1]
        except PertaError as err:
            if isinstance(item, (ArtifactRef, WeightsRef)):
                result.add(LEVEL, f"{role} record", "unverified", f"cannot read the {role.replace('_', ' ')}'s "
                           f"record to find its fine-tuned model and forget data ({reason(err)})")
            continue
        records.append(sub)
        _forget_inputs(result, sub, derived, records, where, role)


def check_repos(result: VerifyResult, subject: Subject, derived: list[tuple[str, Any]]) -> None:
    """One line per forget-derived repo: private (pass), public (fail), local (not checked), unknown."""
    repos: list[tuple[str, str | None, str]] = []
    if subject.is_hub and subject.record.private:
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


def check_card_scan(result: VerifyResult, subject: Subject) -> None:
    """The card is valid for the Hub, and neither it nor any other published text file quotes the forget data of
    the output or of its forget-derived inputs: the rule ``push`` applies
    (:func:`perta_hub.hub.card_check.scan_folder`), over the files ``push`` would upload (a local folder) or every
    text file of the repo at the verified commit (downloaded)."""
    from perta_hub.cards.render import hub_metadata_problems
    from perta_hub.hub.allowlist import plan_upload
    from perta_hub.hub.card_check import quote_message, scan_folder

    card = subject.folder / "README.md"
    if card.is_file():
        problems = hub_metadata_problems(card.read_text(encoding="utf-8"))
        if problems:
            result.add(LEVEL, "card scan", "fail", f"the card is invalid for the Hub: {'; '.join(problems)}")
            return
    folder = subject.folder
    try:
        if subject.is_hub:
            folder, files = _published_text_files(subject)
        else:
            files = plan_upload(folder, subject.record.kind).upload
    except PertaError as err:
        result.add(LEVEL, "card scan", "unverified" if subject.is_hub else "fail",
                   f"cannot {'download the published' if subject.is_hub else 'list the'} text files ({reason(err)})")
        return
    scan = scan_folder(folder, subject.record, files, subject.inputs)
    if scan.missing:
        result.add(LEVEL, "card scan", "unverified", f"cannot check the card for forget-set examples: {scan.missing}")
    elif not scan.scanned:
        result.add(LEVEL, "card scan", "skipped", "the output has no card (README.md) or other text file")
    elif not scan.texts:
        kind = type(subject.record)
        derives = bool(kind.forget_data_keys or kind.forget_inputs)  # the kind's definition, not the record's keys
        result.add(LEVEL, "card scan", "unverified" if derives else "skipped",
                   "no forget data is recorded by the output or its inputs, so the card cannot be scanned for it"
                   + (f" (a {subject.record.kind.replace('_', ' ')} derives from forget data; --no-privacy verifies "
                      "without this level)" if derives else ""))
    elif scan.quoted:
        result.add(LEVEL, "card scan", "fail", f"{quote_message(subject.folder, scan)}; remove them")
    else:
        others = len(scan.scanned) - ("README.md" in scan.scanned)
        what = "the card quotes" if "README.md" in scan.scanned else f"the {others} published text file(s) quote"
        tail = f" (nor do the {others} other published text file(s))" if "README.md" in scan.scanned else ""
        result.add(LEVEL, "card scan", "pass", f"{what} none of the {scan.texts} forget-set questions and answers"
                   + tail)


def _published_text_files(subject: Subject) -> tuple[Any, list[str]]:
    """Download every text file (not a weight file) of the Hub repo at the verified commit: (snapshot, names)."""
    import glob

    from perta_hub.hub.allowlist import folder_files
    from perta_hub.hub.card_check import BINARY_SUFFIXES
    from perta_hub.io import hub_source as hub

    if subject.remote is None:
        return subject.folder, folder_files(subject.folder)
    names = sorted(n for n in subject.remote if n != ".gitattributes" and not n.lower().endswith(BINARY_SUFFIXES))
    folder, _ = hub.download(f"{subject.repo_id}@{subject.revision}", [glob.escape(n) for n in names])
    return folder, names


def check_privacy(result: VerifyResult, subject: Subject) -> None:
    """The privacy level."""
    derived, _ = _forget_derived(result, subject)
    check_repos(result, subject, derived)
    check_card_scan(result, subject)
