"""What does ``evaluate`` cost, against another source tree (e.g. before the MIA attacks)?

    python benchmarks/bench_evaluate.py [--repeat 3] [--max-examples 40] [--max-new-tokens 32] \
        [--compare-src /path/to/other/worktree]

Builds the tiny test Llama (``perta_hub.demo.tiny``: hidden 32, 2 layers, vocab 384), then in a fresh process per
source tree loads it once, runs :func:`perta_hub.evaluation.tofu.evaluate_tofu` once to warm up and ``--repeat``
more times on the bundled TOFU forget01 (first ``--max-examples`` rows of every split), one torch thread. Prints
each tree's median CPU seconds (``time.process_time``: robust to other jobs on a shared machine) and wall
seconds, then the ratio this / other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOFU = REPO / "perta_hub" / "resources" / "tofu"

RUN = """
import json, sys, time
import torch
torch.set_num_threads(1)
from perta_hub.evaluation.scoring import load_model
from perta_hub.evaluation.tofu import evaluate_tofu
model, tofu, n, tokens, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lm = load_model(model, device="cpu")
kw = dict(forget_split="forget01", data_dir=tofu, max_examples=n, max_new_tokens=tokens, progress=False)
evaluate_tofu(lm, **kw)
cpu, wall = [], []
for _ in range(repeat):
    c, w = time.process_time(), time.perf_counter()
    evaluate_tofu(lm, **kw)
    cpu.append(time.process_time() - c)
    wall.append(time.perf_counter() - w)
print(json.dumps({"cpu": cpu, "wall": wall}))
"""


def build_model(folder: Path) -> Path:
    """The tiny test Llama with the tests' tokenizer (trained on forget01, real authors, world facts)."""
    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer

    rows = sum((json.loads((TOFU / f"{s}.json").read_text()) for s in ("forget01", "real_authors", "world_facts")),
               [])
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384)
    return build_tiny_llama(folder / "tiny", tok, seed=0)


def measure(src: Path, model: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median CPU and wall seconds of one evaluate_tofu run with the code in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", RUN, str(model), str(TOFU), str(args.max_examples),
                          str(args.max_new_tokens), str(args.repeat)], env=env, check=True, capture_output=True,
                         text=True).stdout
    times = json.loads(out.strip().splitlines()[-1])
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-examples", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--compare-src", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        this = measure(REPO, model, args)
        what = f"evaluate forget01, {args.max_examples} rows/split, {args.max_new_tokens} new tokens"
        print(f"{what}: cpu {this['cpu']:.2f} s  wall {this['wall']:.2f} s")
        if args.compare_src is not None:
            other = measure(args.compare_src.resolve(), model, args)
            print(f"{what} @ {args.compare_src}: cpu {other['cpu']:.2f} s  wall {other['wall']:.2f} s")
            print(f"this / {args.compare_src}: cpu {this['cpu'] / other['cpu']:.2f}x  "
                  f"wall {this['wall'] / other['wall']:.2f}x")


if __name__ == "__main__":
    main()
