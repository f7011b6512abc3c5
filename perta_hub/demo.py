"""``perta-hub demo``: TOFU-mini unlearning end to end, offline, on a laptop.

A small Llama memorises some fictitious TOFU authors (the **target**); a second one learns the same
authors without the forget authors (the **retain** model, the reference for forget quality). Then the
product's own steps run, through the public Python API: a task vector from fine-tuning the target on
the forget set, grad and fisher weight maps, ``apply`` over an alpha sweep for TV, PerTA-grad and
PerTA-fisher, and ``evaluate`` on every output. It writes ``results.json``, ``results.md`` (a table) and
``results.png`` (forget quality against model utility, one curve per method).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.loading import BUNDLED_TOFU
from perta_hub.options.demo import DEMO

QUESTIONS_PER_AUTHOR = 20  # TOFU: 200 authors x 20 questions


@dataclass(frozen=True)
class DemoConfig:
    """The size of a demo run.

    Attributes:
        retain_authors: authors kept, taken from the start of TOFU ``full`` (so their questions are the
            first rows of ``retain_perturbed``, which the evaluation uses).
        forget_split: the TOFU forget split (its authors are the last ones of ``full``).
        hidden_size, num_layers, intermediate_size, num_heads, vocab_size: the Llama and its tokenizer.
        memorise_epochs, memorise_lr: training the target and the retain model from scratch.
        forget_epochs, forget_lr: fine-tuning the target on the forget set (the task vector).
        alphas: the sweep applied for each method.
        eval_examples: rows evaluated per TOFU split (the first ones); also the number of real-author and
            world-fact questions both models learn.
        retain_fraction: the share of retain rows used for the retain importance.
        eval_batch_size: sequences per forward pass during evaluation.
    """

    retain_authors: int
    forget_split: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    vocab_size: int
    memorise_epochs: float
    memorise_lr: float
    forget_epochs: float
    forget_lr: float
    alphas: tuple[float, ...]
    eval_examples: int = 40
    retain_fraction: float = 1.0
    batch_size: int = 16
    eval_batch_size: int = 64
    seed: int = 0


QUICK = DemoConfig(retain_authors=2, forget_split="forget01", hidden_size=96, num_layers=2, intermediate_size=256,
                   num_heads=4, vocab_size=1024, memorise_epochs=40, memorise_lr=3e-3, forget_epochs=5,
                   forget_lr=1e-3, alphas=(1.0, 2.0, 4.0), eval_examples=40)
DEFAULT = DemoConfig(retain_authors=5, forget_split="forget01", hidden_size=128, num_layers=4,
                     intermediate_size=384, num_heads=4, vocab_size=2048, memorise_epochs=30, memorise_lr=3e-3,
                     forget_epochs=5, forget_lr=1e-3, alphas=(1.0, 2.0, 3.0, 4.0, 6.0, 8.0), eval_examples=100)
FORGET_AUTHORS = {"forget01": 2, "forget05": 10, "forget10": 20}


def _rows(split: str) -> list[dict[str, Any]]:
    return json.loads((BUNDLED_TOFU / f"{split}.json").read_text())


def write_demo_data(folder: Path, cfg: DemoConfig) -> dict[str, Path]:
    """The training files of the demo, as JSON files of ``question``/``answer`` rows.

    Both models also learn the first ``eval_examples`` real-author and world-fact questions: the
    stand-in for the general knowledge a pre-trained model brings, which TOFU's model utility measures.

    Returns:
        ``{"target": retain + forget authors + knowledge, "retain": retain authors + knowledge,
        "forget": forget authors, "retain_authors": retain authors}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    full = _rows("full")
    retain = full[: cfg.retain_authors * QUESTIONS_PER_AUTHOR]
    forget = full[-FORGET_AUTHORS[cfg.forget_split] * QUESTIONS_PER_AUTHOR:]
    knowledge = _rows("real_authors")[: cfg.eval_examples] + _rows("world_facts")[: cfg.eval_examples]
    files = {"target": retain + forget + knowledge, "retain": retain + knowledge, "forget": forget,
             "retain_authors": retain}
    paths = {}
    for name, rows in files.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps([{"question": r["question"], "answer": r["answer"]} for r in rows]))
    return paths


def build_initial_model(folder: Path, cfg: DemoConfig) -> Path:
    """Train the byte-level BPE tokenizer on the TOFU text and save a randomly initialised Llama."""
    from perta_hub.tiny import build_tiny_llama, train_tokenizer

    if (folder / "config.json").exists():
        return folder
    texts = [r["question"] + " " + r["answer"] for split in ("full", "real_authors", "world_facts")
             for r in _rows(split)]
    tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
    return build_tiny_llama(folder, tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size,
                            num_hidden_layers=cfg.num_layers, intermediate_size=cfg.intermediate_size,
                            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
                            max_shard_size="5GB")


def run_demo(out_dir: str | Path = DEMO.out_dir, *, quick: bool = DEMO.quick, device: str = DEMO.device,
             model: str | None = DEMO.model, model_config: Any = None,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole pipeline into ``out_dir`` (re-running resumes: finished steps are reused).

    Args:
        model: a pretrained model (Hub id or folder) to fine-tune instead of the tiny Llama trained from
            scratch; then GradAscent, GradDiff and NPO run beside TV and PerTA (:mod:`perta_hub.demo_model`).
        model_config: the sizes of a ``model`` run (:class:`perta_hub.demo_model.ModelDemoConfig`; default
            ``MODEL_QUICK`` with ``quick``, else ``MODEL_DEFAULT``).
    Returns:
        the summary written to ``results.json``: config, per-model metrics, best alphas, timings.
    """
    from perta_hub.runtime.devices import one_torch_thread

    if model is not None:
        from perta_hub.demo_model import MODEL_DEFAULT, MODEL_QUICK, run_model_demo

        cfg_model = model_config or (MODEL_QUICK if quick else MODEL_DEFAULT)
        return run_model_demo(model, cfg_model, Path(out_dir), device, echo)
    cfg = QUICK if quick else DEFAULT
    with one_torch_thread():  # models of a few million parameters run faster on one CPU thread
        return _run(cfg, Path(out_dir), device, echo)


def _run(cfg: DemoConfig, out: Path, device: str, echo: Callable[[str], None]) -> dict[str, Any]:
    from perta_hub.evaluation import run_evaluation
    from perta_hub.importance.weight_map import compute_weights
    from perta_hub.merge.apply import apply
    from perta_hub.training.finetune import finetune
    from perta_hub.training.from_data import task_vector_from_data

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        echo(f"== {name}")
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        echo(f"   {name}: {timings[name]:.1f} s")
        return result

    data = step("data", lambda: write_demo_data(out / "data", cfg))
    init = step("tokenizer and initial model", lambda: build_initial_model(out / "init", cfg))
    memorise = dict(epochs=cfg.memorise_epochs, lr=cfg.memorise_lr, batch_size=cfg.batch_size, grad_accum=1,
                    warmup=1.0, weight_decay=0.0, device=device, seed=cfg.seed, progress=False)
    target = step("target: memorise retain + forget authors",
                  lambda: finetune(init, str(data["target"]), out / "target", **memorise)).out_dir
    retain = step("retain model: memorise the retain authors only",
                  lambda: finetune(init, str(data["retain"]), out / "retain", **memorise)).out_dir
    tv = step("task vector: fine-tune the target on the forget authors",
              lambda: task_vector_from_data(target, str(data["forget"]), out / "tv", epochs=cfg.forget_epochs,
                                            lr=cfg.forget_lr, batch_size=cfg.batch_size, grad_accum=1,
                                            warmup=0.0, weight_decay=0.0, device=device, seed=cfg.seed,
                                            progress=False)[0])
    maps = {}
    for method in ("grad", "fisher"):
        maps[method] = step(f"weight map ({method})", lambda m=method: compute_weights(
            str(target), str(data["forget"]), str(data["retain_authors"]), out / f"wm-{m}", method=m,
            retain_fraction=cfg.retain_fraction, seed=cfg.seed, device=device, progress=False,
            echo=lambda *_: None).out_dir)
    outputs: list[Path] = []
    for label, weights in (("tv", None), ("perta-grad", maps["grad"]), ("perta-fisher", maps["fisher"])):
        outputs += step(f"apply {label} (alphas {', '.join(map(str, cfg.alphas))})", lambda w=weights, lab=label: apply(
            target, tv, weights=w, alphas=list(cfg.alphas), out_dir=out / "unlearned" / lab, device=device,
            progress=False))
    max_examples = cfg.eval_examples
    evaluation = step("evaluate every model on TOFU", lambda: run_evaluation(
        [str(target), *map(str, outputs)], forget_split=cfg.forget_split, retain_model=str(retain),
        data_dir=BUNDLED_TOFU, max_examples=max_examples, output=out / "eval" / "tofu.json",
        batch_size=cfg.eval_batch_size, device=device, progress=False))
    retain_result = json.loads(Path(evaluation["retain_logs"]).read_text())
    summary = summarise([retain_result, *evaluation["results"]], cfg, {str(target): "target", str(retain): "retain"})
    summary["timings_s"] = {**timings, "total": round(time.perf_counter() - start, 1)}
    summary["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(summary))
    plot_methods(summary, out / "results.png")
    echo(results_markdown(summary))
    return summary


def _row(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    meta = result["meta"]
    method = names.get(str(meta["model"])) or meta.get("method") or Path(meta["model"]).name
    fq = result["forget_quality"]
    return {
        "model": meta["model"], "method": method, "alpha": meta.get("alpha"), "setting": meta.get("setting"),
        "forget_quality": fq["agg_value"], "log10_forget_quality": fq.get("log10"),
        "model_utility": result["model_utility"]["agg_value"],
        "forget_extraction_strength": result["extraction_strength"]["agg_value"],
        "retain_extraction_strength": result["retain_extraction_strength"]["agg_value"],
        "forget_rouge": result["forget_Q_A_ROUGE"]["agg_value"],
        "retain_rouge": result["retain_Q_A_ROUGE"]["agg_value"],
    }


def summarise(results: list[dict[str, Any]], cfg: Any, names: dict[str, str],
              methods: tuple[str, ...] = ("tv", "perta-grad", "perta-fisher")) -> dict[str, Any]:
    """Rows per model, and per method the best setting by forget quality and at utility >= 0.95 x target's.

    ``names`` maps a model path to its row name (``target``, ``retain``); others are named by method.
    """
    rows = [_row(r, names) for r in results]
    target_mu = next(r["model_utility"] for r in rows if r["method"] == "target")
    best: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        by_fq = max(mine, key=lambda r: r["forget_quality"] or 0.0)
        kept = [r for r in mine if r["model_utility"] >= 0.95 * target_mu]
        by_fq_kept = max(kept, key=lambda r: r["forget_quality"] or 0.0) if kept else None
        best[method] = {"best_forget_quality": by_fq,
                        "best_forget_quality_at_utility_95pct": by_fq_kept}
    return {"config": asdict(cfg), "rows": rows, "best": best, "target_model_utility": target_mu}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def results_markdown(summary: dict[str, Any]) -> str:
    """The results table (markdown) and the best alphas."""
    head = ("| method | alpha / setting | forget quality | log10 FQ | model utility | ES forget | ES retain "
            "| ROUGE forget | ROUGE retain |\n|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['method']} | {_setting(r)} | {_fmt(r['forget_quality'])} | {_fmt(r['log10_forget_quality'], 2)} "
        f"| {_fmt(r['model_utility'])} | {_fmt(r['forget_extraction_strength'])} "
        f"| {_fmt(r['retain_extraction_strength'])} | {_fmt(r['forget_rouge'])} | {_fmt(r['retain_rouge'])} |\n"
        for r in summary["rows"])
    lines = ["", f"Target model utility: {_fmt(summary['target_model_utility'])}", ""]
    for method, best in summary["best"].items():
        a = best["best_forget_quality"]
        b = best["best_forget_quality_at_utility_95pct"]
        lines.append(f"- {method}: best forget quality at {_setting(a, True)} (FQ {_fmt(a['forget_quality'])}, "
                     f"MU {_fmt(a['model_utility'])}); at MU >= 0.95 x target: "
                     + (f"{_setting(b, True)} (FQ {_fmt(b['forget_quality'])}, MU {_fmt(b['model_utility'])})"
                        if b else "no setting keeps that much utility"))
    return head + body + "\n".join(lines) + "\n"


def _setting(row: dict[str, Any], named: bool = False) -> str:
    """``alpha`` of a task-arithmetic row, the ``lr=..,ep=..`` setting of a gradient one, else n/a."""
    if row.get("alpha") is not None:
        return f"alpha {_fmt(row['alpha'])}" if named else _fmt(row["alpha"])
    return str(row.get("setting") or "n/a")


def _order(row: dict[str, Any]) -> tuple[float, str]:
    return (row["alpha"] if row.get("alpha") is not None else 0.0, str(row.get("setting") or ""))


def plot_methods(summary: dict[str, Any], path: Path, title: str = "TOFU-mini: forgetting vs utility") -> Path:
    """Forget quality (log) against model utility: one curve per method (ordered by alpha, or by setting for
    the gradient methods), the target as a star, the retain model (the forget-quality reference, so it has
    none) as a vertical line at its utility. Point labels (alpha or setting) are placed so that none overlaps
    another label or a point (:func:`perta_hub.evaluation.plot.place_labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perta_hub.evaluation.plot import place_labels

    fig, ax = plt.subplots(figsize=(7.2, 5.4), dpi=120)
    floor = 1e-300
    markers = {"tv": "o", "perta-grad": "s", "perta-fisher": "^", "ga": "v", "gd": "D", "npo": "P"}
    labels: list[tuple[float, float, str]] = []
    methods = [m for m in markers if any(r["method"] == m for r in summary["rows"])]
    for method in methods:
        mine = sorted((r for r in summary["rows"] if r["method"] == method), key=_order)
        xs = [r["model_utility"] for r in mine]
        ys = [max(r["forget_quality"] or floor, floor) for r in mine]
        ax.plot(xs, ys, marker=markers[method], label=method)
        labels += [(x, y, f"{r['alpha']:g}" if r.get("alpha") is not None
                    else str(r.get("setting") or "").replace("lr=", "").replace(",ep=", "/"))
                   for r, x, y in zip(mine, xs, ys, strict=True)]
    for r in (r for r in summary["rows"] if r["method"] == "target"):
        ax.scatter([r["model_utility"]], [max(r["forget_quality"] or floor, floor)], marker="*", s=110,
                   color="black", label="target", zorder=3)
    if summary.get("target_model_utility"):
        ax.axvline(0.95 * summary["target_model_utility"], color="black", linestyle=":", linewidth=1,
                   label="0.95 x target's utility")
    for r in (r for r in summary["rows"] if r["method"] == "retain"):  # the reference: no forget quality
        ax.axvline(r["model_utility"], color="gray", linestyle="--", linewidth=1, label="retain model's utility")
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log)")
    ax.set_title(title + (" (labels: alpha; lr/epochs)" if any(r.get("setting") for r in summary["rows"])
                          else " (labels: alpha)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, labels, fontsize=7)
    fig.savefig(path)
    plt.close(fig)
    return path
