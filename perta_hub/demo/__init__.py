"""``perta-hub demo``: TOFU-mini unlearning end to end, offline, on a laptop.

A small Llama memorises some fictitious TOFU authors (the **target**); a second one learns the same
authors without the forget authors (the **retain** model, the reference for forget quality). Then the
product's own steps run, through the public Python API: a task vector from fine-tuning the target on
the forget set, grad and fisher weight maps, ``apply`` over an alpha sweep for TV, PerTA-grad and
PerTA-fisher, and ``evaluate`` on every output. It writes ``results.json`` and the report
(:func:`perta_hub.evaluation.report.finish_experiment`: ``results.md``, ``results.png``, ``report.html``) and
prints where the report is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.loading import BUNDLED_TOFU
from perta_hub.demo.steps import Steps, epoch_count, peak_rss_gib, weight_map_rows
from perta_hub.evaluation.report import Setup, finish_experiment, method_lines, summarise
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
#: why the tiny demo is worth running although nothing forgets on it (its report says so when it happens)
SMOKE_TEST = ("A model of a few hundred thousand parameters that memorised its data verbatim has little to tell "
              "the forget authors from the others, and its few evaluated questions make the KS test coarse, so "
              "this run is a smoke test, not a measurement: it runs every step a real experiment runs (training, "
              "task vector, weight maps, apply, the TOFU evaluation, this report) offline in minutes, and shows "
              "the mechanics work.")


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
    from perta_hub.demo.tiny import build_tiny_llama, train_tokenizer

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
            scratch; then GradAscent, GradDiff and NPO run beside TV and PerTA (:mod:`perta_hub.demo.model`).
        model_config: the sizes of a ``model`` run (:class:`perta_hub.demo.model.ModelDemoConfig`; default
            ``MODEL_QUICK`` with ``quick``, else ``MODEL_DEFAULT``).
    Returns:
        the summary written to ``results.json``: config, per-model metrics, best alphas, timings.
    """
    from perta_hub.runtime.devices import one_torch_thread

    if model is not None:
        from perta_hub.demo.model import MODEL_DEFAULT, MODEL_QUICK, run_model_demo

        cfg_model = model_config or (MODEL_QUICK if quick else MODEL_DEFAULT)
        return run_model_demo(model, cfg_model, Path(out_dir), device, echo)
    cfg = QUICK if quick else DEFAULT
    with one_torch_thread():  # models of a few million parameters run faster on one CPU thread
        title = f"TOFU-mini unlearning report (`perta-hub demo{' --quick' if quick else ''}`)"
        return _run(cfg, Path(out_dir), device, echo, title)


def demo_setup(cfg: DemoConfig, data: dict[str, Path], target: Path, maps: dict[str, Path], title: str) -> Setup:
    """The report's setup of a tiny-demo run: the model, every training's rows (from the data files and the
    records), the seed, the methods."""
    def rows(name: str) -> int:
        return len(json.loads(data[name].read_text()))

    params = json.loads((target / "perta_config.json").read_text())["num_parameters"]
    forget, retain_authors = rows("forget"), rows("retain_authors")
    recipe = f"{epoch_count(cfg.memorise_epochs)} from scratch, lr {cfg.memorise_lr:g}, batch {cfg.batch_size}"
    return Setup(
        title=title,
        model=f"a Llama trained from scratch: hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} "
              f"heads, vocabulary {cfg.vocab_size} (a byte-level BPE trained on the TOFU text), {params:,} parameters",
        data=(("target", f"{rows('target')} rows: {cfg.retain_authors} retain authors ({retain_authors} rows), the "
                         f"{FORGET_AUTHORS[cfg.forget_split]} {cfg.forget_split} authors ({forget} rows), "
                         f"{cfg.eval_examples} real-author and {cfg.eval_examples} world-fact questions (the general "
                         f"knowledge a pretrained model would bring); {recipe}"),
              ("retain model", f"{rows('retain')} rows: the same without the forget authors; {recipe}"),
              ("task vector", f"the target fine-tuned on the {forget} forget rows ({epoch_count(cfg.forget_epochs)}, lr "
                              f"{cfg.forget_lr:g}) minus the target"),
              ("weight maps", weight_map_rows(maps)),
              ("sweeps", f"alphas {', '.join(f'{a:g}' for a in cfg.alphas)} for each method")),
        seeds=(cfg.seed,), methods=method_lines(("target", "retain", "tv", "perta-grad", "perta-fisher")),
        smoke_test=SMOKE_TEST)


def _run(cfg: DemoConfig, out: Path, device: str, echo: Callable[[str], None], title: str) -> dict[str, Any]:
    from perta_hub.evaluation import run_evaluation
    from perta_hub.importance.methods import METHODS
    from perta_hub.importance.weight_map import compute_weights
    from perta_hub.merge.apply import apply
    from perta_hub.training.finetune import finetune
    from perta_hub.training.from_data import task_vector_from_data

    out.mkdir(parents=True, exist_ok=True)
    step = Steps(echo)
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
    for method in METHODS:
        maps[method] = step(f"weight map ({method})", lambda m=method: compute_weights(
            str(target), str(data["forget"]), str(data["retain_authors"]), out / f"wm-{m}", method=m,
            retain_fraction=cfg.retain_fraction, seed=cfg.seed, device=device, progress=False,
            echo=lambda *_: None).out_dir)
    outputs: list[Path] = []
    for label, weights in (("tv", None), *((f"perta-{m}", wm) for m, wm in maps.items())):
        outputs += step(f"apply {label} (alphas {', '.join(map(str, cfg.alphas))})", lambda w=weights, lab=label: apply(
            target, tv, weights=w, alphas=list(cfg.alphas), out_dir=out / "unlearned" / lab, device=device,
            progress=False))
    max_examples = cfg.eval_examples
    evaluation = step("evaluate every model on TOFU", lambda: run_evaluation(
        [str(target), *map(str, outputs)], forget_split=cfg.forget_split, retain_model=str(retain),
        data_dir=BUNDLED_TOFU, max_examples=max_examples, output=out / "eval" / "tofu.json",
        batch_size=cfg.eval_batch_size, device=device, progress=False))
    retain_result = json.loads(Path(evaluation["retain_logs"]).read_text())
    summary = summarise([retain_result, *evaluation["results"]], cfg, {str(target): "target", str(retain): "retain"},
                        setup=demo_setup(cfg, data, target, maps, title))
    summary["timings_s"] = step.with_total()
    summary["peak_rss_gib"] = peak_rss_gib()
    return finish_experiment(summary, out, echo)
