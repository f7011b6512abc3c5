"""How selective is a weight map? ``w = I_f^p / (I_f^p + lam I_r^p + eps)`` per module type and layer.

    python benchmarks/weight_map_summary.py WEIGHT_MAP [--task-vector TV] [--p P --lam L --eps E] [--json OUT]

Prints :func:`perta_hub.importance.summary.summarise_folder` as a table (the same table ``compute-weights``
writes into the map's card at its own p, lam, eps): mean of ``w``, shares above 0.5 and below 0.1, a histogram,
per module type and per layer; with ``--task-vector`` also ``||w ⊙ tau|| / ||tau||`` (the step of PerTA at
alpha relative to TV's). ``--p/--lam/--eps`` try other combinations of the same importances without re-running.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perta_hub.importance.summary import selectivity_markdown, summarise_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weight_map", type=Path)
    parser.add_argument("--task-vector", type=Path)
    parser.add_argument("--p", type=float)
    parser.add_argument("--lam", type=float)
    parser.add_argument("--eps", type=float)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    summary = summarise_folder(args.weight_map, args.task_vector, p=args.p, lam=args.lam, eps=args.eps)
    print(f"{summary['weight_map']} ({summary['method']})\n")
    print(selectivity_markdown(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
