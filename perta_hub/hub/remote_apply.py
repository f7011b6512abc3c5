"""``apply`` with Hub inputs, ``--stream`` or ``--dry-run``: one merge job, its source and its sink chosen here.

The job is :class:`~perta_hub.merge.apply.PerTAMergeJob` of the command's :class:`~perta_hub.merge.spec.MergeSpec`,
its inputs opened through a :class:`~perta_hub.hub.source.HubSource`: Hub inputs from their headers (every check
of ``apply`` runs once, before a weight is downloaded), their files fetched beside the output as the merge reads
them. The sink is the local output folder, or with ``--stream`` (chosen automatically when ``--push`` is given
and the disk cannot hold the run) a :class:`~perta_hub.hub.sink.HubSink` that uploads each shard as it is
written and commits the folder. ``--dry-run`` prints the engine's plan of that run and writes nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.hub.remote_headers import is_remote
from perta_hub.hub.sink import STATE, HubSink
from perta_hub.hub.source import HubSource, staging_for
from perta_hub.hub.stream_plan import INPUT_AHEAD, OUTPUT_SLOTS, describe, free_bytes, save_rates
from perta_hub.jobs.plan import plan_job
from perta_hub.jobs.sink import Sink
from perta_hub.merge.apply import PerTAMergeJob, merge_summary, run_merge
from perta_hub.merge.spec import MergeSpec
from perta_hub.runtime.buffers import gc_paused


def needs_hub_route(spec: MergeSpec, o: Any, push: Any) -> bool:
    """Whether ``apply`` runs here (a Hub input, ``--stream`` or ``--dry-run``); refuses ``--stream`` options that
    cannot work."""
    if o.stream and push.push is None:
        raise InputError("--stream uploads as it merges: give --push REPO")
    if o.stream and (push.create_pr or push.include):
        raise InputError("--stream commits to a branch: leave out --create-pr and --include")
    return o.dry_run or o.stream or any(is_remote(s) for s in (spec.model, spec.task_vector, spec.weights)
                                        if s is not None)


def _sink(stream: bool, push: Any, staging: Path) -> Sink:
    if not stream:
        return Sink()
    return HubSink(push.push, private=push.private, revision=push.revision, skip_card_check=push.skip_card_check,
                   state_dir=staging)


def dry_run(spec: MergeSpec, o: Any, push: Any, console: Any) -> None:
    """Open the job from headers (into a temporary folder), print the plan of the run ``o`` asks for."""
    if spec.steps:
        console.result("--step: alpha is set when the run starts, from one pass over the task vector and the "
                       "weight map")
    staging = Path(tempfile.mkdtemp(prefix="perta-headers-"))
    try:
        with HubSource(staging) as source:
            job = PerTAMergeJob(spec, o.out_dir, source=source)
            try:
                plan = plan_job(job, spec.max_shard_size, _sink(o.stream, push, staging))
                note = (f"{OUTPUT_SLOTS} output shards + the inputs of {INPUT_AHEAD + 1} output shards (inputs deleted "
                        "after their last shard, outputs after their upload)" if o.stream else
                        f"the whole output + the inputs of {INPUT_AHEAD + 1} output shards (inputs deleted after "
                        "their last shard)")
                for line in describe(plan, mode="stream" if o.stream else "local", push=push.push,
                                     tensors=len(job.target.names), disk=plan.needed_bytes, disk_note=note,
                                     overlapped=True, held=max(job.held_bytes(s) for s in job.streams()[0].specs)):
                    console.result(line)
            finally:
                job.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def apply_from_hub(spec: MergeSpec, o: Any, push: Any, console: Any) -> tuple[list[Path], bool]:
    """Run the merge with its inputs from a :class:`HubSource`; returns the output folders and whether they were
    published already (streamed to ``--push``)."""
    staging = staging_for(o.out_dir)
    try:
        with gc_paused(), HubSource(staging) as source:
            job = PerTAMergeJob(spec, o.out_dir, source=source)  # every check, once, from the headers
            try:
                stream = o.stream or _too_big_for_disk(job, o, push, console)
                job.prepare(whole_inputs=not stream)  # a streaming run stages no whole input (its disk bound)
            except BaseException:
                job.close()
                raise
            sink = _sink(stream, push, staging)
            start = time.perf_counter()
            outs = run_merge(job, sink=sink, progress=console.progress)
            wall = time.perf_counter() - start
    except BaseException:
        if not _resumable(staging):  # only the small files of the headers: leave nothing behind
            shutil.rmtree(staging, ignore_errors=True)
        raise
    upload = getattr(sink, "upload_stats", None)
    save_rates(download=source.rate(), merge=job.target.total_bytes * len(job.alphas) / wall if wall else 0,
               upload=upload["upload_bytes"] / upload["upload_s"] if upload and upload["upload_s"] else 0)
    if not isinstance(sink, HubSink):
        return outs, False
    for note in sink.notes:
        console.warning(note)
    result = sink.result
    console.result(f"Streamed the unlearned model to {result.repo_id}@{result.revision}: commit {result.commit}; "
                   f"{merge_summary(o.out_dir)}")
    return outs, True


def _resumable(staging: Path) -> bool:
    """Whether a failed run left something a re-run resumes from: downloaded weights, or uploads to commit."""
    return any(staging.rglob("*.safetensors")) or (staging / STATE).is_file()


def _too_big_for_disk(job: PerTAMergeJob, o: Any, push: Any, console: Any) -> bool:
    """True when the run must stream: a Hub push of one output whose inputs are on the Hub, and the disk under
    ``-o`` cannot hold the output and the inputs being read."""
    if push.push is None:
        return False
    plan = plan_job(job, job.spec.max_shard_size, Sink())
    if not plan.fetch_bytes or free_bytes(Path(o.out_dir)) >= plan.needed_bytes:
        return False
    console.warning(f"the disk under {o.out_dir} cannot hold the output and the inputs being read "
                    f"({plan.needed_bytes / 1e9:.2f} GB); streaming instead (--stream)")
    return job.requested.outputs == 1 and not push.create_pr and not push.include
