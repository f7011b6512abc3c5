"""Peak memory of this process: CUDA max allocated on a GPU, else the operating system's max RSS."""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_memory(device: Any) -> tuple[int, str]:
    """(peak bytes, what was measured) for ``device`` (a ``torch.device`` or a string such as ``"cuda"``).

    On a GPU: ``torch.cuda.max_memory_allocated(device)`` (``"GPU max allocated"``); elsewhere the process's
    maximum resident set size (``"max RSS"``; ``ru_maxrss`` is in KiB on Linux, bytes on macOS).
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "GPU max allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "max RSS"


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (GiB), without importing torch."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss * (1 if sys.platform == "darwin" else 1024) / 2**30, 2)
