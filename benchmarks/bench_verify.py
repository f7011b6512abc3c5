"""Benchmark: ``perta-hub verify --recompute`` of an unlearned model against the ``apply`` that wrote it.

Uses the synthetic inputs of ``bench_apply.py`` (cached in ``.bench_cache/``; default ~1.1B parameters, bf16,
500 MB shards: target, fp32 task vector, weight map). Each round, as fresh processes with the inputs warmed
into the page cache first: ``perta-hub apply TARGET --task-vector TV --weights WM`` into a scratch folder, then
``perta-hub verify OUT --recompute --no-privacy`` of that folder (every tensor recomputed and compared bit for
bit, every file hashed, the card checked; the synthetic inputs record no forget data, so the privacy level would
be NOT VERIFIED, exit 3). Prints both walls and peak RSS side by side and the ratio.

    python benchmarks/bench_verify.py                       # the 1B model of issue 16 (target <= 1.5x)
    python benchmarks/bench_verify.py --layers 2 --repeat 1  # a quick run
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import ROOT, add_model_args, build_inputs, llama_shapes, run, warm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is printed")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench_cache")
    args = parser.parse_args()

    target, _tuned, tv, _tv_bf16, wm = build_inputs(args.cache, args)
    n_params = sum(__import__("math").prod(s) for _, s in
                   llama_shapes(args.hidden, args.layers, args.intermediate, args.vocab))
    print(f"model: {n_params / 1e9:.2f}B parameters, bf16, {args.shard_mb} MB shards, device {args.device}")
    perta = [sys.executable, "-m", "perta_hub"]
    apply_walls, verify_walls, apply_rss, verify_rss = [], [], [], []
    with tempfile.TemporaryDirectory(dir=args.cache) as scratch:
        out = Path(scratch) / "out"
        for round_ in range(1, args.repeat + 1):
            warm(target, tv, wm)
            wall, rss, _cpu = run([*perta, "apply", str(target), "--task-vector", str(tv), "--weights", str(wm),
                             "--alpha", "1.0", "--device", args.device, "--max-shard-size", f"{args.shard_mb}MB",
                             "-o", str(out)])
            apply_walls.append(wall)
            apply_rss.append(rss)
            print(f"round {round_}: perta-hub apply (tv + weights)   wall {wall:7.2f} s   peak RSS {rss:5.2f} GB",
                  flush=True)
            warm(target, tv, wm, out)
            wall, rss, _cpu = run([*perta, "verify", str(out), "--recompute", "--no-privacy", "--device", args.device,
                             "--report", str(Path(scratch) / "audit.json")])
            verify_walls.append(wall)
            verify_rss.append(rss)
            print(f"round {round_}: perta-hub verify --recompute    wall {wall:7.2f} s   peak RSS {rss:5.2f} GB",
                  flush=True)
            shutil.rmtree(out)
    a, v = statistics.median(apply_walls), statistics.median(verify_walls)
    print(f"median of {args.repeat} run(s) each")
    print(f"{'perta-hub apply (tv + weights)':36s} wall {a:7.2f} s   peak RSS {max(apply_rss):5.2f} GB")
    print(f"{'perta-hub verify --recompute':36s} wall {v:7.2f} s   peak RSS {max(verify_rss):5.2f} GB")
    print(f"{'verify --recompute / apply':36s} {v / a:5.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
