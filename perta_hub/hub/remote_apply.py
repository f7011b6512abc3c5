"""``apply`` with Hub inputs: the header check, ``--dry-run``, and the choice between local and streaming mode."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.hub.remote_headers import is_remote
from perta_hub.hub.stream import RemoteMergeJob, staging_for, stream_apply
from perta_hub.hub.stream_plan import MergePlan, describe, free_bytes, plan_merge


@contextmanager
def header_job(model: str, task_vector: str, *, weights: str | None, alphas: list[Any], out_dir: str | Path,
               p: float | None, lam: float | None, eps: float | None, device: str, max_shard_size: int | str,
               allow_pickle: bool, staging: Path | None = None) -> Iterator[tuple[RemoteMergeJob, MergePlan]]:
    """The merge job with its Hub inputs opened from headers (every compatibility check done, no weight
    downloaded) and its plan; ``staging``: where inputs go (None: a temporary folder, removed afterwards)."""
    temporary = staging is None
    where = Path(tempfile.mkdtemp(prefix="perta-headers-")) if temporary else staging
    assert where is not None
    try:
        job = RemoteMergeJob(model, task_vector, alphas=alphas, out_dir=out_dir, weights=weights, p=p, lam=lam,
                             eps=eps, device=device, max_shard_size=max_shard_size, allow_pickle=allow_pickle,
                             staging=where)
        try:
            yield job, plan_merge(job, max_shard_size)
        finally:
            job.close()
    finally:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


def any_remote(*sources: str | None) -> bool:
    return any(is_remote(s) for s in sources if s is not None)


def run_apply(model: str, o: Any, push: Any, console: Any) -> list[Path] | None:
    """The ``apply`` command's Hub-aware part: returns the output folders when it did the work (dry run:
    ``[]``; streaming: the staging output), None when the plain local apply should run."""
    common = dict(weights=o.weights, alphas=list(o.alphas), out_dir=o.out_dir, p=o.p, lam=o.lam, eps=o.eps,
                  device=o.device, max_shard_size=o.max_shard_size, allow_pickle=o.allow_pickle)
    if o.stream and push.push is None:
        raise InputError("--stream uploads as it merges: give --push REPO")
    if o.stream and (push.create_pr or push.include):
        raise InputError("--stream commits to a branch: leave out --create-pr and --include")
    remote = any_remote(model, o.task_vector, o.weights)
    if not (o.dry_run or o.stream or remote):
        return None
    if o.dry_run:
        with header_job(model, o.task_vector, **common) as (job, plan):
            mode = "stream" if o.stream else "local"
            for line in describe(plan, mode=mode, push=push.push, tensors=len(job.target.names),
                                 held=max(job.held_bytes(s) for s in job.streams()[0].specs)):
                console.result(line)
        return []
    stream = o.stream
    if not stream:  # every check, before any weight moves (the streaming run below makes them itself)
        stream = _too_big_for_disk(model, o, push, common, remote, console)
    if not stream:
        return None
    with header_job(model, o.task_vector, **common, staging=staging_for(o.out_dir)) as (job, plan):
        result = stream_apply(job, plan, push.push, private=push.private, revision=push.revision,
                              commit_message=None, progress=console.progress)
    console.result(f"Streamed the unlearned model to {result.repo_id}@{result.revision}: commit {result.commit}")
    return [Path(o.out_dir)]


def _too_big_for_disk(model: str, o: Any, push: Any, common: dict[str, Any], remote: bool, console: Any) -> bool:
    """Check the inputs from their headers; True when the run must stream because the disk cannot hold the
    downloaded inputs and the output (a Hub push, one alpha)."""
    stream = False
    with header_job(model, o.task_vector, **common) as (job, plan):
        needed = plan.download_bytes + plan.output_bytes
        if push.push is not None and not stream and remote and free_bytes(Path(o.out_dir)) < needed:
            console.warning(f"the disk under {o.out_dir} cannot hold the inputs and the output ({needed / 1e9:.2f} GB); "
                            "streaming instead (--stream)")
            stream = len(o.alphas) == 1 and not push.create_pr and not push.include
    return stream
