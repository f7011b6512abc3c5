"""perta-hub tune (in-memory search) against the naive loop (apply per alpha, evaluate each output from disk with
the same signals), side by side: wall time, ratio, chosen alpha, peak memory.

    python benchmarks/bench_tune.py --tiny
    python benchmarks/bench_tune.py --model DIR --task-vector TV [--weights WM] [--evals 8]

Each side runs in its own process (peak RSS from ``getrusage``, less the process's RSS once torch and
transformers are imported). The naive loop evaluates the alphas the search evaluated, in the same order (each
bisection step needs the previous result), and applies the same rule to the same signals.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def side_tune(a: argparse.Namespace, out: Path) -> dict:
    import perta_hub

    t = time.perf_counter()
    run = perta_hub.tune(a.model, a.task_vector, weights=a.weights, forget=a.forget, retain=a.retain, out_dir=out,
                         utility_budget=a.budget, alpha_range=(a.lo, a.hi), grid_points=a.evals // 2,
                         max_evals=a.evals, forget_examples=a.examples, retain_examples=a.examples, device="cpu",
                         progress=False)
    (record,) = run["records"].values()
    return {"seconds": time.perf_counter() - t, "chosen": record["chosen"],
            "alphas": [p["alpha"] for p in record["points"]], "parts": run["seconds"]}


def side_naive(a: argparse.Namespace, out: Path, alphas: list[float]) -> dict:
    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.evaluation.scoring import load_model
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.merge.apply import apply
    from perta_hub.tune.search import search_alpha
    from perta_hub.tune.signals import measure, prepare_probe

    t = time.perf_counter()
    probe = prepare_probe(load_tokenizer(open_checkpoint(a.model).root, a.model), a.forget, a.retain,
                          forget_examples=a.examples, retain_examples=a.examples)
    reference = measure(load_model(a.model, device="cpu"), probe)
    scores = {}
    for alpha in alphas:  # what a user does per alpha: write it, load it, score it
        (folder,) = apply(a.model, a.task_vector, alphas=[alpha], weights=a.weights, out_dir=out / f"alpha-{alpha}",
                          device="cpu", progress=False)
        s = measure(load_model(str(folder), device="cpu"), probe)
        scores[alpha] = (s["forget_nll"], s["retain_prob"])
    result = search_alpha(lambda x: scores[x], grid=sorted(scores), budget=a.budget,
                          reference_utility=reference["retain_prob"], max_evals=len(scores))
    return {"seconds": time.perf_counter() - t, "chosen": result.chosen.alpha}


def child(a: argparse.Namespace) -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    torch.set_num_threads(a.threads)
    base = rss_mb()
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        res = side_tune(a, Path(tmp) / "out") if a.side == "tune" else side_naive(a, Path(tmp), a.alphas)
    res.update(base_rss_mb=base, peak_rss_mb=peak_mb(), peak_over_base_mb=peak_mb() - base)
    print("RESULT " + json.dumps(res))


def run_side(a: argparse.Namespace, side: str, alphas: list[float] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--model", a.model, "--task-vector", a.task_vector,
           "--evals", str(a.evals), "--examples", str(a.examples), "--budget", str(a.budget), "--lo", str(a.lo),
           "--hi", str(a.hi), "--threads", str(a.threads), "--tmp", a.tmp]
    if a.weights:
        cmd += ["--weights", a.weights]
    for alpha in alphas or []:
        cmd += ["--alpha", str(alpha)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(line[7:])


def sizes_mb(a: argparse.Namespace) -> dict:
    def total(folder: str) -> float:
        return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) / 1e6
    return {"model": total(a.model), "task_vector": total(a.task_vector), "weights": total(a.weights) if a.weights
            else 0.0}


def make_tiny(tmp: Path) -> tuple[str, str]:
    from perta_hub.merge.task_vector import task_vector
    from perta_hub.tiny import build_tiny_llama, train_tokenizer
    from tests.conftest import tofu_rows

    rows = tofu_rows("forget01") + tofu_rows("real_authors") + tofu_rows("world_facts")
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=384)
    base = build_tiny_llama(tmp / "base", tok, seed=0)
    tv = task_vector(base, build_tiny_llama(tmp / "tuned", tok, seed=1), tmp / "tv", progress=False)
    return str(base), str(tv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--task-vector")
    ap.add_argument("--weights")
    ap.add_argument("--tiny", action="store_true", help="build a tiny Llama and a random task vector")
    ap.add_argument("--evals", type=int, default=8, help="alphas evaluated (half grid, half bisection)")
    ap.add_argument("--examples", type=int, default=32, help="forget and retain examples per alpha")
    ap.add_argument("--budget", type=float, default=0.95)
    ap.add_argument("--lo", type=float, default=0.5)
    ap.add_argument("--hi", type=float, default=8.0)
    ap.add_argument("--forget", default="tofu:forget01")
    ap.add_argument("--retain", default="tofu:retain99")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--child", choices=("tune", "naive"))
    ap.add_argument("--alpha", dest="alphas", type=float, action="append")
    a = ap.parse_args()
    if a.child:
        a.side = a.child
        child(a)
        return
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        if a.tiny:
            a.model, a.task_vector = make_tiny(Path(tmp))
        size = sizes_mb(a)
        tuned = run_side(a, "tune")
        naive = run_side(a, "naive", tuned["alphas"])
    budget_mb = 1.1 * (size["model"] + size["task_vector"] + size["weights"])
    print(f"model {a.model}: {size['model']:.1f} MB, task vector {size['task_vector']:.1f} MB, weight map "
          f"{size['weights']:.1f} MB; {len(tuned['alphas'])} alphas, {a.examples}+{a.examples} examples, "
          f"{a.threads} threads")
    print("| | in-memory tune | naive loop | ratio |\n|---|---|---|---|")
    print(f"| wall time (s) | {tuned['seconds']:.1f} | {naive['seconds']:.1f} | {naive['seconds'] / tuned['seconds']:.2f}x |")
    print(f"| chosen alpha | {tuned['chosen']:g} | {naive['chosen']:g} | {'same' if tuned['chosen'] == naive['chosen'] else 'DIFFERENT'} |")
    print(f"| peak RSS over start (MB) | {tuned['peak_over_base_mb']:.0f} | {naive['peak_over_base_mb']:.0f} | |")
    print(f"tune's parts (s): {tuned['parts']}; alphas: {tuned['alphas']}")
    print(f"memory: tune peak over start {tuned['peak_over_base_mb']:.0f} MB vs model + tv + wm + 10% = "
          f"{budget_mb:.0f} MB ({'within' if tuned['peak_over_base_mb'] <= budget_mb else 'OVER'})")


if __name__ == "__main__":
    main()
