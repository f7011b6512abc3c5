"""Wall time and tokens/s of ``perta-hub finetune`` on the bundled TOFU forget01 split (40 QA pairs).

Builds Llamas from scratch (random weights, the 384-token TOFU tokenizer of the tests) in a temporary
folder and runs the real command line in a subprocess, with the default recipe (5 epochs, effective
batch 32 = 4 x 8 accumulation, lr 1e-5, warmup 1 epoch): 10 optimizer steps over 5 x 40 examples.
Prints one line per model: parameters, wall time of the whole command (start-up, loading, training,
saving), Trainer time, tokens/s (non-padding tokens over Trainer time) and peak memory.

    python benchmarks/bench_finetune.py                       # CPU: tiny (43k) and small (~7.4M) models
    python benchmarks/bench_finetune.py --sizes small --device cuda
    python benchmarks/bench_finetune.py --sizes 1b --device cuda --epochs 1   # ~1.2B, bf16 weights
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),  # the tests' model, ~43k parameters
    "small": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=6,
                  num_key_value_heads=6),  # ~7.4M parameters
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),  # ~1.0B parameters with the 384-token vocabulary
}
REPO = Path(__file__).resolve().parents[1]


def build(folder: Path, size: str) -> Path:
    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer

    tofu = REPO / "perta_hub" / "resources" / "tofu"
    rows = [r for split in ("forget01", "real_authors", "world_facts") for r in json.loads((tofu / f"{split}.json").read_text())]
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384)
    return build_tiny_llama(folder / size, tok, max_shard_size="2GB", **SIZES[size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated: tiny, small, 1b")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--epochs", default="5")
    parser.add_argument("--data", default="tofu:forget01")
    parser.add_argument("--extra", default="", help="more finetune options, e.g. '--lora-rank 8'")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        for size in args.sizes.split(","):
            model = build(Path(tmp), size)
            out = Path(tmp) / f"{size}-ft"
            cmd = [sys.executable, "-m", "perta_hub", "finetune", str(model), "--data", args.data, "-o", str(out),
                   "--device", args.device, "--epochs", args.epochs, *args.extra.split()]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"{size}: failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            cfg = json.loads((out / "perta_config.json").read_text())
            res, training = cfg["results"], cfg["training"]
            print(f"{size}: {cfg['num_parameters'] / 1e6:.2f}M parameters, {training['total_steps']} steps x "
                  f"{training['effective_batch']} examples ({res['tokens']} tokens, {training['train_dtype']}) on "
                  f"{res['device']}: command {wall:.1f} s, Trainer {res['train_seconds']:.1f} s, "
                  f"{res['tokens_per_second']:.0f} tokens/s, loss {res['loss_history'][0]['loss']:.3f} -> "
                  f"{res['loss_history'][-1]['loss']:.3f}, peak {res['peak_memory_bytes'] / 2**30:.2f} GiB "
                  f"({res['peak_memory_kind']}); threads={os.environ.get('OMP_NUM_THREADS', 'default')}")


if __name__ == "__main__":
    main()
