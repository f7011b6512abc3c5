"""Options of ``perta-hub tune`` and the defaults of :func:`perta_hub.tuning.command.tune`."""

from __future__ import annotations

from dataclasses import dataclass

from perta_hub.options.base import Choice, Options, Range, option
from perta_hub.options.common import (
    DEVICES,
    FILE,
    FOLDER,
    allow_pickle,
    data_dir,
    eps_option,
    lam_option,
    max_shard_size,
    p_option,
)
from perta_hub.options.evaluate import FORGET_SPLITS

#: the coarse grid's range when neither --alpha nor --alpha-range is given
DEFAULT_ALPHA_RANGE = (0.5, 8.0)


@dataclass(frozen=True)
class TuneOptions(Options):
    """Choose alpha in memory within a utility budget; write only the chosen model (as apply would)."""

    command = "tune"

    task_vector: str | None = option("--task-vector", required=True, help="Task-vector artifact: folder or Hub id.")
    weights: tuple[str, ...] = option(
        "--weights", multiple=True, default=(),
        help="Weight-map artifact (folder or Hub id); repeat to compare several (one chosen alpha each, output "
             "OUT/<folder name>); 'none' is the plain task vector. [default: none, w = 1]")
    forget: str | None = option("--forget", required=True,
                                help="Forget QA data for the signals: a .json/.jsonl/.parquet file, a Hub dataset "
                                     "(locuslab/TOFU:forget10) or tofu:CONFIG (bundled).")
    retain: str | None = option("--retain", required=True, help="Retain QA data for the signals (as --forget).")
    out_dir: str | None = option("-o", "--output", type=FOLDER, required=True,
                                 help="Output folder of the chosen model (a complete transformers checkpoint).")
    utility_budget: float = option(
        "--utility-budget", type=Range(float, min=0.0, max=1.0, min_open=True), default=0.95,
        help="Keep the mean retain-answer probability >= this fraction of the target's; the chosen alpha has "
             "the largest forget-answer NLL within it.")
    alphas: tuple[str, ...] = option(
        "--alpha", "--alphas", multiple=True, default=(),
        help="Coarse-grid alpha (> 0); repeat, or give a comma-separated list (--alphas 0.5,1,2). "
             "[default: evenly spaced in --alpha-range]")
    alpha_range: tuple[float, float] | None = option(
        "--alpha-range", type=(float, float), metavar="LO HI",
        help=f"Range of the coarse grid. [default: {DEFAULT_ALPHA_RANGE[0]:g} {DEFAULT_ALPHA_RANGE[1]:g}]")
    grid_points: int | None = option(
        "--grid-points", type=Range(int, min=1),
        help="Alphas in the coarse grid of --alpha-range; the rest of --max-evals bisects the boundary. "
             "[default: half of --max-evals]")
    max_evals: int = option("--max-evals", type=Range(int, min=1), default=12,
                            help="Alphas evaluated per weight map (coarse grid + bisection), besides the target.")
    forget_examples: int = option("--forget-examples", type=Range(int, min=1), default=32,
                                  help="Forget examples scored per alpha (a seeded subset, in file order).")
    retain_examples: int = option("--retain-examples", type=Range(int, min=1), default=32,
                                  help="Retain examples scored per alpha (a seeded subset, in file order).")
    rouge_questions: int = option("--rouge-questions", type=Range(int, min=0), default=0,
                                  help="Forget questions answered greedily per alpha for ROUGE-L recall (recorded, "
                                       "not part of the rule).")
    max_new_tokens: int = option("--max-new-tokens", type=Range(int, min=1), default=48,
                                 help="Generation budget of the ROUGE answers, in tokens.")
    batch_size: int = option("--batch-size", type=Range(int, min=1), default=8,
                             help="Sequences per forward pass (the batch's logits, batch x tokens x vocabulary, are "
                                  "the scoring's peak memory on top of the model).")
    max_length: int = option("--max-length", type=Range(int, min=2), default=512,
                             help="Tokens per example (prompt + answer); longer ones are cut.")
    data_dir: str | None = data_dir("Folder of <config>.json data files for repo:config specs [default: the Hub].")
    p: float | None = p_option()
    lam: float | None = lam_option()
    eps: float | None = eps_option()
    device: str = option("--device", type=DEVICES, default="auto",
                         help="Where the model runs and the merge math is done; auto picks cuda when visible.")
    max_shard_size: int | str = max_shard_size("output")
    allow_pickle: bool = allow_pickle("target")
    evaluate: bool = option("--evaluate", is_flag=True, default=False,
                            help="Run the full TOFU evaluation (evaluate's definitions) on the chosen model(s); "
                                 "the results go into the card and OUT.tofu_eval.json beside -o (a --retain-model's logs: "
                                 "OUT.tofu_eval.retain.json).")
    forget_split: str = option("--forget-split", type=Choice(FORGET_SPLITS), default="forget10",
                               help="TOFU forget split of --evaluate.")
    retain_model: str | None = option("--retain-model", help="Retain model of --evaluate (as in evaluate).")
    retain_logs: str | None = option("--retain-logs", type=FILE, help="Retain logs of --evaluate (as in evaluate).")
    eval_max_examples: int | None = option("--eval-max-examples", type=Range(int, min=1),
                                           help="--evaluate on the first N rows of each split [default: all].")


TUNE = TuneOptions()
