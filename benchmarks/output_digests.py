"""sha256 of every file each command writes, on fixed tiny inputs: proof that a refactor changed no output.

Run it before and after a change and compare (``diff``)::

    python benchmarks/output_digests.py --work /tmp/perta-digests > before.txt
    ... change the code ...
    python benchmarks/output_digests.py --work /tmp/perta-digests > after.txt && diff before.txt after.txt

The work folder is wiped and rebuilt at the same path each time, so recorded paths, content hashes and run
ids are the same. Covers ``task-vector`` (--base/--finetuned, fp32 and bf16), ``task-vector MODEL --forget``
(full and LoRA), ``finetune``, ``compute-weights`` (grad and fisher) and ``apply`` (TV, PerTA, sweep).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PERTA_HUB_CACHE", "/tmp/perta-digests-cache")

TRAIN = ["--epochs", "1", "--batch-size", "4", "--grad-accum", "1", "--lr", "1e-3", "--seed", "0"]


SOURCE = Path(__file__).resolve().parents[1]  # the tree measured: this script's own checkout, not an installed copy


def run(work: Path, *args: str) -> None:
    """Run ``perta-hub ARGS`` in ``work`` (fixed cwd, so the recorded command and paths are stable)."""
    proc = subprocess.run([sys.executable, "-m", "perta_hub", *args], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(SOURCE), "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        sys.exit(f"perta-hub {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


#: what differs between two runs of the same command: run ids (they hash the inputs' mtimes), content hashes
#: of folders that hold a run id, and measured times and memory
VOLATILE = [
    (re.compile(re.escape(str(SOURCE).encode())), b"<source>"),  # the bundled data's path is the checkout's
    (re.compile(rb'"(\w*run_id)": "[0-9a-f]+"'), rb'"\1": "<run id>"'),
    (re.compile(rb"sha256:[0-9a-f]{64}"), b"sha256:<hash>"),
    (re.compile(rb'"(train_seconds|tokens_per_second|peak_memory_bytes|seconds)": [0-9.e+-]+'), rb'"\1": <measured>'),
]


def normalised(path: Path) -> bytes:
    """The file's bytes; in JSON and Markdown files, run ids, folder hashes and timings masked."""
    data = path.read_bytes()
    if path.suffix in (".json", ".md"):
        for pattern, replacement in VOLATILE:
            data = pattern.sub(replacement, data)
    return data


def digests(folder: Path) -> list[str]:
    """``relative/path sha256`` for every file under ``folder`` (hidden files included)."""
    return [f"{p.relative_to(folder)} {hashlib.sha256(normalised(p)).hexdigest()}"
            for p in sorted(folder.rglob("*")) if p.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/perta-digests"))
    work = parser.parse_args().work
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(os.environ["PERTA_HUB_CACHE"], ignore_errors=True)
    work.mkdir(parents=True)

    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer

    tofu = Path(__file__).resolve().parents[1] / "perta_hub" / "resources" / "tofu"
    rows = json.loads((tofu / "forget01.json").read_text())
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384)
    build_tiny_llama(work / "target", tok, seed=0, max_shard_size="40KB")
    build_tiny_llama(work / "tuned", tok, seed=1, max_shard_size="40KB")
    build_tiny_llama(work / "target-bf16", tok, seed=0, dtype="bfloat16", max_shard_size="40KB")

    run(work, "task-vector", "--base", "target", "--finetuned", "tuned", "-o", "tv", "--max-shard-size", "50KB")
    run(work, "task-vector", "--base", "target", "--finetuned", "tuned", "-o", "tv-bf16", "--dtype", "bfloat16")
    run(work, "finetune", "target", "--data", "tofu:forget01", "-o", "ft", *TRAIN)
    run(work, "task-vector", "target", "--forget", "tofu:forget01", "-o", "tv-data", *TRAIN)
    run(work, "task-vector", "target", "--forget", "tofu:forget01", "-o", "tv-lora", "--lora-rank", "2", *TRAIN)
    for method in ("grad", "fisher"):
        run(work, "compute-weights", "target", "--forget", "tofu:forget01", "--retain", "tofu:retain99",
            "--max-examples", "8", "--method", method, "-o", f"wm-{method}")
    run(work, "apply", "target", "--task-vector", "tv", "--alpha", "1", "-o", "un-tv")
    run(work, "apply", "target", "--task-vector", "tv", "--weights", "wm-grad", "--alpha", "0.5", "--alpha", "2",
        "-o", "un-perta", "--max-shard-size", "60KB")
    run(work, "apply", "target-bf16", "--task-vector", "tv-bf16", "--weights", "wm-fisher", "--alpha", "1",
        "--p", "2", "-o", "un-bf16")
    for name in ("tv", "tv-bf16", "ft", "tv-data", "tv-lora", "wm-grad", "wm-fisher", "un-tv", "un-perta", "un-bf16"):
        for line in digests(work / name):
            print(f"{name}/{line}")


if __name__ == "__main__":
    main()
