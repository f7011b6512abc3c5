"""What the demos share: the step timer (each named step echoed, its wall time and the peak RSS after it kept;
also used by ``examples/investigate_perta.py``) and pieces of the report's setup (the weight maps' line, epochs)."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Steps:
    """Runs the demo's named steps, echoing each and keeping its wall time (s) and the process's peak RSS after
    it (GiB) in :attr:`timings` and :attr:`peaks`."""

    echo: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"== {name}")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.peaks[name] = peak_rss_gib()
        self.echo(f"   {name}: {self.timings[name]:.1f} s (peak RSS so far {self.peaks[name]:.2f} GiB)")
        return result

    def with_total(self) -> dict[str, float]:
        """The step timings and ``total``: seconds since this object was made."""
        return {**self.timings, "total": round(time.perf_counter() - self.start, 1)}


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (GiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def weight_map_rows(maps: dict[str, Path]) -> str:
    """``grad and fisher importances at the target: N forget rows against M retain rows``, from the maps' records."""
    record = json.loads((next(iter(maps.values())) / "perta_config.json").read_text())
    return (f"{' and '.join(maps)} importances at the target: {record['forget_data']['num_examples']} forget rows "
            f"against {record['retain_data']['num_examples']} retain rows")


def epoch_count(n: float) -> str:
    """``1 epoch``, ``2.5 epochs``."""
    return f"{n:g} epoch" + ("" if n == 1 else "s")
