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
from perta_hub.merge.apply import merge_summary, resolve_steps
from perta_hub.merge.spec import MergeSpec


@contextmanager
def header_job(spec: MergeSpec, out_dir: str | Path, *, staging: Path | None = None
               ) -> Iterator[tuple[RemoteMergeJob, MergePlan]]:
    """The merge job of ``spec`` with its Hub inputs opened from headers (every compatibility check done, no
    weight downloaded) and its plan; ``staging``: where inputs go (None: a temporary folder, removed afterwards)."""
    temporary = staging is None
    where = Path(tempfile.mkdtemp(prefix="perta-headers-")) if temporary else staging
    assert where is not None
    try:
        job = RemoteMergeJob.of(spec, out_dir, staging=where)
        try:
            yield job, plan_merge(job, spec.max_shard_size)
        finally:
            job.close()
    finally:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


def any_remote(*sources: str | None) -> bool:
    return any(is_remote(s) for s in sources if s is not None)


def run_apply(spec: MergeSpec, o: Any, push: Any, console: Any) -> list[Path] | None:
    """The ``apply`` command's Hub-aware part: returns the output folders when it did the work (dry run:
    ``[]``; streaming: the staging output), None when the plain local apply should run."""
    if o.stream and push.push is None:
        raise InputError("--stream uploads as it merges: give --push REPO")
    if o.stream and (push.create_pr or push.include):
        raise InputError("--stream commits to a branch: leave out --create-pr and --include")
    remote = any_remote(str(spec.model), o.task_vector, o.weights)
    if not (o.dry_run or o.stream or remote):
        return None
    if o.dry_run:
        if spec.steps:
            console.result("--step: alpha is set when the run starts, from one pass over the task vector and the "
                           "weight map")
        with header_job(spec.planned(), o.out_dir) as (job, plan):
            mode = "stream" if o.stream else "local"
            for line in describe(plan, mode=mode, push=push.push, tensors=len(job.target.names),
                                 held=max(job.held_bytes(s) for s in job.streams()[0].specs)):
                console.result(line)
        return []
    stream = o.stream
    if not stream:  # every check, before any weight moves (the streaming run below makes them itself)
        stream = _too_big_for_disk(spec, o, push, remote, console)
    if not stream:
        return None
    if spec.steps or (spec.weights is not None and not is_remote(str(spec.weights))):
        # before anything is written: a local map's zero weights, and --step's alpha (one pass over the task vector
        # and the map); a Hub map is judged by the merge's step norm, before the commit
        with tempfile.TemporaryDirectory(prefix="perta-headers-") as where:
            spec = resolve_steps(spec, o.out_dir, RemoteMergeJob, staging=Path(where))
    with header_job(spec, o.out_dir, staging=staging_for(o.out_dir)) as (job, plan):
        result = stream_apply(job, plan, push.push, private=push.private, revision=push.revision,
                              commit_message=None, progress=console.progress)
    console.result(f"Streamed the unlearned model to {result.repo_id}@{result.revision}: commit {result.commit}; "
                   f"{merge_summary(o.out_dir)}")
    return [Path(o.out_dir)]


def _too_big_for_disk(spec: MergeSpec, o: Any, push: Any, remote: bool, console: Any) -> bool:
    """Check the inputs from their headers; True when the run must stream because the disk cannot hold the
    downloaded inputs and the output (a Hub push, one alpha)."""
    stream = False
    with header_job(spec.planned(), o.out_dir) as (job, plan):
        needed = plan.download_bytes + plan.output_bytes
        if push.push is not None and not stream and remote and free_bytes(Path(o.out_dir)) < needed:
            console.warning(f"the disk under {o.out_dir} cannot hold the inputs and the output ({needed / 1e9:.2f} GB); "
                            "streaming instead (--stream)")
            stream = spec.outputs == 1 and not push.create_pr and not push.include
    return stream
