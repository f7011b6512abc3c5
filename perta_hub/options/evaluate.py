"""Options of ``perta-hub evaluate`` and the defaults of :func:`perta_hub.evaluation.tofu.run_evaluation`
and :func:`perta_hub.evaluation.tofu.evaluate_tofu`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import FILE, MODEL_DTYPES, data_dir

#: TOFU forget splits (their retain models are retain99 / retain95 / retain90)
FORGET_SPLITS = ("forget01", "forget05", "forget10")


@dataclass(frozen=True)
class EvaluateOptions(Options):
    """The benchmark, its reference, the outputs and how the models run."""

    command = "evaluate"

    benchmark: str = option("--benchmark", type=Choice(("tofu",)), default="tofu",
                            help="Benchmark to run (TOFU, with open-unlearning's metric definitions).")
    forget_split: str = option("--forget-split", type=Choice(FORGET_SPLITS), default="forget10",
                               help="TOFU forget split (its retain model is retain99 / retain95 / retain90).")
    retain_logs: str | None = option(
        "--retain-logs", type=FILE,
        help="JSON of the retain model's evaluation on the same forget split (this command's -o output, "
             "or open-unlearning's TOFU_EVAL.json): the reference for forget quality.")
    retain_model: str | None = option(
        "--retain-model",
        help="Retain model (folder or Hub id) to evaluate first; its JSON is saved beside -o as "
             "<stem>.retain.json (or ./tofu_<split>_retain_logs.json) for reuse with --retain-logs.")
    output: str | None = option(
        "-o", "--output", type=FILE,
        help="Results JSON (TOFU_EVAL.json-style keys, every per-question value) [default: not written].")
    data_dir: str | None = data_dir(
        "Folder of TOFU <config>.json files (e.g. perta_hub/resources/tofu) [default: Hub locuslab/TOFU].")
    max_examples: int | None = option(
        "--max-examples", type=Range(int, min=1),
        help="Evaluate only the first N rows of each split, for quick runs (the JSON is marked as a "
             "subset) [default: all rows].")
    device: str = option("--device", default="auto", help="auto (cuda when a GPU is visible), cpu, or cuda[:N].")
    dtype: str = option("--dtype", type=MODEL_DTYPES, default="auto",
                        help="Model dtype; auto is bfloat16 on GPU, float32 on CPU.")
    batch_size: int = option("--batch-size", type=Range(int, min=1), default=16,
                             help="Sequences per forward pass and per generate call.")
    max_new_tokens: int = option("--max-new-tokens", type=Range(int, min=1), default=200,
                                 help="Greedy generation budget for ROUGE, in tokens (the benchmark uses 200).")
    max_length: int = option("--max-length", type=Range(int, min=2), default=512,
                             help="Tokens per example (prompt + answer); longer ones are cut.")
    mia_k: float = option(
        "--mia-k", type=Range(float, min=0, max=1, min_open=True), default=0.4,
        help="Fraction of the answer tokens that the Min-K% and Min-K%++ attacks average (the lowest-scoring "
             "ones; open-unlearning's 0.4).")
    bootstrap: int = option(
        "--bootstrap", type=Range(int, min=0), default=0,
        help="Resamples of the question rows (each split on its own, with replacement) for 95 % percentile "
             "intervals of every aggregate, forget quality, model utility and PrivLeak included; e.g. 1000 "
             "[default: 0, no intervals].", show_default=False)
    seed: int = option("--seed", type=Range(int, min=0), default=0,
                       help="Seed of the --bootstrap resampling (the same seed and rows give the same intervals).")
    write_card: bool = option("--write-card", is_flag=True, default=False,
                              help="Write the results into each model folder's README.md as model-index eval "
                                   "results.")
    plot: str | None = option("--plot", type=FILE,
                              help="PNG of forget quality (log scale) and of PrivLeak against model utility, one "
                                   "point per MODEL.")
    overwrite: bool = option(
        "--overwrite", is_flag=True, default=False,
        help="Replace existing -o, --plot and retain-logs files [default: refuse an existing file].")


EVALUATE = EvaluateOptions()
