"""The Python API of ``perta-hub verify``: :func:`verify`."""

from __future__ import annotations

import hashlib
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from perta_hub.errors import InputError, PertaError
from perta_hub.options.verify import VERIFY
from perta_hub.records import CONFIG_NAME
from perta_hub.verification import integrity, loadable, privacy, provenance
from perta_hub.verification.result import VerifyResult
from perta_hub.verification.sources import InvalidRecord, open_subject, reason, sha256_of

LEVELS = ("integrity", "provenance", "privacy")


def verify(
    model: str | Path,
    *,
    recompute: bool = VERIFY.recompute,
    sample: int | None = VERIFY.sample,
    seed: int | None = VERIFY.seed,
    privacy_level: bool = VERIFY.privacy,
    device: str = VERIFY.device,
    report: str | Path | None = VERIFY.report,
    search: tuple[str | Path, ...] = VERIFY.search,
) -> VerifyResult:
    """Verify a perta-hub output (folder or Hub id ``org/name[@revision]``) against its record.

    Args:
        model: the output folder (``apply``, ``task-vector``, ``compute-weights``, ``finetune``) or Hub repo.
        recompute: recompute every tensor from the recorded inputs and compare bit for bit (provenance).
        sample: recompute only this many tensors, chosen at random with ``seed`` (implies provenance).
        seed: the seed of ``sample`` (default: a fresh random one); recorded in the report.
        privacy_level: check that forget-derived repos are private and the card quotes no forget data.
        device: where the recomputation's fp32 math runs (``auto``, ``cpu``, ``cuda``), as ``apply --device``.
        report: write the JSON audit record to this file.
        search: folders where a local input that moved is looked for by content hash (each, and the folders
            directly inside it), after its recorded path and the output's sibling folders.
    Returns:
        the checks made: ``result.ok`` only when every requested check ran and passed; ``result.exit_code``.
    Raises:
        InputError: bad options, or a ``model`` that is neither a folder nor a repo id (before any work).
            Everything found about the output is a check, not an error.
    """
    from perta_hub.runtime.devices import one_torch_thread, resolve_device

    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise InputError(f"--sample must be a whole number >= 1, got {sample!r}")
    if report is not None and Path(report).expanduser().is_dir():
        raise InputError(f"--report {report} is a folder; give a file name")
    folders = tuple(Path(d).expanduser() for d in search)
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"--search {folder} is not a folder")
    provenance_level = recompute or sample is not None
    device = resolve_device(device) if provenance_level else "cpu"
    seed = seed if seed is not None else secrets.randbelow(2**31)
    start = time.perf_counter()
    result = VerifyResult(str(model), levels=[lv for lv, on in zip(LEVELS, (True, provenance_level, privacy_level),
                                                                   strict=True) if on])
    try:
        subject = open_subject(str(model), with_weights=provenance_level, search=folders)
    except InvalidRecord as err:
        result.add("integrity", "record", "fail", reason(err))
        return _done(result, start, report)
    except InputError:
        raise
    except PertaError as err:
        result.add("integrity", "record", "unverified", f"{model} cannot be verified: {reason(err)}")
        return _done(result, start, report)
    record = subject.record
    result.kind, result.repo_id, result.revision = record.kind, subject.repo_id, subject.revision
    result.inputs = {role: {"source": str(item.source), "repo_id": getattr(item, "repo_id", None),
                            "revision": str(item.revision),
                            **({"path": item.path} if isinstance(getattr(item, "path", None), str) else {})}
                     for role, item in integrity.recorded_inputs(record).items()}
    result.add("integrity", "record", "pass", f"{CONFIG_NAME} is a valid {record.kind.replace('_', ' ')} record "
               f"(written by perta-hub {record.perta_hub_version})")
    names = [n for n in subject.present() if n not in integrity.UNRECORDED and (subject.folder / n).is_file()]
    with ThreadPoolExecutor(1, thread_name_prefix="perta-verify-hash") as hasher:
        hashes = hasher.submit(lambda: {n: sha256_of(subject.folder / n) for n in names})  # beside the recompute
        if provenance_level:
            with one_torch_thread():
                provenance.recompute(result, subject, sample=sample, seed=seed, device=device)
        result.files = hashes.result()
    if not subject.is_hub:  # a local folder's identity: as a local input's (sha256 over name:sha256 lines)
        lines = "".join(f"{name}:{sha}\n" for name, sha in result.files.items())
        result.revision = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    integrity.check_files(result, subject, result.files)
    loadable.check_weight_files(result, subject)
    loadable.check_unrecorded_files(result, subject)
    integrity.check_indexes(result, subject)
    integrity.check_card_matches_record(result, subject)
    integrity.check_pinned(result, subject)
    if privacy_level:
        privacy.check_privacy(result, subject)
    return _done(result, start, report)


def _done(result: VerifyResult, start: float, report: str | Path | None) -> VerifyResult:
    if result.kind is not None:  # the record was read: every requested level must hold a check that ran
        result.cover_levels()
    order = {level: i for i, level in enumerate(LEVELS)}
    result.checks.sort(key=lambda c: order.get(c.level, len(order)))  # stable: by level, then as found
    result.seconds = time.perf_counter() - start
    if report is not None:
        result.write_report(report)
    return result
