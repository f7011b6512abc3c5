"""Options of ``perta-hub demo`` (a bundled recipe, :mod:`perta_hub.demo`) and the defaults of
:func:`perta_hub.demo.run_demo`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Options, Range, option
from perta_hub.options.common import DEVICES, FOLDER


@dataclass(frozen=True)
class DemoOptions(Options):
    """Where the demo writes, how big it is and where it runs."""

    command = "demo"

    out_dir: str = option("-o", "--output", type=FOLDER, default="demo_out",
                          help="Folder for every model, artifact and result (a re-run reuses finished steps).")
    quick: bool = option("--quick", is_flag=True, default=False,
                         help="Fewer authors and a smaller model: 3 min 53 s measured on 2 CPU cores, about 7 "
                              "minutes while other jobs load them (docs/demo.md).")
    device: str = option("--device", type=DEVICES, default="auto",
                         help="Where training, importance, merging and evaluation run.")
    model: str | None = option(
        "--model",
        help="A pretrained model (Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or a folder) to fine-tune "
             "instead of the tiny Llama; then GradAscent, GradDiff and NPO run beside TV and PerTA "
             "(the recipe smollm2.yaml, follow-ups included: 48 min 9 s measured for SmolLM2-135M-Instruct on 2 CPU "
             "cores, docs/results-weak-target.md; --quick: fewer settings).")
    seeds: int | None = option(
        "--seeds", type=Range(int, min=1),
        help="Run the unlearning stage (task-vector fine-tune, unlearn baselines and what follows them) once per "
             "seed 0..K-1, into OUT/seed-<s>/; the target and retain models are trained once [default: one run].")


DEMO = DemoOptions()
