"""``perta-hub demo --model MODEL``: the demo on a real pretrained model, PerTA beside the gradient baselines.

The given model (a Hub id or a folder; its own tokenizer and chat template) is fine-tuned on the demo's TOFU
authors (the **target**: retain + forget authors) and on the retain authors only (the **retain** model, the
forget-quality reference). Then, through the public Python API: the task vector (the target fine-tuned on
the forget authors), grad and fisher weight maps, ``apply`` over an alpha sweep for TV, PerTA-grad and
PerTA-fisher; ``unlearn`` over a small grid for GradAscent, GradDiff and NPO; ``evaluate`` on every output
with the retain model as reference. The same ``results.json`` and report (``results.md``, ``results.png``,
``report.html``) as the tiny demo, one curve per method, plus the compute each method needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.data.loading import BUNDLED_TOFU
from perta_hub.demo.steps import epoch_count, weight_map_rows
from perta_hub.evaluation.report import Setup, finish_experiment, method_lines, summarise
from perta_hub.importance.methods import METHODS as IMPORTANCE_METHODS
from perta_hub.unlearning.methods import UNLEARN_METHODS

QUESTIONS_PER_AUTHOR = 20
FORGET_AUTHORS = {"forget01": 2, "forget05": 10, "forget10": 20}


@dataclass(frozen=True)
class ModelDemoConfig:
    """The size of a ``demo --model`` run.

    Attributes:
        retain_authors: authors both models learn (the first ones of TOFU ``full``, whose questions open
            ``retain_perturbed``, which the evaluation uses).
        forget_split: TOFU forget split (its authors are the last ones of ``full``); all its rows are trained on.
        memorise_epochs, memorise_lr: fine-tuning the pretrained model into the target and the retain model.
        forget_epochs, forget_lr: fine-tuning the target on the forget authors (the task vector).
        alphas: the sweep of TV; with ``match_steps`` also the step norms ``||alpha w ⊙ tau|| / ||tau||`` at
            which every PerTA variant is evaluated (its alpha = step / (``||w ⊙ tau|| / ||tau||``)), so the
            methods are compared at matched norm of the update, not at matched alpha.
        perta: the PerTA variants, ``(label, weight-map method, p)``; each map method is computed once.
        match_steps: PerTA alphas matched to TV's step norms (else the same ``alphas`` for every method).
        gradient_grid: per gradient method (``ga``, ``gd``, ``npo``), the (lr, epochs) settings tried.
        tune: task-arithmetic labels that ``perta-hub tune`` chooses alpha for (``tv``, a ``perta`` label with
            p = 1), each chosen model evaluated beside the sweeps; ``tune_alpha_range``, ``tune_max_evals``:
            its search.
        eval_examples: rows evaluated per TOFU split (the first ones).
        batch_size: micro-batch of every training; grad_accum: micro-batches per step.
        eval_batch_size, max_new_tokens: evaluation batch and generation budget (ROUGE).
        eval_dtype: dtype of the evaluation (``auto``: bf16 on GPU, fp32 on CPU; ``bfloat16`` is about 1.6x
            faster on a CPU with AVX512-BF16 and is the saved models' own dtype).
        retain_fraction: share of retain rows used for the retain importance.
    """

    retain_authors: int
    forget_split: str
    memorise_epochs: float
    memorise_lr: float
    forget_epochs: float
    forget_lr: float
    alphas: tuple[float, ...]
    gradient_grid: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    perta: tuple[tuple[str, str, float], ...] = tuple((f"perta-{m}", m, 1.0) for m in IMPORTANCE_METHODS)
    match_steps: bool = True
    tune: tuple[str, ...] = ()
    tune_alpha_range: tuple[float, float] = (0.5, 8.0)
    tune_max_evals: int = 8
    eval_examples: int = 40
    batch_size: int = 4
    grad_accum: int = 1
    eval_batch_size: int = 32
    max_new_tokens: int = 64
    eval_dtype: str = "auto"
    max_length: int = 256
    retain_fraction: float = 1.0
    seed: int = 0

    @property
    def methods(self) -> tuple[str, ...]:
        return ("tv", *(label for label, _, _ in self.perta), *UNLEARN_METHODS)


#: the measured configuration for SmolLM2-135M-Instruct on 2 CPU cores (docs/results.md): two retain authors
#: (40 rows), all 40 forget01 rows, 40 rows per split evaluated; TV and three PerTA variants at four matched
#: step norms; two settings per gradient method (one epoch, lr chosen so that one epoch moves about as far
#: as the reference's 10 epochs at 1e-5 would); ``tune`` on TV and PerTA-fisher
MODEL_DEFAULT = ModelDemoConfig(
    retain_authors=2, forget_split="forget01", memorise_epochs=2, memorise_lr=1e-4, forget_epochs=1,
    forget_lr=1e-4, alphas=(1.0, 1.5, 2.0, 3.0),
    perta=(("perta-grad", "grad", 1.0), ("perta-fisher", "fisher", 1.0), ("perta-fisher-p2", "fisher", 2.0)),
    gradient_grid={"npo": ((5e-5, 1.0), (1e-4, 1.0)), "ga": ((5e-5, 1.0), (1e-4, 1.0)),
                   "gd": ((5e-5, 1.0), (1e-4, 1.0))},
    tune=("tv", "perta-fisher"), tune_alpha_range=(0.5, 6.0), tune_max_evals=8,
    eval_examples=40, eval_batch_size=40, max_new_tokens=32, eval_dtype="bfloat16")
#: ``demo --model M --quick``: two alphas, 10 rows per split, no tune
MODEL_QUICK = ModelDemoConfig(
    retain_authors=1, forget_split="forget01", memorise_epochs=2, memorise_lr=1e-4, forget_epochs=1,
    forget_lr=1e-4, alphas=(1.0, 3.0), gradient_grid={"ga": ((5e-5, 1.0),), "gd": ((5e-5, 1.0),),
                                                       "npo": ((1e-4, 1.0),)},
    eval_examples=10, eval_batch_size=20, max_new_tokens=32)


def _rows(split: str) -> list[dict[str, Any]]:
    return json.loads((BUNDLED_TOFU / f"{split}.json").read_text())


def write_model_demo_data(folder: Path, cfg: ModelDemoConfig) -> dict[str, Path]:
    """``target`` (retain + forget authors), ``retain`` (retain authors), ``forget``: question/answer JSON files.

    Unlike the tiny demo, no real-author or world-fact rows are trained on: the pretrained model brings that
    knowledge (what TOFU's model utility measures).
    """
    folder.mkdir(parents=True, exist_ok=True)
    full = _rows("full")
    retain = full[: cfg.retain_authors * QUESTIONS_PER_AUTHOR]
    forget = full[-FORGET_AUTHORS[cfg.forget_split] * QUESTIONS_PER_AUTHOR:]
    paths = {}
    for name, rows in {"target": retain + forget, "retain": retain, "forget": forget}.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps([{"question": r["question"], "answer": r["answer"]} for r in rows]))
    return paths


def run_model_demo(model: str, cfg: ModelDemoConfig, out: Path, device: str,
                   echo: Callable[[str], None]) -> dict[str, Any]:
    """Run the pipeline on ``model`` into ``out`` (finished steps are reused); returns the summary.

    Each model is evaluated as soon as it exists and its result kept in ``out/eval/<name>.json`` (a re-run,
    or a run stopped part-way, loses no evaluation); the retain model is evaluated first (the reference).
    """
    from perta_hub.demo.steps import Steps
    from perta_hub.importance.summary import summarise_folder
    from perta_hub.importance.weight_map import compute_weights
    from perta_hub.merge.apply import apply
    from perta_hub.training.finetune import finetune
    from perta_hub.training.from_data import task_vector_from_data
    from perta_hub.unlearning.command import unlearn

    out.mkdir(parents=True, exist_ok=True)
    step = Steps(echo)

    results: list[dict[str, Any]] = []

    def evaluate(folder: Path, name: str, reference: Path | None) -> dict[str, Any]:
        result = step(f"evaluate {name}", lambda: evaluate_cached(folder, out / "eval" / f"{name}.json", cfg,
                                                                  reference, device))
        results.append(result)
        return result

    train = dict(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, weight_decay=0.0, device=device,
                 seed=cfg.seed, max_length=cfg.max_length, progress=False, echo=echo)
    data = step("data", lambda: write_model_demo_data(out / "data", cfg))
    memorise = dict(epochs=cfg.memorise_epochs, lr=cfg.memorise_lr, warmup=0.0, **train)
    target = step("target: fine-tune on retain + forget authors",
                  lambda: finetune(model, str(data["target"]), out / "target", **memorise)).out_dir
    retain = step("retain model: fine-tune on the retain authors only",
                  lambda: finetune(model, str(data["retain"]), out / "retain", **memorise)).out_dir
    evaluate(retain, "retain", None)
    reference = out / "eval" / "retain.json"
    evaluate(target, "target", reference)
    tv = step("task vector: fine-tune the target on the forget authors",
              lambda: task_vector_from_data(target, str(data["forget"]), out / "tv", epochs=cfg.forget_epochs,
                                            lr=cfg.forget_lr, warmup=0.0, **train)[0])
    maps: dict[str, Path] = {}  # weight-map method -> folder
    norm_ratio: dict[str, float] = {"tv": 1.0}  # label -> ||w ⊙ tau|| / ||tau||
    selectivity: dict[str, Any] = {}
    names = {str(target): "target", str(retain): "retain"}

    def weight_map(method: str) -> Path:
        if method not in maps:
            maps[method] = step(f"weight map ({method})", lambda: compute_weights(
                str(target), str(data["forget"]), str(data["retain"]), out / f"wm-{method}", method=method,
                retain_fraction=cfg.retain_fraction, seed=cfg.seed, device=device, progress=False,
                echo=lambda *_: None).out_dir)
        return maps[method]

    def task_arithmetic(label: str, map_method: str | None, p: float | None) -> None:
        wm = weight_map(map_method) if map_method else None
        if wm is not None:
            summary = summarise_folder(wm, tv, p=p)
            norm_ratio[label] = summary["groups"]["all"]["norm_w_tau_over_norm_tau"]
            summary["groups"] = {k: v for k, v in summary["groups"].items() if not k.startswith("layer:")}
            selectivity[label] = summary
        ratio = norm_ratio[label] if cfg.match_steps else 1.0
        alphas = [float(f"{a / ratio:.3g}") for a in cfg.alphas]
        folders = step(f"apply {label}", lambda: apply(
            target, tv, weights=wm, p=p, alphas=alphas, out_dir=out / "unlearned" / label, device=device,
            progress=False))
        for alpha, folder in zip(alphas, folders, strict=True):
            names[str(folder)] = label
            result = evaluate(Path(folder), f"{label}-{alpha:g}", reference)
            result["meta"]["step_norm"] = alpha * norm_ratio[label]

    def gradient(method: str) -> None:
        retain_data = str(data["retain"]) if UNLEARN_METHODS[method].retain != "refused" else None
        for lr, epochs in cfg.gradient_grid.get(method, ()):
            folder = step(f"unlearn {method} lr={lr:g} epochs={epochs:g}", lambda lr=lr, ep=epochs: unlearn(
                target, str(data["forget"]), out / "unlearned" / f"{method}-lr{lr:g}-ep{ep:g}", method=method,
                retain=retain_data, epochs=ep, lr=lr, warmup=0.0, **train).out_dir)
            evaluate(Path(folder), f"{method}-lr{lr:g}-ep{epochs:g}", reference)

    perta = {label: (m, p) for label, m, p in cfg.perta}
    # the order that makes a run stopped part-way most informative: TV and PerTA-fisher first, then NPO and GA
    first = [label for label in perta if label == "perta-fisher"]
    for stage in ("tv", *first, "npo", "ga", *(label for label in perta if label not in first), "gd"):
        if stage == "tv":
            task_arithmetic("tv", None, None)
        elif stage in perta:
            task_arithmetic(stage, *perta[stage])
        else:
            gradient(stage)
    tuned = run_tune(cfg, perta, target, tv, maps, data, out, device, step) if cfg.tune else {}
    for label, (alpha, folder, _) in tuned.items():
        names[str(folder)] = f"tune {label}"
        evaluate(folder, f"tune-{label}-{alpha:g}", reference)["meta"]["step_norm"] = alpha * norm_ratio[label]
    summary = summarise(results, cfg, names, methods=cfg.methods,
                        setup=model_setup(model, cfg, data, target, maps))
    summary["model"] = model
    summary["weight_maps"] = selectivity
    summary["tune"] = tune_report(summary, tuned)
    summary["compute_s"] = compute_per_method(step.timings, cfg)
    summary["timings_s"] = step.with_total()
    summary["peak_rss_gib"] = step.peaks
    return finish_experiment(summary, out, echo, plot_title=f"TOFU {cfg.forget_split} on {Path(model).name}")


def model_setup(model: str, cfg: ModelDemoConfig, data: dict[str, Path], target: Path,
                maps: dict[str, Path]) -> Setup:
    """The report's setup of a ``demo --model`` run: the model, every training's rows, the sweeps, the seed and a
    line per method."""
    def rows(name: str) -> int:
        return len(json.loads(data[name].read_text()))

    params = json.loads((target / "perta_config.json").read_text())["num_parameters"]
    forget, retain = rows("forget"), rows("retain")
    recipe = (f"{epoch_count(cfg.memorise_epochs)}, lr {cfg.memorise_lr:g}, batch {cfg.batch_size} x {cfg.grad_accum}, "
              f"at most {cfg.max_length} tokens per example")
    steps = ", ".join(f"{a:g}" for a in cfg.alphas)
    sweep = (f"matched step norms ‖αw⊙τ‖/‖τ‖ = {steps} (TV's alpha is the step; a PerTA map's alpha is the step "
             f"divided by its ‖w⊙τ‖/‖τ‖)" if cfg.match_steps else f"alphas {steps} for every method")
    grid = "; ".join(f"{m}: " + ", ".join(f"lr {lr:g} for {epoch_count(ep)}" for lr, ep in settings)
                     for m, settings in cfg.gradient_grid.items())
    search = (f"budget 0.95 on the retain answers' probability, alphas in [{cfg.tune_alpha_range[0]:g}, "
              f"{cfg.tune_alpha_range[1]:g}], at most {cfg.tune_max_evals} evaluated")
    data_lines = [
        ("target", f"{rows('target')} rows: {cfg.retain_authors} retain author(s) ({retain} rows) and the "
                   f"{FORGET_AUTHORS[cfg.forget_split]} {cfg.forget_split} authors ({forget} rows); {recipe}"),
        ("retain model", f"{retain} rows: the retain authors only; {recipe}"),
        ("task vector", f"the target fine-tuned on the {forget} forget rows ({epoch_count(cfg.forget_epochs)}, lr "
                        f"{cfg.forget_lr:g}) minus the target"),
        ("weight maps", weight_map_rows(maps)),
        ("task-arithmetic sweeps", sweep),
    ]
    if grid:
        data_lines.append(("gradient baselines", f"`perta-hub unlearn` on the {forget} forget rows (with the {retain} "
                                                 f"retain rows where the method uses them): {grid}"))
    if cfg.tune:
        data_lines.append(("tune", f"`perta-hub tune` on {', '.join(cfg.tune)}: {search}"))
    labels = ("target", "retain", *(m for m in cfg.methods if m in {"tv", *(p[0] for p in cfg.perta)}
                                    or m in cfg.gradient_grid), *(f"tune {label}" for label in cfg.tune))
    return Setup(title=f"TOFU {cfg.forget_split} unlearning report: {Path(model).name} (`perta-hub demo --model`)",
                 model=f"{model} ({params:,} parameters), fine-tuned into the target and the retain model with its "
                       f"own tokenizer and chat template",
                 data=tuple(data_lines), seeds=(cfg.seed,),
                 methods=method_lines(labels, cfg.perta, {label: search for label in cfg.tune}))


def run_tune(cfg: ModelDemoConfig, perta: dict[str, tuple[str, float]], target: Path, tv: Path,
             maps: dict[str, Path], data: dict[str, Path], out: Path, device: str,
             step: Callable[[str, Callable[[], Any]], Any]) -> dict[str, tuple[float, Path, dict[str, Any]]]:
    """``perta-hub tune`` on the TV and PerTA candidates ``cfg.tune`` (budget 0.95 on the retain answers'
    probability, the demo's forget and retain rows as signals); label -> (chosen alpha, chosen model folder,
    tune's record of the search)."""
    from perta_hub.errors import InputError
    from perta_hub.tuning.command import tune

    labels = list(cfg.tune)
    weights = ["none" if label == "tv" else str(maps[perta[label][0]]) for label in labels]
    try:
        run = step("tune (" + ", ".join(labels) + ")", lambda: tune(
            target, tv, weights=weights, forget=str(data["forget"]), retain=str(data["retain"]),
            out_dir=out / "tune", utility_budget=0.95, alpha_range=cfg.tune_alpha_range,
            max_evals=cfg.tune_max_evals, device=device, progress=False))
    except InputError as err:  # e.g. no alpha of the range keeps the budget: reported, the sweeps still stand
        step(f"tune found no alpha: {err}", lambda: None)
        return {}
    records = list(run["records"].values())
    return {label: (float(record["chosen"]), Path(folder), record)
            for label, record, folder in zip(labels, records, run["outputs"], strict=True)}


def tune_report(summary: dict[str, Any], tuned: dict[str, tuple[float, Path, dict[str, Any]]]) -> dict[str, Any]:
    """Per tuned label: tune's chosen alpha, how many alphas it evaluated over which span and a warning when the
    choice is at that span's edge, next to the sweep's best alpha within the utility budget by the full TOFU
    evaluation."""
    from perta_hub.tuning.report import edge_warning, searched

    report = {}
    for label, (alpha, _, record) in tuned.items():
        best = (summary["best"].get(label) or {}).get("within_budget")
        row = next((r for r in summary["rows"] if r["method"] == f"tune {label}"), None)
        count, lo, hi = searched(record)
        report[label] = {"chosen_alpha": alpha, "alphas_evaluated": count, "range": [lo, hi],
                         "edge": edge_warning(record),
                         "best_sweep_alpha_in_budget": best["alpha"] if best else None,
                         "chosen": {k: row[k] for k in ("forget_quality", "model_utility")} if row else None,
                         "best_sweep": {k: best[k] for k in ("forget_quality", "model_utility")} if best else None}
    return report


def evaluate_cached(folder: Path, path: Path, cfg: ModelDemoConfig, reference: Path | None,
                    device: str) -> dict[str, Any]:
    """The TOFU evaluation of ``folder`` (forget quality against ``reference``'s logs when given), kept in
    ``path``; an earlier result for the same folder and sizes is returned as it is."""
    from perta_hub.evaluation.outputs import save_results
    from perta_hub.evaluation.tofu import evaluate_tofu

    if path.is_file():
        cached = json.loads(path.read_text())
        meta = cached.get("meta", {})
        if (meta.get("model") == str(folder) and meta.get("max_examples") == cfg.eval_examples
                and meta.get("max_new_tokens") == cfg.max_new_tokens
                and (cfg.eval_dtype == "auto" or meta.get("dtype") == cfg.eval_dtype)):
            return cached
    result = evaluate_tofu(str(folder), forget_split=cfg.forget_split, retain_logs=reference,
                           data_dir=BUNDLED_TOFU, max_examples=cfg.eval_examples, batch_size=cfg.eval_batch_size,
                           max_new_tokens=cfg.max_new_tokens, device=device, dtype=cfg.eval_dtype, progress=False)
    save_results(result, path)
    return result


def compute_per_method(timings: dict[str, float], cfg: ModelDemoConfig) -> dict[str, Any]:
    """Seconds each method needed: TV = task vector + apply; PerTA = task vector + weight map + apply;
    a gradient method = its ``unlearn`` run per setting. Apply times are per sweep (all alphas)."""
    tv = timings.get("task vector: fine-tune the target on the forget authors", 0.0)
    evals = {k.removeprefix("evaluate "): v for k, v in timings.items() if k.startswith("evaluate ")}
    out: dict[str, Any] = {
        "tv": {"task_vector": tv, "apply_sweep": timings.get("apply tv", 0.0), "alphas": len(cfg.alphas)},
    }
    for label, m, _ in cfg.perta:
        out[label] = {"task_vector": tv, "weight_map": timings.get(f"weight map ({m})", 0.0),
                      "apply_sweep": timings.get(f"apply {label}", 0.0), "alphas": len(cfg.alphas)}
    tune_step = next((k for k in timings if k.startswith("tune (")), None)
    if tune_step:
        out["tune"] = {"search_and_write": timings[tune_step], "candidates": list(cfg.tune)}
    for method, grid in cfg.gradient_grid.items():
        out[method] = {f"lr={lr:g},ep={ep:g}": timings.get(f"unlearn {method} lr={lr:g} epochs={ep:g}", 0.0)
                       for lr, ep in grid}
    out["evaluation_per_model"] = evals
    return out


def config_dict(cfg: ModelDemoConfig) -> dict[str, Any]:
    return asdict(cfg)
