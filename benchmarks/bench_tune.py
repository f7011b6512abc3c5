"""perta-hub tune (in-memory search) against the naive loop (apply per alpha, evaluate each output from disk with
the same signals), side by side: wall time, ratio, chosen alpha, peak memory.

    python benchmarks/bench_tune.py --tiny
    python benchmarks/bench_tune.py --model DIR --task-vector TV [--weights WM] [--evals 8]

Three sides, each in its own process (peak RSS from ``getrusage``, less the process's RSS once torch and
transformers are imported): ``tune``; the naive loop in one process (per alpha: ``apply`` through the Python
API, load the output, score it); the naive loop as a user's shell loop (per alpha: a ``perta-hub apply``
process, then a scoring process that loads the output and scores it). The naive loops evaluate the alphas the
search evaluated, in the same order (each bisection step needs the previous result), score the outputs loaded in
the target's dtype (the weights tune scores, bit for bit) and apply the same rule to the same signals.
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
from typing import Any

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


def stored_dtype(model: str) -> str:
    """The one dtype of the target's tensors (tune loads the target in it; the naive loop loads apply's outputs in
    it, so both sides score bit-identical weights the same way)."""
    from perta_hub.io.reader import open_checkpoint

    ckpt = open_checkpoint(model)
    (dtype,) = {str(ckpt.dtype(n)).removeprefix("torch.") for n in ckpt.names}
    return dtype


def score_folder(a: argparse.Namespace, folder: str, probe: Any = None) -> tuple[float, float]:
    """(forget NLL, retain probability) of the model in ``folder``, loaded from disk in the target's dtype."""
    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.evaluation.scoring import load_model
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.tuning.signals import measure, prepare_probe

    if probe is None:
        probe = prepare_probe(load_tokenizer(open_checkpoint(a.model).root, a.model), a.forget, a.retain,
                              forget_examples=a.examples, retain_examples=a.examples)
    s = measure(load_model(folder, device="cpu", dtype=stored_dtype(a.model)), probe)
    return s["forget_nll"], s["retain_prob"]


def side_naive(a: argparse.Namespace, out: Path, alphas: list[float]) -> dict:
    """One process: per alpha, ``apply`` (the Python API) writes the model, which is loaded and scored."""
    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.merge.apply import apply
    from perta_hub.tuning.signals import prepare_probe

    t = time.perf_counter()
    probe = prepare_probe(load_tokenizer(open_checkpoint(a.model).root, a.model), a.forget, a.retain,
                          forget_examples=a.examples, retain_examples=a.examples)
    reference = score_folder(a, a.model, probe)
    scores = {}
    for alpha in alphas:  # what a user does per alpha: write it, load it, score it
        (folder,) = apply(a.model, a.task_vector, alphas=[alpha], weights=a.weights, out_dir=out / f"alpha-{alpha}",
                          device="cpu", progress=False)
        scores[alpha] = score_folder(a, str(folder), probe)
    return {"seconds": time.perf_counter() - t, "chosen": choose(a, scores, reference[1])}


def side_naive_cli(a: argparse.Namespace, out: Path, alphas: list[float]) -> dict:
    """A shell loop: per alpha, ``perta-hub apply`` (a process), then a scoring process on its output."""
    t = time.perf_counter()
    reference = run_scorer(a, a.model)
    scores = {}
    for alpha in alphas:
        folder = out / f"alpha-{alpha}"
        cmd = [sys.executable, "-m", "perta_hub", "apply", a.model, "--task-vector", a.task_vector, "--alpha",
               str(alpha), "-o", str(folder), "--device", "cpu", "-q"] + (["--weights", a.weights] if a.weights else [])
        subprocess.run(cmd, check=True, capture_output=True, env=child_env(a))
        scores[alpha] = run_scorer(a, str(folder))
    return {"seconds": time.perf_counter() - t, "chosen": choose(a, scores, reference[1])}


def run_scorer(a: argparse.Namespace, folder: str) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--score", folder, *common_args(a)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=child_env(a))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SCORE "))
    return tuple(json.loads(line[6:]))


def choose(a: argparse.Namespace, scores: dict[float, tuple[float, float]], reference_utility: float) -> float:
    """tune's rule on the naive loop's scores (the alphas in the order the search asked for them)."""
    from perta_hub.tuning.search import search_alpha

    result = search_alpha(lambda x: scores[x], grid=sorted(scores), budget=a.budget,
                          reference_utility=reference_utility, max_evals=len(scores))
    return result.chosen.alpha


def child(a: argparse.Namespace) -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    torch.set_num_threads(a.threads)
    base = rss_mb()
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        sides = {"tune": lambda: side_tune(a, Path(tmp) / "out"), "naive": lambda: side_naive(a, Path(tmp), a.alphas),
                 "naive-cli": lambda: side_naive_cli(a, Path(tmp), a.alphas)}
        res = sides[a.side]()
    res.update(base_rss_mb=base, peak_rss_mb=peak_mb(), peak_over_base_mb=peak_mb() - base)
    print("RESULT " + json.dumps(res))


def common_args(a: argparse.Namespace) -> list[str]:
    return ["--model", a.model, "--task-vector", a.task_vector, "--evals", str(a.evals), "--examples",
            str(a.examples), "--budget", str(a.budget), "--lo", str(a.lo), "--hi", str(a.hi), "--threads",
            str(a.threads), "--tmp", a.tmp, "--forget", a.forget, "--retain", a.retain] + \
        (["--weights", a.weights] if a.weights else [])


def child_env(a: argparse.Namespace) -> dict[str, str]:
    threads = str(a.threads)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_side(a: argparse.Namespace, side: str, alphas: list[float] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", side, *common_args(a)]
    for alpha in alphas or []:
        cmd += ["--alpha", str(alpha)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(a))
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
    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer
    from perta_hub.merge.task_vector import task_vector
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
    ap.add_argument("--child", choices=("tune", "naive", "naive-cli"))
    ap.add_argument("--score", help="(internal) score one model folder and print SCORE [forget_nll, retain_prob]")
    ap.add_argument("--alpha", dest="alphas", type=float, action="append")
    a = ap.parse_args()
    if a.score:
        import torch

        torch.set_num_threads(a.threads)
        print("SCORE " + json.dumps(score_folder(a, a.score)))
        return
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
        cli = run_side(a, "naive-cli", tuned["alphas"])
    budget_mb = 1.1 * (size["model"] + size["task_vector"] + size["weights"])
    print(f"model {a.model}: {size['model']:.1f} MB, task vector {size['task_vector']:.1f} MB, weight map "
          f"{size['weights']:.1f} MB; {len(tuned['alphas'])} alphas, {a.examples}+{a.examples} examples, "
          f"{a.threads} threads")
    same = ["same" if x["chosen"] == tuned["chosen"] else "DIFFERENT" for x in (naive, cli)]
    print("| | in-memory tune | naive loop, one process | ratio | naive loop, apply + score processes | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| wall time (s) | {tuned['seconds']:.1f} | {naive['seconds']:.1f} | {naive['seconds'] / tuned['seconds']:.2f}x "
          f"| {cli['seconds']:.1f} | {cli['seconds'] / tuned['seconds']:.2f}x |")
    print(f"| chosen alpha | {tuned['chosen']:g} | {naive['chosen']:g} | {same[0]} | {cli['chosen']:g} | {same[1]} |")
    print(f"| peak RSS over start (MB) | {tuned['peak_over_base_mb']:.0f} | {naive['peak_over_base_mb']:.0f} | | "
          "per process | |")
    print(f"tune's parts (s): {tuned['parts']}; alphas: {tuned['alphas']}")
    print(f"memory: tune peak over start {tuned['peak_over_base_mb']:.0f} MB vs model + tv + wm + 10% = "
          f"{budget_mb:.0f} MB ({'within' if tuned['peak_over_base_mb'] <= budget_mb else 'OVER'}); the one-process "
          f"naive loop {naive['peak_over_base_mb']:.0f} MB (on a tiny model both are the libraries' fixed cost)")


if __name__ == "__main__":
    main()
