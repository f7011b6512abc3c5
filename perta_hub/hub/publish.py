"""Everything that talks to the Hugging Face Hub (through ``huggingface_hub``).

Sources are local folders or repo ids, ``org/name`` or ``org/name@revision``. Downloads fetch only the
files a command needs into the HF cache and return the resolved commit sha; ``push_folder`` publishes
an artifact or model folder (private by default for task vectors and weight maps). ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and the usual token sources (``HF_TOKEN``, the login cache) are
respected; tokens are never printed or written anywhere.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.errors import HubError, InputError
from perta_hub.hub.allowlist import plan_upload
from perta_hub.hub.card_check import check_card_before_push
from perta_hub.io.hub_source import _hub_errors, split_repo_id
from perta_hub.io.reader import index_files
from perta_hub.options.push import PUBLISH
from perta_hub.records import CONFIG_NAME, RECORDS, Record, record_of
from perta_hub.runtime.progress import phase

#: remote files a push replaces wholesale: those not in this push's upload are deleted (stale shards, a file
#: of a kind push no longer uploads, such as an optimizer state an older version published).
#: The card (README.md), ``.gitattributes`` and anything else on the repo are never deleted.
STALE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                  "*.ckpt", "*.gguf"]
#: local files never uploaded: hidden files (run markers, ``.*.partial`` temporaries, caches) and locks.
IGNORE_PATTERNS = [".*", "*/.*", "*.partial", "*.lock", "__pycache__/*"]
PUBLISHED_START = "<!-- perta-hub:published -->"
PUBLISHED_END = "<!-- /perta-hub:published -->"


# -- publishing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """What a push did.

    ``commit`` is the commit that holds the pushed files (the one recorded in ``perta_config.json`` and
    the card); ``head`` is the branch (or PR) head afterwards, which may be a later commit that only
    records ``commit``. ``changed`` is False when the repo already held these files. ``left_out``: the
    folder's files not uploaded; ``notes``: one-line remarks for the user (what was left out, a skipped
    card check).
    """

    repo_id: str
    commit: str
    head: str
    revision: str
    url: str
    private: bool | None
    pr_url: str | None
    changed: bool
    #: files of the folder not uploaded (not part of the artifact; ``include`` adds them), relative paths
    left_out: tuple[str, ...] = ()
    #: lines to print: the files left out, a card check that was skipped
    notes: tuple[str, ...] = ()


def folder_kind(folder: str | Path) -> str | None:
    """The ``kind`` recorded in a folder's ``perta_config.json`` (None for a plain folder).

    Raises:
        CheckpointError: a ``perta_config.json`` that does not validate (:func:`perta_hub.records.read_record`).
    """
    record = record_of(folder)
    return record.kind if record else None


def forget_derived(folder: str | Path) -> bool:
    """Whether the folder is derived from the forget data (:meth:`perta_hub.records.Record.forget_derived`: a
    kind declared ``private``, e.g. a task vector, a weight map, a model fine-tuned on the forget data)."""
    return _forget_derived(record_of(folder))


def _forget_derived(record: Record | None) -> bool:
    return record is not None and record.forget_derived()


def resolve_private(folder: str | Path, private: bool | None) -> bool | None:
    """Visibility of a new repo: forget-derived folders (task vectors, weight maps...) are private unless
    ``private=False`` (``--public``); other folders follow ``private`` (None leaves it to the Hub's default,
    public)."""
    return _visibility(record_of(folder), private)


def _visibility(record: Record | None, private: bool | None) -> bool | None:
    if _forget_derived(record):
        return private is not False
    return private


def public_artifact_warning(folder: str | Path, repo_id: str, private: bool | None) -> str | None:
    """The warning to print once when a task vector or weight map is pushed public, else None."""
    record = record_of(folder)
    if record is not None and _forget_derived(record) and private is False:
        return (f"Warning: {repo_id} will be public, but this {record.kind.replace('_', ' ')} is derived from the "
                "forget data and can reveal it; push without --public to keep it private.")
    return None


def default_commit_message(folder: str | Path) -> str:
    """``perta-hub: <the command that made the folder>`` (from ``perta_config.json``), else a plain message."""
    return _commit_message(Path(folder), record_of(folder))


def _commit_message(folder: Path, record: Record | None) -> str:
    command = record.get("command") if record else None
    message = f"perta-hub: {command}" if command else f"Upload {folder.name} with perta-hub"
    return message if len(message) <= 400 else message[:397] + "..."


def push_folder(folder: str | Path, repo_id: str, **options: Any) -> str:
    """Publish a folder to a Hub repo and return the commit sha that holds it (``options``: see :func:`publish`)."""
    return publish(folder, repo_id, **options).commit


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = PUBLISH.private,
    revision: str | None = PUBLISH.revision,
    create_pr: bool = PUBLISH.create_pr,
    commit_message: str | None = PUBLISH.commit_message,
    token: str | None = None,
    include: list[str] | tuple[str, ...] = PUBLISH.include,
    skip_card_check: bool = PUBLISH.skip_card_check,
) -> PushResult:
    """Publish an artifact or model folder: ``create_repo(exist_ok=True)`` then ``upload_folder``.

    Only the artifact's files are uploaded (:func:`perta_hub.hub.allowlist.plan_upload`: the weight files
    the indexes name, config, tokenizer and chat-template files, ``perta_config.json``, ``README.md``,
    ``adapter/``); other files are left out and listed in the result.

    Remote weight files (``*.safetensors``, indexes, ``*.bin``...) that the folder no longer has are
    deleted in the same commit (stale shards of an earlier version); the card and other files stay.
    Files already on the Hub with the same content are not uploaded again, so re-running an
    interrupted push completes it. The commit holding the files is then recorded under ``hub`` in
    the folder's ``perta_config.json`` and in its card, and those two files are pushed in a second,
    small commit (a commit cannot contain its own sha). Re-pushing an unchanged folder makes no commit.

    Args:
        folder: the artifact or model folder.
        repo_id: ``org/name`` (created if missing).
        private: visibility of a new repo; None: private for task vectors and weight maps, the Hub's
            default (public) for models. An existing public repo is refused for a task vector or weight
            map unless ``private=False``.
        revision: a branch to push to (created from ``main`` if missing) or ``refs/pr/N``; default ``main``.
        create_pr: open a pull request against ``main`` instead of committing to it.
        commit_message: default ``perta-hub: <command that made the folder>``.
        token: a write token; default ``HF_TOKEN`` or the login cache.
        include: glob patterns (relative to the folder) of more files to upload.
        skip_card_check: push a forget-derived artifact whose forget data can no longer be read (so its
            card cannot be checked for forget-set examples).
    Raises:
        InputError: the folder is missing or incomplete, the options conflict, an index names a file
            outside the folder, the card is invalid or quotes forget data, or the forget data is unreadable
            without ``skip_card_check``.
        HubError: no or rejected token, no write access, missing repo or revision, network down, Hub errors.
    """
    from huggingface_hub import HfApi, get_token

    folder = Path(folder).expanduser()
    _check_folder(folder)
    record = record_of(folder)
    plan = plan_upload(folder, record.kind if record else None, include)
    if not plan.upload:
        raise InputError(f"{folder} holds none of the files push uploads (weights, config, tokenizer, card); "
                         "add files with --include PATTERN")
    card_note = check_card_before_push(folder, record, skip_card_check=skip_card_check, files=plan.upload)
    notes = tuple(n for n in (plan.left_out_line(), card_note) if n)
    repo_id, at_revision = split_repo_id(repo_id)
    if at_revision and revision and at_revision != revision:
        raise InputError(f"the repo id says @{at_revision} but --revision says {revision}; give one")
    revision = revision or at_revision
    if create_pr and revision not in (None, "main"):
        raise InputError("--create-pr opens a pull request against main; leave out --revision")
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise InputError(f"cannot push to the commit {revision}; give a branch name")
    token = token or get_token()
    if not token:
        raise HubError(f"pushing to {repo_id} needs a Hugging Face token with write access: set HF_TOKEN or run "
                       "`hf auth login`")
    visibility = _visibility(record, private)
    branch = revision or "main"
    api = HfApi(token=token)
    message = commit_message or _commit_message(folder, record)

    with _hub_errors(repo_id, revision, "pushing to"):
        url = str(api.create_repo(repo_id, private=visibility, exist_ok=True))
        info = api.repo_info(repo_id)
        if record is not None and _forget_derived(record) and not info.private and private is not False:
            raise HubError(f"{repo_id} exists and is public, but a {record.kind.replace('_', ' ')} is "
                           "private by default (it is derived from the forget data): make the repo private, push "
                           "to another repo, or pass --public to publish it there anyway")
        if branch != "main" and not branch.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        head_before = api.repo_info(repo_id, revision=branch).sha
        size = sum((folder / name).stat().st_size for name in plan.upload)
        with phase(f"upload to {repo_id} ({len(plan.upload)} files, {size:,} bytes)"):
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=message,
                commit_description=_command_of(folder), revision=None if create_pr else branch, create_pr=create_pr,
                allow_patterns=[glob.escape(name) for name in plan.upload], ignore_patterns=IGNORE_PATTERNS,
                delete_patterns=STALE_PATTERNS,
            )
        pr_url = getattr(commit, "pr_url", None)
        target = getattr(commit, "pr_revision", None) or branch
        changed = commit.oid != head_before or bool(pr_url)
        data_commit = commit.oid if changed else (_recorded_commit(folder, repo_id, target) or commit.oid)
        head = data_commit
        recorded = _record_publication(folder, repo_id, target, data_commit, url)
        if recorded:
            from huggingface_hub import CommitOperationAdd

            ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in recorded]
            head = api.create_commit(repo_id, ops, commit_message=f"Record the published commit {data_commit[:12]}",
                                     revision=target).oid
    return PushResult(repo_id, data_commit, head, target, url, info.private if info else visibility, pr_url, changed,
                      plan.left_out, notes)


def _check_folder(folder: Path) -> None:
    """Refuse a missing folder, one still being written, or one whose index lists missing shards."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; push an artifact or model folder")
    if (folder / ".perta-run").exists():
        raise InputError(f"{folder} is incomplete (its run was interrupted or is still going); re-run the command "
                         "that writes it, then push")
    for index in folder.glob("*.safetensors.index.json"):
        shards = {path.name for path in index_files(index)}  # plain file names inside the folder
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise InputError(f"{folder} is incomplete: {index.name} lists missing shards ({', '.join(missing[:3])}); "
                             "re-run the command that writes it")
    if not any(p.is_file() for p in folder.iterdir()):
        raise InputError(f"{folder} is empty; nothing to push")


def _command_of(folder: Path) -> str:
    record = record_of(folder)
    command = record.get("command") if record else None
    return f"Made with:\n\n```\n{command}\n```\n" if command else ""


def _recorded_commit(folder: Path, repo_id: str, revision: str) -> str | None:
    """The commit an earlier push of this folder to ``repo_id``/``revision`` recorded, if any."""
    record = record_of(folder)
    hub = (record.get("hub") if record else None) or {}
    if hub.get("repo_id") == repo_id and hub.get("revision") == revision and hub.get("commit"):
        return str(hub["commit"])
    return None


def _record_publication(folder: Path, repo_id: str, revision: str, commit: str, url: str) -> list[str]:
    """Write ``hub`` into ``perta_config.json`` and a published line into ``README.md``; names changed."""
    from perta_hub.io.atomic import write_atomic

    record = record_of(folder)
    changed = []
    hub = {"repo_id": repo_id, "revision": revision, "commit": commit, "url": url}
    if record is not None and record.get("hub") != hub:
        write_atomic(folder / CONFIG_NAME, record.with_hub(hub).to_json())
        changed.append(CONFIG_NAME)
    card_path = folder / "README.md"
    if card_path.is_file():
        text = card_path.read_text(encoding="utf-8")
        new = set_published(text, repo_id, revision, commit, record.kind if record else None)
        if new != text:
            write_atomic(card_path, new)
            changed.append("README.md")
    return changed


def set_published(card: str, repo_id: str, revision: str, commit: str, kind: str | None = None) -> str:
    """The card text with its "published" block (between markers) set to this repo and commit.

    The block also says how to use the repo pinned to that commit (``kind`` from ``perta_config.json``): an
    ``apply`` input of the kind's ``apply_option``, else a model loaded with transformers.
    """
    pinned = f"{repo_id}@{commit}"
    option = RECORDS[kind].apply_option if kind in RECORDS else None
    if option:
        needs = "" if option == "--task-vector" else "--task-vector TASK_VECTOR "  # apply always takes one
        usage = f"perta-hub apply MODEL {needs}{option} {pinned} --alpha 1.0 -o OUT"
    else:
        usage = f'AutoModelForCausalLM.from_pretrained("{repo_id}", revision="{commit}")'
    block = (f"{PUBLISHED_START}\nPublished on the Hub as `{repo_id}` (revision `{revision}`); the files are those "
             f"of commit `{commit}`. Pinned to it:\n\n```\n{usage}\n```\n{PUBLISHED_END}")
    pattern = re.compile(re.escape(PUBLISHED_START) + r".*?" + re.escape(PUBLISHED_END), re.DOTALL)
    if pattern.search(card):
        return pattern.sub(lambda _m: block, card)
    return card.rstrip("\n") + "\n\n" + block + "\n"


# -- errors -------------------------------------------------------------------------------------------------
