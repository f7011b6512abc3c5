"""The bounds of the streaming modes, the transfer rates they measure, and the plan ``--dry-run`` prints.

The plan itself (output shards, the input files each one reads, the local disk a run needs) is the engine's
(:func:`perta_hub.jobs.plan.plan_job`); this module holds the streaming modes' bounds (:data:`OUTPUT_SLOTS`,
:data:`INPUT_AHEAD`), the rates a run measured for the time estimate, and :func:`describe`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from perta_hub.io.writer import IN_FLIGHT_BYTES
from perta_hub.jobs.plan import JobPlan

#: output shards that may be on local disk at once in the streaming mode (written, queued, uploading)
OUTPUT_SLOTS = 3
#: output shards whose inputs may be on local disk at once (the one merged and the next one)
INPUT_AHEAD = 1


# -- measured rates ----------------------------------------------------------------------------------------


def rates_path() -> Path:
    """Where measured transfer and merge rates are kept (``$HF_HOME/perta-hub/rates.json``; ``HF_HOME`` defaults,
    as in huggingface_hub, to ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(home).expanduser() / "perta-hub" / "rates.json"


def load_rates() -> dict[str, float]:
    """Bytes per second measured by earlier runs: ``download``, ``upload``, ``merge`` (missing if never measured)."""
    try:
        data = json.loads(rates_path().read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v > 0}
    except (OSError, ValueError):
        return {}


def save_rates(**rates: float) -> None:
    """Remember measured rates (bytes/s) for the time estimates of later dry runs."""
    from perta_hub.io.atomic import write_atomic

    current = load_rates()
    current.update({k: v for k, v in rates.items() if v and v > 0})
    path = rates_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(current, indent=2) + "\n")
    except OSError:
        pass  # an estimate is a convenience


# -- the dry-run report --------------------------------------------------------------------------------------


def describe(plan: JobPlan, *, mode: str, push: str | None, tensors: int, disk: int, disk_note: str,
             overlapped: bool, in_flight_bytes: int = IN_FLIGHT_BYTES, held: int = 0) -> list[str]:
    """The lines ``--dry-run`` prints: tensors and shards, bytes to download and upload, peak disk (``disk``
    bytes, how it is made up in ``disk_note``) and RAM, time. ``overlapped``: downloads overlap the merge (inputs
    fetched as the merge reads them; the upload follows, or overlaps too in the streaming mode)."""
    gb = 1e9
    download = plan.fetch_bytes
    upload = plan.output_bytes if push else 0
    files = plan.files
    ram = in_flight_bytes + held
    shards = max((len(p.shards) for p in plan.streams), default=0)
    lines = [
        f"mode: {mode}" + (f" (push to {push})" if push else ""),
        f"tensors: {tensors}, output shards: {shards} x {plan.outputs} output(s), input files: {len(files)}",
        f"download: {download / gb:.3f} GB ({sum(1 for f in files.values() if f.fetched)} "
        f"remote input files; {plan.input_bytes / gb:.3f} GB of inputs in all)",
        f"upload: {upload / gb:.3f} GB",
        f"write: {plan.output_bytes / gb:.3f} GB",
        f"peak local disk: {disk / gb:.3f} GB ({disk_note})",
        f"peak RAM: about {ram / gb:.3f} GB (tensors in flight, bounded by {in_flight_bytes / gb:.3f} GB, plus the "
        "largest tensor's inputs and results)",
    ]
    rates = load_rates()
    parts = {"download": download, "upload": upload, "merge": plan.output_bytes}
    if all(parts[k] == 0 or k in rates for k in parts):
        times = {k: parts[k] / rates[k] if parts[k] else 0.0 for k in parts}
        if mode == "stream":
            total, how = max(times.values()), "the slowest stage (they overlap)"
        elif overlapped:
            total = max(times["download"], times["merge"]) + times["upload"]
            how = "the slower of download and merge (they overlap) + upload"
        else:
            total, how = sum(times.values()), "download + merge + upload"
        lines.append(f"time: about {total:.0f} s ({how}, from rates measured earlier: "
                     + ", ".join(f"{k} {rates[k] / 1e6:.0f} MB/s" for k in parts if parts[k]) + ")")
    else:
        missing = ", ".join(k for k in parts if parts[k] and k not in rates)
        lines.append(f"time: unknown (no measured {missing} rate yet; a run with Hub inputs records them in "
                     f"{rates_path()})")
    return lines


def free_bytes(path: Path) -> int:
    """Free bytes of the file system that holds ``path`` (or its nearest existing parent)."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    st = os.statvfs(existing)
    return st.f_bavail * st.f_frsize
