"""Local ``apply`` + ``push`` versus ``apply --stream`` against the local Hub server (tests/hub_server.py).

A synthetic bf16 checkpoint (``--gb`` GB in ``--shard-mb`` MB shards), its task vector and weight map (bf16,
same sharding) are published to a Hub server running in its own process; then each mode runs as its own
``perta-hub`` process with a fresh HF cache under the bench folder while a sampler measures the disk used
there (peak local disk); peak RSS is the child's. The floor is the download of the input bytes plus the upload
of the output bytes through the same server, measured alone; ``startup_s`` is what any run pays before its first
byte moves (the interpreter, imports of perta_hub's CLI and torch), shown beside it.

    python benchmarks/bench_stream.py --gb 3 --shard-mb 500 --dir /tmp/bench-stream --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_bench_write"
CONFIG = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 1, "vocab_size": 32000,
          "tie_word_embeddings": False}


def disk_used(paths: list[Path]) -> int:
    total = 0
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


class Sampler:
    def __init__(self, paths: list[Path], every: float = 0.25) -> None:
        self.paths, self.every, self.peak, self.stop = paths, every, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, disk_used(self.paths))
            time.sleep(self.every)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def write_group(folder: Path, prefix: str, names: list[str], shape: tuple[int, int], per_shard: int, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    chunks = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map = {}
    for i, chunk in enumerate(chunks, start=1):
        fname = f"{prefix}-{i:05d}-of-{len(chunks):05d}.safetensors"
        tensors = {}
        for n in chunk:
            t = torch.randn(shape, generator=gen)
            tensors[n] = (t.abs_() if prefix.startswith("importance") else t.mul_(0.01)).to(torch.bfloat16)
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, fname))
    total = sum((folder / f).stat().st_size for f in set(weight_map.values()))
    (folder / f"{prefix}.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def make_inputs(base: Path, gb: float, shard_mb: int) -> tuple[Path, Path, Path]:
    shape = (4096, 4096)  # 32 MiB in bf16
    tensor_bytes = shape[0] * shape[1] * 2
    count = max(1, int(gb * 1e9 // tensor_bytes))
    per_shard = max(1, int(shard_mb * 1e6 // tensor_bytes))
    names = [f"model.layers.{i}.weight" for i in range(count)]
    model, tv, wm = base / "model", base / "tv", base / "wm"
    for folder in (model, tv, wm):
        folder.mkdir(parents=True, exist_ok=True)
    write_group(model, "model", names, shape, per_shard, 0)
    (model / "config.json").write_text(json.dumps(CONFIG))
    write_group(tv, "task_vector", names, shape, per_shard, 1)
    (tv / "perta_config.json").write_text(json.dumps({"kind": "task_vector", "dtype": "bfloat16",
                                                     "base_config": CONFIG, "run_id": "bench"}))
    write_group(wm, "importance_forget", names, shape, per_shard, 2)
    write_group(wm, "importance_retain", names, shape, per_shard, 3)
    (wm / "perta_config.json").write_text(json.dumps({"kind": "weight_map", "method": "bench", "p": 1.0,
                                                     "lam": 1.0, "eps": 1e-12, "model_config": CONFIG,
                                                     "run_id": "bench"}))
    return model, tv, wm


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    code = ("import sys,time; sys.path.insert(0, sys.argv[1]); from tests.hub_server import HubServer; "
            f"s = HubServer(sys.argv[2], {{'{TOKEN}': ('bench', 'write')}}).start(); print(s.url, flush=True); "
            "time.sleep(10**6)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def env_for(url: str, home: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a running process has used so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(args: list[str], env: dict[str, str], watch: list[Path], server_pid: int) -> dict[str, float]:
    """Run one mode; its wall time, its CPU seconds and the server's (both processes share the cores), peaks."""
    server_before = process_cpu_s(server_pid)
    with Sampler(watch) as sampler:
        start = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "server_cpu_s": round(process_cpu_s(server_pid) - server_before, 1),
            "peak_disk_gb": round(sampler.peak / 1e9, 3),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3)}


def median_run(runs: list[dict[str, float]]) -> dict:
    """Each figure's median over the rounds, and every round's wall time (or floor) beside it."""
    out: dict = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    key = "floor_s" if "floor_s" in runs[0] else "wall_s"
    out[f"{key}_rounds"] = [r[key] for r in runs]
    if "peak_disk_gb" in runs[0]:
        out["peak_disk_gb_max"] = max(r["peak_disk_gb"] for r in runs)
    return out


def floor(url: str, work: Path, output: Path, server_pid: int, repo: str = "bench/floor") -> dict[str, float]:
    """Download every input file, then upload the output shards, through the same server, nothing else."""
    code = """
import sys, time, os
from pathlib import Path
from huggingface_hub import HfApi, snapshot_download, CommitOperationAdd
api = HfApi()
t = time.perf_counter()
for r in ("bench/model", "bench/tv", "bench/wm"):
    snapshot_download(r, local_dir=os.path.join(sys.argv[1], r))
down = time.perf_counter() - t
api.create_repo(sys.argv[3], exist_ok=True)
ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(Path(sys.argv[2]).glob("*.safetensors"))]
t = time.perf_counter()
api.preupload_lfs_files(sys.argv[3], ops)
up = time.perf_counter() - t
print(down, up)
"""
    home = work / "floor-home"
    server_before = process_cpu_s(server_pid)
    proc = subprocess.Popen([sys.executable, "-c", code, str(work / "floor-dl"), str(output), repo],
                            env=env_for(url, home), stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = (proc.stdout.read() if proc.stdout else "").split()
    if status != 0:
        raise SystemExit("the floor's transfers failed")
    shutil.rmtree(work / "floor-dl", ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return {"download_s": round(float(out[0]), 1), "upload_s": round(float(out[1]), 1),
            "floor_s": round(float(out[0]) + float(out[1]), 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "server_cpu_s": round(process_cpu_s(server_pid) - server_before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=3.0)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-stream"))
    parser.add_argument("--rounds", type=int, default=1, help="local/stream/floor rounds on the same server")
    args = parser.parse_args()
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    model, tv, wm = make_inputs(work / "inputs", args.gb, args.shard_mb)
    proc, url = start_server(work / "server")
    try:
        publish = ("import sys; from huggingface_hub import HfApi; api = HfApi(); "
                   "[(api.create_repo(r, exist_ok=True), api.upload_folder(repo_id=r, folder_path=f)) "
                   "for r, f in zip(sys.argv[1::2], sys.argv[2::2])]")
        subprocess.run([sys.executable, "-c", publish, "bench/model", str(model), "bench/tv", str(tv), "bench/wm",
                        str(wm)], env=env_for(url, work / "pub-home"), check=True)
        shutil.rmtree(work / "inputs")
        setup = time.perf_counter() - t
        common = ["bench/model", "--task-vector", "bench/tv", "--weights", "bench/wm", "--alpha", "1.0",
                  "--max-shard-size", f"{args.shard_mb}MB", "--device", "cpu", "-q"]
        cli = [sys.executable, "-m", "perta_hub", "apply"]
        runs: dict[str, list[dict[str, float]]] = {"local_apply_push": [], "stream": [], "floor": []}
        local_out = work / "local" / "out"
        for r in range(args.rounds):  # fresh HF caches and output repos each round
            local_home = work / "local-home"
            shutil.rmtree(work / "local", ignore_errors=True)
            runs["local_apply_push"].append(run_child(
                cli + common + ["-o", str(local_out), "--push", f"bench/out-local-{r}"], env_for(url, local_home),
                [local_home, work / "local"], proc.pid))
            shutil.rmtree(local_home, ignore_errors=True)  # the downloaded inputs (the output stays for the floor)
            stream_home, stream_dir = work / "stream-home", work / "stream"
            runs["stream"].append(run_child(
                cli + common + ["-o", str(stream_dir / "out"), "--push", f"bench/out-stream-{r}", "--stream"],
                env_for(url, stream_home), [stream_home, stream_dir], proc.pid))
            shutil.rmtree(stream_home, ignore_errors=True)
            shutil.rmtree(stream_dir, ignore_errors=True)
            runs["floor"].append(floor(url, work, local_out, proc.pid, f"bench/floor-{r}"))
            start = time.perf_counter()  # the fixed cost of any run: the interpreter, perta_hub's CLI and torch
            subprocess.run([sys.executable, "-c", "import torch, perta_hub.cli"], check=True)
            runs["floor"][-1]["startup_s"] = round(time.perf_counter() - start, 1)
        results: dict[str, dict] = {k: median_run(v) for k, v in runs.items()}
        out_bytes = sum(p.stat().st_size for p in local_out.glob("*.safetensors"))
        shards = len(list(local_out.glob("*.safetensors")))
        results["sizes"] = {"output_gb": round(out_bytes / 1e9, 3), "output_shards": shards,
                            "inputs_gb": round(out_bytes * 4 / 1e9, 3), "setup_s": round(setup, 1)}
        s, f, loc = results["stream"], results["floor"], results["local_apply_push"]
        shard_gb = out_bytes / shards / 1e9
        results["targets"] = {
            "disk_bound_gb (3 output shards + inputs of 2 shards)": round(3 * shard_gb + 2 * 4 * shard_gb, 3),
            "stream_peak_disk_ok": s["peak_disk_gb_max"] <= 3 * shard_gb + 8 * shard_gb,
            "stream_vs_floor": round(s["wall_s"] / f["floor_s"], 2),
            "stream_vs_floor_plus_startup": round(s["wall_s"] / (f["floor_s"] + f["startup_s"]), 2),
            "stream_vs_local": round(s["wall_s"] / loc["wall_s"], 2)}
        cores = os.cpu_count() or 1
        # the wall time the CPU work alone needs on these cores (client + server, perfectly spread): a run at this
        # bound is CPU-bound, whatever the overlap of its transfers
        results["cpu_bound"] = {
            f"{k}_cpu_s (client + server)": round(results[k]["cpu_s"] + results[k]["server_cpu_s"], 1)
            for k in ("local_apply_push", "stream", "floor")}
        results["cpu_bound"].update({
            f"{k}_min_wall_s on {cores} cores": round((results[k]["cpu_s"] + results[k]["server_cpu_s"]) / cores, 1)
            for k in ("local_apply_push", "stream", "floor")})
        results["cpu_bound"]["stream_wall_over_its_cpu_bound"] = round(
            s["wall_s"] / ((s["cpu_s"] + s["server_cpu_s"]) / cores), 2)
        results["conditions"] = {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 1),
                                 "rounds": args.rounds, "note": "medians over the rounds; shared machine; server in "
                                 "its own process on 127.0.0.1; disk " + str(work)}
        print(json.dumps(results, indent=2))
    finally:
        proc.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
