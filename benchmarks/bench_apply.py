"""Benchmark: the streaming merger against mergekit and against the disk's write floor.

Builds (once, cached in ``.bench_cache/``) a synthetic sharded Llama checkpoint in bf16 (default:
hidden 2048, 16 layers, intermediate 5632, vocab 32000, ~1.1B parameters, 500 MB shards), a fine-tuned
twin, its task vector (fp32) and a weight map (bf16), then measures, each as a fresh process:

- ``perta-hub apply`` with the task vector only;
- ``perta-hub apply`` with the task vector and the weight map;
- mergekit's ``task_arithmetic`` (base = target, the fine-tuned twin with weight -alpha), when
  ``mergekit-yaml`` is found (``--mergekit PATH`` or on PATH);
- the floor: writing the same number of output bytes, in the same shard sizes, with fsync.

Prints wall time, CPU time and peak RSS of each, and the ratios, one comparison per line. Every apply runs in
the root of the checkout it measures (``--compare-src`` too) and with a hash cache of the bench's own
(``--hash-cache``, the inputs' hashes filled in before the first round), so no contender pays for the size of
the user's cache.

    python benchmarks/bench_apply.py                 # the 1B model of the issue
    python benchmarks/bench_apply.py --device cuda --layers 32 --hidden 4096 --intermediate 11008  # 7B-sized
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
APPLY_TV = "perta-hub apply (task vector)"
APPLY_BF16 = "perta-hub apply (bf16 task vector)"
APPLY_WM = "perta-hub apply (task vector + weight map)"
MERGEKIT = "mergekit task_arithmetic"
FLOOR = "write floor (same bytes, page cache, fsync)"
DIRECT_FLOOR = "write floor (same bytes, O_DIRECT, fsync)"


def llama_shapes(hidden: int, layers: int, intermediate: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes of a Llama (untied, kv heads = heads / 4, head dim 128 or hidden/16)."""
    heads = max(1, hidden // 128)
    kv = max(1, heads // 4)
    head_dim = hidden // heads
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
            (p + "self_attn.k_proj.weight", (kv * head_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv * head_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (p + "mlp.gate_proj.weight", (intermediate, hidden)),
            (p + "mlp.up_proj.weight", (intermediate, hidden)),
            (p + "mlp.down_proj.weight", (hidden, intermediate)),
        ]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return shapes


def write_model(folder: Path, shapes, shard_bytes: int, seed: int, base: Path | None, config: dict) -> None:
    """Write a sharded bf16 checkpoint; with ``base``, each tensor is base + small noise (a fine-tuned twin)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups, size = [[]], 0
    for name, shape in shapes:
        nbytes = 2 * int(torch.tensor(shape).prod())
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        state = {}
        for name, shape in group:
            if base is not None:
                src = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"][name]
                with safe_open(base / src, "pt") as f:
                    t = f.get_tensor(name).float()
                t += 0.001 * torch.randn(shape, generator=gen)
            else:
                t = torch.randn(shape, generator=gen) * 0.02 if len(shape) > 1 else torch.ones(shape)
            state[name] = t.to(torch.bfloat16)
            weight_map[name] = fname
        save_file(state, folder / fname, metadata={"format": "pt"})
        del state
    total = sum(2 * int(torch.tensor(s).prod()) for _, s in shapes)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(json.dumps(config))


def build_inputs(cache: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path, Path]:
    """The target, its fine-tuned twin, the task vector (fp32 and bf16) and a weight map (cached by size)."""
    key = f"h{args.hidden}-l{args.layers}-i{args.intermediate}-v{args.vocab}-s{args.shard_mb}"
    root = cache / key
    target, tuned, tv, wm = root / "target", root / "tuned", root / "tv", root / "wm"
    tv_bf16 = root / "tv-bf16"
    shapes = llama_shapes(args.hidden, args.layers, args.intermediate, args.vocab)
    heads = max(1, args.hidden // 128)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 4),
        "vocab_size": args.vocab,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    }
    shard = args.shard_mb * 10**6
    if not (target / "config.json").exists():
        print(f"building the synthetic target in {target} ...", flush=True)
        write_model(target, shapes, shard, 0, None, config)
    if not (tuned / "config.json").exists():
        print("building the fine-tuned twin ...", flush=True)
        write_model(tuned, shapes, shard, 1, target, config)
    for folder, dtype, shard_mb in ((tv, "float32", 2 * args.shard_mb), (tv_bf16, "bfloat16", args.shard_mb)):
        if not (folder / "perta_config.json").exists():
            print(f"building the {dtype} task vector ...", flush=True)
            run([sys.executable, "-m", "perta_hub", "task-vector", "--base", str(target), "--finetuned", str(tuned),
                 "-o", str(folder), "--dtype", dtype, "--max-shard-size", f"{shard_mb}MB"])  # fmt: skip
    if not (wm / "perta_config.json").exists():
        print("building a random weight map ...", flush=True)
        build_weight_map(wm, shapes, args.shard_mb)
    return target, tuned, tv, tv_bf16, wm


def build_weight_map(folder: Path, shapes, shard_mb: int) -> None:
    import torch

    from perta_hub.jobs.artifact import save_artifact

    class Lazy(dict):  # tensors made on demand, so memory stays at one tensor
        def __init__(self, seed: int) -> None:
            super().__init__({name: torch.empty(shape, dtype=torch.bfloat16, device="meta") for name, shape in shapes})
            self.gen = torch.Generator().manual_seed(seed)

        def __getitem__(self, name: str):
            meta = super().__getitem__(name)
            return torch.rand(meta.shape, generator=self.gen).to(torch.bfloat16)

    save_artifact(
        folder,
        "weight_map",
        {"importance_forget": Lazy(1), "importance_retain": Lazy(2)},
        {"method": "random", "p": 1.0, "lam": 1.0, "eps": 1e-12},
        max_shard_size=f"{shard_mb}MB",
    )


class Measure(NamedTuple):
    """One run: wall seconds, peak RSS in GB, CPU seconds (user + system, the child's own)."""

    wall: float
    rss: float
    cpu: float


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Measure:
    """Run a command and measure it.

    The peak is the process's VmHWM read from /proc while it runs (ru_maxrss would count the memory of
    the benchmark process it was forked from). CPU time comes from ``wait4``: on a shared machine it moves
    far less with the load than the wall time does.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(code)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.read()[-2000:]}")
    return Measure(wall, peak_kb * 1024 / 1e9, usage.ru_utime + usage.ru_stime)


def warm(*folders: Path) -> None:
    """Read the inputs once so every contender starts with them in the page cache."""
    for folder in folders:
        for f in folder.glob("*.safetensors"):
            with f.open("rb") as fh:
                while fh.read(64 << 20):
                    pass


def write_floor(out: Path, target: Path, direct: bool) -> Measure:
    """Write as many bytes as the output, shard by shard, with fsync: the disk's floor.

    ``direct=False`` writes through the page cache (the issue's floor); ``direct=True`` writes whole
    4 KiB blocks with O_DIRECT from a page-aligned buffer, as perta-hub's writer does.
    """
    script = f"""
import mmap, os, pathlib
out = pathlib.Path({str(out)!r}); out.mkdir(parents=True, exist_ok=True)
buf = mmap.mmap(-1, 4 << 20); buf.write(b"x" * len(buf))
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if {direct} else 0)
for f in sorted(pathlib.Path({str(target)!r}).glob("model-*.safetensors")):
    size = f.stat().st_size
    fd = os.open(out / f.name, flags)
    for offset in range(0, size, len(buf)):
        n = min(len(buf), size - offset)
        os.pwrite(fd, memoryview(buf)[: n + (-n % 4096 if {direct} else 0)], offset)
    os.ftruncate(fd, size); os.fsync(fd); os.close(fd)
"""
    return run([sys.executable, "-c", script])


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The synthetic model's sizes (``build_inputs`` reads them)."""
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-mb", type=int, default=500, help="input and output shard size, MB (10^6 bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all contenders; the median is printed")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench_cache")
    parser.add_argument("--mergekit", default=shutil.which("mergekit-yaml"), help="path of mergekit-yaml")
    parser.add_argument("--compare-src", type=Path, default=None,
                        help="another checkout of perta-hub (e.g. `git worktree add /tmp/base REV`): its apply runs "
                             "beside this one on the same inputs, and the ratios are printed")
    parser.add_argument("--hash-cache", type=Path, default=None,
                        help="PERTA_HUB_CACHE of every contender (default: hash-cache/ in --cache)")
    args = parser.parse_args()
    args.hash_cache = args.hash_cache or args.cache / "hash-cache"

    args.cache = args.cache.resolve()  # the contenders run in their own source folders (below)
    target, tuned, tv, tv_bf16, wm = build_inputs(args.cache, args)
    # every contender looks up its inputs' content hashes in the same small cache, filled here once: a run with
    # the user's cache (~/.cache/perta-hub, one JSON file that grows with every output) would pay for its size,
    # and older checkouts parse it once per file they hash
    os.environ["PERTA_HUB_CACHE"] = str(args.hash_cache.resolve())
    from perta_hub.io.fingerprint import file_sha256

    for folder in (target, tv, tv_bf16, wm):
        for f in sorted(folder.iterdir()):
            if f.is_file():
                file_sha256(f)
    n_params = sum(
        int(__import__("math").prod(s))
        for _, s in llama_shapes(args.hidden, args.layers, args.intermediate, args.vocab)
    )
    print(f"model: {n_params / 1e9:.2f}B parameters, bf16, {args.shard_mb} MB shards, device {args.device}")
    results: dict[str, list[Measure]] = {}
    with tempfile.TemporaryDirectory(dir=args.cache) as scratch:
        scratch_dir = Path(scratch)
        apply_cmd = [sys.executable, "-m", "perta_hub", "apply", str(target), "--alpha", str(args.alpha),
                     "--device", args.device, "--max-shard-size", f"{args.shard_mb}MB"]  # fmt: skip
        # `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH: each apply runs in the
        # root of the checkout it measures, or a run started in this repository would import this tree's
        # perta_hub for --compare-src too
        mine = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        this_run = lambda cmd: run(cmd, cwd=ROOT, env=mine)  # noqa: E731
        # name -> (inputs to warm first, out folder -> (wall s, peak RSS GB))
        contenders: dict[str, tuple[tuple[Path, ...], Callable[[Path], Measure]]] = {
            APPLY_TV: ((target, tv), lambda out: this_run([*apply_cmd, "--task-vector", str(tv), "-o", str(out)])),
            APPLY_BF16: (
                (target, tv_bf16),
                lambda out: this_run([*apply_cmd, "--task-vector", str(tv_bf16), "-o", str(out)]),
            ),
            APPLY_WM: (
                (target, tv, wm),
                lambda out: this_run([*apply_cmd, "--task-vector", str(tv), "--weights", str(wm), "-o", str(out)]),
            ),
        }
        if args.compare_src is not None:
            src = args.compare_src.resolve()
            other = {**os.environ, "PYTHONPATH": str(src)}
            found = subprocess.run([sys.executable, "-c", "import perta_hub; print(perta_hub.__file__)"], cwd=src,
                                   env=other, capture_output=True, text=True, check=True).stdout.strip()
            if not Path(found).resolve().is_relative_to(src):
                raise SystemExit(f"--compare-src {src}: its perta_hub is not the one imported ({found})")
            contenders[f"{APPLY_TV} @ {args.compare_src.name}"] = (
                (target, tv),
                lambda out: run([*apply_cmd, "--task-vector", str(tv), "-o", str(out)], cwd=src, env=other))
            contenders[f"{APPLY_WM} @ {args.compare_src.name}"] = (
                (target, tv, wm),
                lambda out: run([*apply_cmd, "--task-vector", str(tv), "--weights", str(wm), "-o", str(out)],
                                cwd=src, env=other))
        if args.mergekit:
            config = scratch_dir / "mergekit.yml"
            merge = {"merge_method": "task_arithmetic", "base_model": str(target), "dtype": "bfloat16",
                     "models": [{"model": str(tuned), "parameters": {"weight": -args.alpha}}]}  # fmt: skip
            config.write_text(json.dumps(merge))
            mk_options = ["--lazy-unpickle", "--out-shard-size", f"{args.shard_mb // 2}M"]  # bf16 parameters
            mk_options += ["--cuda"] if args.device == "cuda" else []
            contenders[MERGEKIT] = (
                (target, tuned),
                lambda out: run([args.mergekit, str(config), str(out), *mk_options]),
            )
        else:
            print("mergekit not found (pip install mergekit, or --mergekit PATH): skipped")
        contenders[FLOOR] = ((), lambda out: write_floor(out, target, direct=False))
        contenders[DIRECT_FLOOR] = ((), lambda out: write_floor(out, target, direct=True))
        # Each round runs every contender once, in the same order; each output is deleted right after its
        # run, so every contender starts with the same free memory (the kernel's cost of writing depends on it).
        out = scratch_dir / "out"
        for round_ in range(1, args.repeat + 1):
            for name, (inputs, measure) in contenders.items():
                warm(*inputs)
                m = measure(out)
                results.setdefault(name, []).append(m)
                print(f"round {round_}: {name:45s} wall {m.wall:7.2f} s   cpu {m.cpu:7.2f} s   peak RSS {m.rss:5.2f} GB",
                      flush=True)
                shutil.rmtree(out)

    summary = {name: (statistics.median(m.wall for m in runs), max(m.rss for m in runs)) for name, runs in results.items()}
    cpu = {name: statistics.median(m.cpu for m in runs) for name, runs in results.items()}
    print(f"median of {args.repeat} run(s) each, peak RSS the largest seen")
    for name, (wall, rss) in summary.items():
        print(f"{name:45s} wall {wall:7.2f} s   cpu {cpu[name]:7.2f} s   peak RSS {rss:5.2f} GB")
    tv_wall, tv_rss = summary[APPLY_TV]
    floor, direct_floor = summary[FLOOR][0], summary[DIRECT_FLOOR][0]
    ratios = [
        ("apply(tv) / write floor", tv_wall / floor, "(target <= 1.25x)"),
        ("apply(bf16 tv) / write floor", summary[APPLY_BF16][0] / floor, ""),
        ("apply(tv) / O_DIRECT write floor", tv_wall / direct_floor, ""),
        ("apply(tv+weights) / apply(tv)", summary[APPLY_WM][0] / tv_wall, ""),
    ]
    if MERGEKIT in summary:
        mk_wall, mk_rss = summary[MERGEKIT]
        ratios += [
            ("speed-up of apply(tv) over mergekit", mk_wall / tv_wall, "(target >= 2x)"),
            ("speed-up of apply(bf16 tv) over mergekit", mk_wall / summary[APPLY_BF16][0], ""),
            ("speed-up of apply(tv+weights) over mergekit", mk_wall / summary[APPLY_WM][0], ""),
            ("peak RSS apply(tv) / mergekit", tv_rss / mk_rss, ""),
        ]
    if args.compare_src is not None:
        for mine in (APPLY_TV, APPLY_WM):
            theirs = summary[f"{mine} @ {args.compare_src.name}"]
            ratios += [(f"{mine[len('perta-hub apply '):]}: this / {args.compare_src.name} wall",
                        summary[mine][0] / theirs[0], "(<= 1: no slower)"),
                       (f"{mine[len('perta-hub apply '):]}: this / {args.compare_src.name} cpu",
                        cpu[mine] / cpu[f"{mine} @ {args.compare_src.name}"], "(<= 1: no more work)"),
                       (f"{mine[len('perta-hub apply '):]}: this / {args.compare_src.name} peak RSS",
                        summary[mine][1] / theirs[1], "")]
    for label, value, target_text in ratios:
        print(f"{label:46s} {value:5.2f}x  {target_text}")
    print(f"{'peak RSS of apply(tv)':46s} {tv_rss:5.2f} GB  (target <= 1 GB)")


if __name__ == "__main__":
    main()
