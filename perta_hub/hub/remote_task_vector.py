"""``task-vector --base A --finetuned B --dry-run``: both checkpoints checked from their headers, the plan printed.

The job is :class:`~perta_hub.merge.task_vector.TaskVectorJob` itself, its Hub checkpoints opened from their
safetensors headers (:class:`~perta_hub.hub.source.HubSource`) into a temporary folder, so every check
(architecture, names, shapes, float dtypes) runs having downloaded only headers and small JSON files; then the
engine's plan of the (local) run is printed (:func:`perta_hub.hub.stream_plan.describe`: the inputs are
downloaded in full into the HF cache, the artifact written, then pushed with ``--push``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from perta_hub.hub.source import HubSource
from perta_hub.hub.stream_plan import describe
from perta_hub.jobs.plan import plan_job
from perta_hub.jobs.sink import Sink
from perta_hub.merge.task_vector import TaskVectorJob


def dry_run(o: Any, push: str | None, console: Any) -> None:
    """Check ``o.base`` and ``o.finetuned`` (task-vector options) from headers and print the plan; write nothing."""
    staging = Path(tempfile.mkdtemp(prefix="perta-headers-"))
    try:
        with HubSource(staging) as source:
            job = TaskVectorJob(o.base, o.finetuned, o.out_dir, dtype=o.dtype, max_shard_size=o.max_shard_size,
                                allow_pickle=o.allow_pickle, extra_provenance=None, source=source)
            try:
                plan = plan_job(job, o.max_shard_size, Sink())
                held = max((job.held_bytes(n) for n in job.anchor.names), default=0)
                for line in describe(plan, mode="local", push=push, tensors=len(job.anchor.names),
                                     disk=plan.fetch_bytes + plan.output_bytes, overlapped=False,
                                     disk_note="the inputs downloaded in full (HF cache) + the whole output",
                                     held=held):
                    console.result(line)
            finally:
                job.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
