"""LoRA task vectors, dense against low-rank: artifact size, time to write it, and ``apply`` time, side by side.

Builds a synthetic bf16 Llama (default hidden 1024, 8 layers, intermediate 2816, vocab 32000: ~155M parameters,
the size of the issue's 135M example) and a random LoRA adapter of rank ``--rank`` on every linear layer but
the head (peft's ``all-linear``), then writes its task vector in both forms
(``lora_task_vector(..., low_rank=False)``: the dense fp32 delta; default: the factors) and applies each to the
model as a fresh ``perta-hub apply`` process (``--rounds`` rounds, alternating, median reported). The two outputs
must be byte-identical.

    python benchmarks/bench_low_rank.py --rank 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import llama_shapes, write_model  # noqa: E402


def write_adapter(folder: Path, shapes: list[tuple[str, tuple[int, ...]]], rank: int, seed: int) -> int:
    """A peft LoRA adapter folder (fp32 factors) on every 2-D ``*_proj`` weight; returns the adapted count."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, shape in shapes:
        if len(shape) == 2 and name.endswith("_proj.weight"):
            module = "base_model.model." + name.removesuffix(".weight")
            state[f"{module}.lora_A.weight"] = torch.randn((rank, shape[1]), generator=gen) * 0.01
            state[f"{module}.lora_B.weight"] = torch.randn((shape[0], rank), generator=gen) * 0.01
    save_file(state, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": "all-linear",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False}))
    return len(state) // 2


def run_apply(tv: Path, target: Path, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "perta_hub", "apply", str(target), "--task-vector", str(tv), "--alpha", "1.0",
            "-o", str(out), "--device", "cpu", "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status:
        raise SystemExit(f"apply failed:\n{proc.stdout.read() if proc.stdout else ''}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-low-rank"))
    args = parser.parse_args()
    from perta_hub.merge.lora_delta import lora_task_vector

    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    shapes = llama_shapes(args.hidden, args.layers, args.intermediate, args.vocab)
    config = {"model_type": "llama", "hidden_size": args.hidden, "num_hidden_layers": args.layers,
              "intermediate_size": args.intermediate, "vocab_size": args.vocab, "tie_word_embeddings": False}
    try:
        write_model(work / "target", shapes, 500 * 10**6, 0, None, config)
        adapted = write_adapter(work / "adapter", shapes, args.rank, 1)
        tvs, write_s = {}, {}
        for form, low in (("dense", False), ("low_rank", True)):
            start = time.perf_counter()
            tvs[form] = lora_task_vector(work / "target", work / "adapter", work / f"tv-{form}", low_rank=low,
                                         max_shard_size="500MB", progress=False)
            write_s[form] = time.perf_counter() - start
        runs: dict[str, list[dict[str, float]]] = {"dense": [], "low_rank": []}
        for _ in range(args.rounds):
            for form in runs:
                runs[form].append(run_apply(tvs[form], work / "target", work / f"out-{form}"))
        same = all((work / "out-dense" / p.name).read_bytes() == p.read_bytes()
                   for p in sorted((work / "out-low_rank").glob("*.safetensors")))
        result = {"model": {"parameters": sum(int(__import__("math").prod(s)) for _, s in shapes),
                            "target_gb": round(weight_bytes(work / "target") / 1e9, 3), "rank": args.rank,
                            "adapted_tensors": adapted}}
        for form in runs:
            result[form] = {
                "artifact_mb": round(weight_bytes(tvs[form]) / 1e6, 2),
                "write_s": round(write_s[form], 2),
                "apply_wall_s_median": round(statistics.median(r["wall_s"] for r in runs[form]), 2),
                "apply_wall_s_all": [round(r["wall_s"], 2) for r in runs[form]],
                "apply_cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs[form]), 2),
                "apply_peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs[form]), 3)}
        d, lr = result["dense"], result["low_rank"]
        result["ratios_low_rank_over_dense"] = {
            "artifact": round(lr["artifact_mb"] / d["artifact_mb"], 4),
            "apply_wall": round(lr["apply_wall_s_median"] / d["apply_wall_s_median"], 2),
            "apply_cpu": round(lr["apply_cpu_s_median"] / d["apply_cpu_s_median"], 2)}
        result["outputs_byte_identical"] = same
        result["conditions"] = {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 1),
                                "rounds": args.rounds, "dir": str(work)}
        print(json.dumps(result, indent=2))
        if not same:
            raise SystemExit("the outputs differ")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
