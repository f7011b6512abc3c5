"""What makes PerTA's weight map selective? Follow-up experiments on a finished ``perta-hub demo --model`` folder.

    python examples/investigate_perta.py DEMO_DIR --base PRETRAINED [--steps 2 3] [--more-retain-authors 10]

Reuses the demo's target, task vector, data, evaluation settings and retain model's logs (nothing of the demo is
changed; new outputs go to ``DEMO_DIR/investigate``) and evaluates, each at the step norms ``--steps`` (``||alpha
w ⊙ tau|| / ||tau||``, the demo's matched-norm axis):

* **more retain data**: the fisher map with the retain importance taken over ``--more-retain-authors`` further
  TOFU authors (never evaluated: the evaluation's retain rows are the demo's retain authors) beside the demo's
  retain rows;
* **the anchor**: the task vector taken against the pre-trained base (``target - base``, what the target learnt
  in fine-tuning) instead of the forget-tuned model (``finetuned_on_forget - target``), applied as plain TV at
  small alphas;
* **lam instead of more data**: the demo's fisher map with ``--lam`` (default 4, about the factor by which the
  median retain importance grew with the extra authors) at the same step norms, to tell the extra data's
  information from a mere rescaling of ``I_r``;
* **the front near the budget**: TV, PerTA-grad (the demo's map) and PerTA-fisher with more retain data at the
  further step norms ``--front-steps``.

Writes ``investigate/results.json`` and ``results.md`` (the demo's report format), ``results.png`` (the demo's
curves with the follow-up points and variants added) and prints the summary and where they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from perta_hub.data.loading import BUNDLED_TOFU
from perta_hub.demo.model import MODEL_DEFAULT, QUESTIONS_PER_AUTHOR, evaluate_cached
from perta_hub.demo.steps import Steps
from perta_hub.evaluation.plot import plot_methods
from perta_hub.evaluation.report import Setup, report_location, report_markdown, summarise, terminal_summary
from perta_hub.importance.summary import summarise_folder
from perta_hub.importance.weight_map import compute_weights
from perta_hub.merge.apply import apply
from perta_hub.merge.task_vector import task_vector


def more_retain_data(demo: Path, out: Path, authors: int) -> Path:
    """The demo's retain rows plus the next ``authors`` TOFU authors (after the demo's retain authors)."""
    full = json.loads((BUNDLED_TOFU / "full.json").read_text())
    start = MODEL_DEFAULT.retain_authors * QUESTIONS_PER_AUTHOR
    extra = full[start:start + authors * QUESTIONS_PER_AUTHOR]
    rows = json.loads((demo / "data" / "retain.json").read_text())
    rows += [{"question": r["question"], "answer": r["answer"]} for r in extra]
    path = out / "retain_more.json"
    path.write_text(json.dumps(rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--base", required=True, help="the pre-trained model the demo fine-tuned")
    parser.add_argument("--steps", type=float, nargs="+", default=[2.0, 3.0])
    parser.add_argument("--anchor-alphas", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--more-retain-authors", type=int, default=10)
    parser.add_argument("--front-steps", type=float, nargs="*", default=[1.75, 2.25, 2.5])
    parser.add_argument("--lam", type=float, default=4.0)
    parser.add_argument("--lam-steps", type=float, nargs="*", default=[2.0, 2.5, 3.0])
    parser.add_argument("--device", default="cpu")
    a = parser.parse_args()
    demo, cfg = a.demo, MODEL_DEFAULT
    out = demo / "investigate"
    out.mkdir(parents=True, exist_ok=True)
    step = Steps(print)
    target, tv, reference = demo / "target", demo / "tv", demo / "eval" / "retain.json"
    results: list[dict[str, Any]] = []
    names = {str(target): "target"}

    def evaluate(folder: Path, label: str, alpha: float, step_norm: float | None) -> None:
        result = step(f"evaluate {label}-{alpha:g}", lambda: evaluate_cached(
            folder, out / "eval" / f"{label}-{alpha:g}.json", cfg, reference, a.device))
        result["meta"]["step_norm"] = step_norm
        names[str(folder)] = label
        results.append(result)

    results.append(json.loads((demo / "eval" / "target.json").read_text()))
    retain_more = more_retain_data(demo, out, a.more_retain_authors)
    wm = out / "wm-fisher-more-retain"
    if not (wm / "perta_config.json").is_file():  # a finished map: compute-weights would recompute, then keep it
        step("fisher map, more retain data", lambda: compute_weights(
            str(target), str(demo / "data" / "forget.json"), str(retain_more), wm, method="fisher", device=a.device,
            progress=False, echo=lambda *_: None))
    selectivity = summarise_folder(wm, tv)
    ratio = selectivity["groups"]["all"]["norm_w_tau_over_norm_tau"]
    alphas = [float(f"{s / ratio:.3g}") for s in a.steps]
    folders = step("apply", lambda: apply(target, tv, weights=wm, alphas=alphas, out_dir=out / "perta-fisher-more-retain",
                                          device=a.device, progress=False))
    for alpha, folder in zip(alphas, folders, strict=True):
        evaluate(Path(folder), "perta-fisher-more-retain", alpha, alpha * ratio)

    tv_base = step("task vector against the base", lambda: task_vector(a.base, target, out / "tv-from-base",
                                                                         progress=False))
    folders = step("apply", lambda: apply(target, tv_base, alphas=list(a.anchor_alphas), out_dir=out / "tv-from-base",
                                          device=a.device, progress=False))
    for alpha, folder in zip(a.anchor_alphas, folders, strict=True):
        evaluate(Path(folder), "tv-from-base", alpha, None)

    for label, map_folder in (("tv", None), ("perta-grad", demo / "wm-grad"), ("perta-fisher-more-retain", wm)):
        ratio = summarise_folder(map_folder, tv)["groups"]["all"]["norm_w_tau_over_norm_tau"] if map_folder else 1.0
        alphas = [float(f"{s / ratio:.3g}") for s in a.front_steps]
        if not alphas:
            continue
        folders = step(f"apply {label}", lambda w=map_folder, al=alphas, lab=label: apply(
            target, tv, weights=w, alphas=al, out_dir=out / f"{lab}-front", device=a.device, progress=False))
        for alpha, folder in zip(alphas, folders, strict=True):
            evaluate(Path(folder), label, alpha, alpha * ratio)

    ratio = summarise_folder(demo / "wm-fisher", tv, lam=a.lam)["groups"]["all"]["norm_w_tau_over_norm_tau"]
    alphas = [float(f"{s / ratio:.3g}") for s in a.lam_steps]
    label = f"perta-fisher-lam{a.lam:g}"
    folders = step(f"apply {label}", lambda: apply(target, tv, weights=demo / "wm-fisher", lam=a.lam, alphas=alphas,
                                                   out_dir=out / label, device=a.device, progress=False))
    for alpha, folder in zip(alphas, folders, strict=True):
        evaluate(Path(folder), label, alpha, alpha * ratio)

    setup = Setup(
        title=f"Follow-ups on {demo} (`examples/investigate_perta.py`)",
        model=(json.loads((demo / "results.json").read_text()).get("setup") or {}).get("model") or str(target),
        data=(("demo", f"the target, task vector, maps, data and retain model's logs of {demo}"),
              ("more retain data", f"the fisher map over the demo's retain rows and {a.more_retain_authors} further "
                                   f"authors ({len(json.loads(retain_more.read_text()))} rows)")),
        seeds=(cfg.seed,),
        methods={"target": "the demo's target",
                 "perta-fisher-more-retain": "PerTA-fisher with the retain importance over more retain data",
                 "tv-from-base": "TV with tau = target - the pre-trained base (the anchor: the base)",
                 "tv": "the demo's task vector at further step norms",
                 "perta-grad": "the demo's grad map at further step norms",
                 label: f"the demo's fisher map with lam = {a.lam:g}"})
    summary = summarise(results, cfg, names, setup=setup,
                        methods=("perta-fisher-more-retain", "tv-from-base", "tv", "perta-grad", label))
    summary["selectivity_more_retain"] = {k: v for k, v in selectivity.items() if k != "groups"} | {
        "all": selectivity["groups"]["all"]}
    summary["timings_s"] = step.with_total()
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "results.md").write_text(report_markdown(summary))
    demo_rows = json.loads((demo / "results.json").read_text())["rows"]  # one figure: the demo's curves extended
    plot_methods({**summary, "rows": demo_rows + [r for r in summary["rows"] if r["method"] != "target"]},
                 out / "results.png", title="TOFU forget01, demo + follow-ups")
    print(terminal_summary(summary))
    print(report_location([out / "results.md", out / "results.png"]))

if __name__ == "__main__":
    main()
