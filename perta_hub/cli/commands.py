"""The ``perta-hub`` command: a thin click layer over the Python API.

Each command parses options, calls one API function and prints its result. Errors of the
package's own types become one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from perta_hub._version import __version__
from perta_hub.errors import PertaError


class _Group(click.Group):
    """A click group that turns known failures into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PertaError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: re-run the same command to resume; complete shards are kept.", err=True)
            sys.exit(130)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                click.echo(
                    f"Error: cannot write more ({err.strerror}: {err.filename or 'output'}); free space and re-run "
                    "the same command: complete shards are kept, partial ones are discarded.",
                    err=True,
                )
                sys.exit(1)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perta-hub")
def main() -> None:
    """Per-parameter task arithmetic (PerTA) unlearning for LLMs, integrated with the Hugging Face Hub."""


def max_shard_size_option(what: str) -> Any:
    """``--max-shard-size`` (bytes, or with a unit) for a command that writes ``what``."""
    return click.option("--max-shard-size", default="5GB", show_default=True,
                        help=f"Largest {what} shard: bytes, or with a unit (500MB = 500*10^6 bytes, 2GiB = 2*2^30 bytes).")


def allow_pickle_option(what: str) -> Any:
    """``--allow-pickle``: accept a ``.bin`` ``what`` (refused by default)."""
    return click.option("--allow-pickle", is_flag=True,
                        help=f"Accept a .bin (pickle) {what}. Pickle can run code: only for trusted sources.")


# -- publishing to the Hub: shared options and the helper the writing commands call ------------------------


class PushOptions:
    """The ``--push REPO --revision --create-pr --public/--private`` options of a command that writes a folder."""

    def __init__(self, repo: str | None, revision: str | None, create_pr: bool, private: bool | None) -> None:
        self.repo, self.revision, self.create_pr, self.private = repo, revision, create_pr, private

    def __bool__(self) -> bool:
        return self.repo is not None

    def check(self, n_outputs: int = 1) -> None:
        """Refuse option combinations that cannot work, before any work is done."""
        from perta_hub.errors import InputError

        if self.repo is None and (self.revision or self.create_pr or self.private is not None):
            raise InputError("--revision, --create-pr and --public/--private only apply with --push REPO")
        if self.create_pr and self.revision not in (None, "main"):
            raise InputError("--create-pr opens a pull request against main; leave out --revision")
        if self.repo is not None and n_outputs != 1:
            raise InputError(f"--push publishes one folder, but this run writes {n_outputs}; push each one with "
                             "`perta-hub push DIR REPO`")

    def push(self, folder: Any) -> Any:
        """Publish ``folder`` if ``--push`` was given (prints the result); returns the PushResult or None."""
        if self.repo is None:
            return None
        return push_and_report(folder, self.repo, private=self.private, revision=self.revision,
                               create_pr=self.create_pr)


def hub_push_options(func: Any) -> Any:
    """Add ``--push REPO --revision --create-pr --public/--private`` to a command.

    The command receives them as one ``push_options: PushOptions`` argument, calls
    ``push_options.check(n)`` before writing and ``push_options.push(folder)`` after.
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, push: str | None, push_revision: str | None, create_pr: bool,
                private: bool | None, **kwargs: Any) -> Any:
        return func(*args, push_options=PushOptions(push, push_revision, create_pr, private), **kwargs)

    options = [
        click.option("--push", "push", metavar="REPO", default=None,
                     help="After writing, publish the output folder to this Hub repo (org/name; created if missing)."),
        click.option("--revision", "push_revision", default=None,
                     help="Branch of the --push repo to commit to (created from main if missing) [default: main]."),
        click.option("--create-pr", is_flag=True, default=False,
                     help="Open a pull request on the --push repo instead of committing to main."),
        click.option("--private/--public", "private", default=None,
                     help="Visibility of a new --push repo. Task vectors, weight maps and models fine-tuned on "
                          "the forget data are private unless --public; unlearned models are public unless --private."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def push_and_report(folder: Any, repo: str, *, private: bool | None, revision: str | None = None,
                    create_pr: bool = False, commit_message: str | None = None) -> Any:
    """Push a folder with :func:`perta_hub.hub.publish` and print what happened (warning once if public)."""
    from perta_hub.hub.publish import public_artifact_warning, publish
    from perta_hub.io.hub_source import split_repo_id

    warning = public_artifact_warning(folder, split_repo_id(repo)[0], private)
    if warning:
        click.echo(warning, err=True)
    result = publish(folder, repo, private=private, revision=revision, create_pr=create_pr,
                     commit_message=commit_message)
    visibility = {True: "private", False: "public"}.get(result.private, "visibility: Hub default")
    if result.pr_url:
        click.echo(f"Opened pull request {result.pr_url} on {result.repo_id} ({visibility}): commit {result.commit}")
    elif result.changed:
        click.echo(f"Pushed {folder} to {result.repo_id}@{result.revision} ({visibility}): commit {result.commit}")
    else:
        click.echo(f"{result.repo_id}@{result.revision} already holds {folder} ({visibility}): commit "
                   f"{result.commit}; nothing uploaded")
    return result


# -- fine-tuning options shared by `finetune` and `task-vector MODEL --forget DATA` ----------------------------

def _option(flag: str, field: str, **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
    return flag, field, kwargs


#: (flag, TrainingOptions field, click.option keywords) of every training option, in --help order
_TRAINING_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    _option("--epochs", "epochs", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
            help="Passes over the data (TOFU recipe: 5); a fraction stops part-way through the last one."),
    _option("--lr", "lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
            help="Peak learning rate of AdamW, reached after --warmup, then linear decay to 0."),
    _option("--batch-size", "batch_size", type=click.IntRange(min=1), default=4, show_default=True,
            help="Examples per process per forward/backward (micro-batch)."),
    _option("--grad-accum", "grad_accum", type=click.IntRange(min=1), default=None,
            help="Micro-batches per optimizer step [default: ceil(32 / (batch-size x processes)), so that "
                 "batch-size x grad-accum x processes = 32 examples per step]."),
    _option("--weight-decay", "weight_decay", type=click.FloatRange(min=0), default=0.01, show_default=True,
            help="AdamW decoupled weight decay."),
    _option("--warmup", "warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
            help="Linear learning-rate warmup, in epochs (converted to optimizer steps)."),
    _option("--max-length", "max_length", type=click.IntRange(min=2), default=512, show_default=True,
            help="Tokens per example (prompt + answer); longer ones are cut, and dropped if no answer token "
                 "is left."),
    _option("--seed", "seed", type=int, default=0, show_default=True,
            help="Seed of the data order and of the LoRA initialisation (an integer)."),
    _option("--gradient-checkpointing", "gradient_checkpointing", is_flag=True, default=False,
            help="Recompute activations in backward: less memory, about 30% more time [default: off]."),
    _option("--device", "device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
            help="auto picks cuda when a GPU is visible (then bf16); under `accelerate launch` each process "
                 "takes its own GPU."),
    _option("--train-dtype", "train_dtype", type=click.Choice(["auto", "bfloat16", "float32"]), default="auto",
            show_default=True,
            help="Weights' dtype while training: auto = bfloat16 on GPU (bf16 weights, gradients and AdamW "
                 "states), float32 on CPU; float32 on GPU = mixed precision (bf16 autocast, 2x memory)."),
    _option("--optim", "optim", default="adamw_torch", show_default=True,
            help="transformers optimizer name; adamw_bnb_8bit / paged_adamw_8bit need the optional "
                 "bitsandbytes package."),
    _option("--max-steps", "max_steps", type=click.IntRange(min=1), default=None,
            help="Stop after this many optimizer steps (overrides --epochs) [default: by epochs]."),
    _option("--lora-rank", "lora_rank", type=click.IntRange(min=1), default=None,
            help="Fine-tune LoRA adapters of rank R (peft) instead of the whole model [default: full "
                 "fine-tuning]."),
    _option("--lora-alpha", "lora_alpha", type=click.FloatRange(min=0, min_open=True), default=None,
            help="LoRA alpha; the update is (alpha / R) * B @ A [default: 2 x R]."),
    _option("--lora-targets", "lora_targets", default="all-linear", show_default=True,
            help="Modules that get adapters: all-linear (every linear layer but the output head) or "
                 "comma-separated names such as q_proj,v_proj."),
    _option("--question-field", "question_field", default="question", show_default=True,
            help="Column holding the question."),
    _option("--answer-field", "answer_field", default="answer", show_default=True,
            help="Column holding the answer."),
    _option("--data-dir", "data_dir", type=click.Path(file_okay=False), default=None,
            help="Folder of <config>.json files that 'repo:config' data specs resolve to (offline copy)."),
]


def training_options(func: Any) -> Any:
    """Add the fine-tuning options; the command receives ``training: TrainingOptions`` and
    ``training_given: list[str]`` (the flags set on the command line)."""
    import functools

    from click.core import ParameterSource

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from perta_hub.training.finetune import TrainingOptions

        ctx = click.get_current_context()
        values = {field: kwargs.pop(field) for _, field, _ in _TRAINING_OPTIONS}
        given = [flag for flag, field, _ in _TRAINING_OPTIONS
                 if ctx.get_parameter_source(field) not in (ParameterSource.DEFAULT, None)]
        return func(*args, training=TrainingOptions(**values), training_given=given, **kwargs)

    for flag, field, kwargs in reversed(_TRAINING_OPTIONS):
        wrapper = click.option(flag, field, **kwargs)(wrapper)
    return wrapper


@main.command("task-vector")
@click.argument("model", required=False)
@click.option("--forget", default=None,
              help="With MODEL: forget data to fine-tune MODEL on first ('org/name:config' such as "
                   "locuslab/TOFU:forget10, 'tofu:CONFIG' for the bundled copy, or a .json/.jsonl/.parquet file).")
@click.option("--finetuned-dir", type=click.Path(file_okay=False), default=None,
              help="With MODEL --forget: keep the fine-tuned model in this folder [default: a temporary folder "
                   "beside -o, deleted once the task vector is written].")
@click.option("--base", default=None, help="Anchor model: folder, .safetensors file or Hub id org/name[@revision].")
@click.option("--finetuned", default=None, help="The anchor fine-tuned on the forget data (same architecture).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Artifact folder to create (resumed if an identical run was interrupted).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Storage dtype of the difference (computed in float32).")
@max_shard_size_option("artifact")
@allow_pickle_option("checkpoint")
@training_options
@hub_push_options
def task_vector_command(model: str | None, forget: str | None, finetuned_dir: str | None, base: str | None,
                        finetuned: str | None, out_dir: str, dtype: str, max_shard_size: str, allow_pickle: bool,
                        training: Any, training_given: list[str], push_options: PushOptions) -> None:
    """Write a task vector (theta_finetuned - theta_base, streamed, in float32) as an artifact folder.

    \b
    Two forms:
      perta-hub task-vector --base A --finetuned B -o DIR
          the difference B - A of two existing checkpoints;
      perta-hub task-vector MODEL --forget DATA -o DIR [training options] [--finetuned-dir DIR]
          fine-tunes MODEL on DATA (as `perta-hub finetune`; with --lora-rank R the task vector is the
          adapters' merged low-rank delta, zero elsewhere), then writes the difference against MODEL.
    Multi-GPU: prefix the second form with `accelerate launch [--config_file FSDP_OR_DEEPSPEED.yaml]`.
    """
    from perta_hub.errors import InputError

    convenience = model is not None or forget is not None or finetuned_dir is not None
    explicit = base is not None or finetuned is not None
    if convenience and explicit:
        raise InputError("use either `task-vector MODEL --forget DATA` (fine-tune, then the difference) or "
                         "`task-vector --base A --finetuned B`, not both")
    push_options.check(1)
    if not convenience:
        if base is None or finetuned is None:
            raise InputError("pass --base A --finetuned B (two checkpoints), or MODEL --forget DATA to fine-tune "
                             "MODEL first")
        if training_given:
            raise InputError(f"{', '.join(training_given)}: training options only apply to "
                             "`task-vector MODEL --forget DATA`; --base/--finetuned take two existing checkpoints")
        from perta_hub.merge.task_vector import task_vector

        out = task_vector(base, finetuned, out_dir, dtype=dtype, max_shard_size=max_shard_size,
                          allow_pickle=allow_pickle)
    else:
        if model is None or forget is None:
            raise InputError("the fine-tuning form needs both MODEL and --forget DATA: "
                             "`perta-hub task-vector MODEL --forget DATA -o DIR`")
        from perta_hub.training.finetune import task_vector_from_data

        artifact, result = task_vector_from_data(model, forget, out_dir, finetuned_dir=finetuned_dir,
                                                 options=training, dtype=dtype, max_shard_size=max_shard_size,
                                                 allow_pickle=allow_pickle)
        if artifact is None:  # another process of an `accelerate launch` run: the main one reports
            return
        click.echo(result.final_line())
        out = artifact
    click.echo(f"task vector written to {out}")
    push_options.push(out)


@main.command("finetune")
@click.argument("model")
@click.option("--data", required=True,
              help="Question/answer data: Hub dataset 'org/name:config' (e.g. locuslab/TOFU:forget10), "
                   "'tofu:CONFIG' (bundled TOFU copy) or a local .json/.jsonl/.parquet file.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model folder to create (refused if it holds anything else; returned as is if it already "
                   "holds this exact run).")
@max_shard_size_option("weight")
@allow_pickle_option("model")
@training_options
@hub_push_options
def finetune_command(model: str, data: str, out_dir: str, max_shard_size: str, allow_pickle: bool, training: Any,
                     training_given: list[str], push_options: PushOptions) -> None:
    """Fine-tune MODEL on question/answer DATA (loss on the answers): the privacy-tuned theta_ft.

    MODEL is a folder or a Hub id org/name[@revision]. transformers' Trainer does the training; the
    output is a transformers checkpoint (config, tokenizer, sharded safetensors; with --lora-rank the
    merged model plus the adapter in adapter/) with a card and perta_config.json. Several GPUs:
    `accelerate launch [--config_file FSDP_OR_DEEPSPEED.yaml] -m perta_hub finetune ...`.
    """
    from perta_hub.training.finetune import finetune

    push_options.check(1)
    result = finetune(model, data, out_dir, options=training, max_shard_size=max_shard_size,
                      allow_pickle=allow_pickle)
    if result.is_main:
        click.echo(result.final_line())
        push_options.push(result.out_dir)


@main.command("apply")
@click.argument("model")
@click.option("--task-vector", "task_vector_source", required=True, help="Task-vector artifact: folder or Hub id.")
@click.option("--weights", default=None, help="Weight-map artifact (folder or Hub id). Without it w = 1: plain task-vector negation.")
@click.option("--alpha", "alphas", multiple=True, required=True,
              help="Scale of the subtracted vector (a number). Repeat for a sweep: one output per alpha in OUT/alpha-A/.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: a complete transformers checkpoint (or one per alpha).")
@click.option("--p", "p", type=float, default=None, help="Exponent p in w = I_f^p / (I_f^p + lam I_r^p + eps) [default: the weight map's, 1].")
@click.option("--lam", type=float, default=None, help="Retention weight lam [default: the weight map's, 1].")
@click.option("--eps", type=float, default=None, help="Stabiliser eps, in importance units [default: the weight map's].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the fp32 math runs; auto picks cuda when a GPU is visible.")
@max_shard_size_option("output")
@allow_pickle_option("target")
@hub_push_options
def apply_command(model: str, task_vector_source: str, weights: str | None, alphas: tuple[str, ...], out_dir: str,
                  p: float | None, lam: float | None, eps: float | None, device: str, max_shard_size: str,
                  allow_pickle: bool, push_options: PushOptions) -> None:
    """Unlearn: theta = theta_MODEL - alpha * (w * tau), streamed shard by shard."""
    from perta_hub.merge.apply import apply

    push_options.check(len(alphas))
    outs = apply(model, task_vector_source, alphas=list(alphas), out_dir=out_dir, weights=weights, p=p, lam=lam, eps=eps,
                 device=device, max_shard_size=max_shard_size, allow_pickle=allow_pickle)
    for folder in outs:
        click.echo(f"unlearned model written to {folder}")
    push_options.push(outs[0])


@main.command("compute-weights")
@click.argument("model")
@click.option("--forget", required=True,
              help="Forget data: Hub dataset 'org/name:config' (e.g. locuslab/TOFU:forget10), 'tofu:CONFIG' "
                   "(bundled TOFU copy) or a local .json/.jsonl/.parquet file.")
@click.option("--retain", required=True, help="Retain data, in the same forms as --forget.")
@click.option("--method", type=click.Choice(["grad", "fisher"]), required=True,
              help="grad: I = |mean over examples of the gradient|; fisher: I = mean over examples of the "
                   "per-example gradient squared.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Weight-map artifact folder to create.")
@click.option("--question-field", default="question", show_default=True, help="Column holding the question.")
@click.option("--answer-field", default="answer", show_default=True, help="Column holding the answer.")
@click.option("--max-length", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per example (prompt + answer); longer examples are cut, and dropped if no answer "
                   "token is left.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Examples per forward/backward step (grad); examples loaded per step (fisher runs each "
                   "example alone).")
@click.option("--retain-fraction", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Fraction (0, 1] of the retain rows to use, sampled with --seed [default: all rows].")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="At most this many retain rows (examples), sampled with --seed [default: all rows].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the retain subsample (an integer).")
@click.option("--params", default=None,
              help="Regular expression (re.search) on parameter names: only matching parameters get importances; "
                   "apply leaves the others at w = 1 [default: every parameter].")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True,
              help="Storage dtype of the importances (computed in float32); values that underflow to zero are "
                   "counted and reported.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where gradients are computed; auto picks cuda when a GPU is visible (bf16 autocast there).")
@click.option("--gradient-checkpointing", is_flag=True, default=False,
              help="Recompute decoder layers during backward: one layer's activations kept instead of all, "
                   "one extra forward pass per step [default: off].")
@click.option("--gradients-at", type=click.Choice(["target", "anchor"]), default="target", show_default=True,
              help="Role of MODEL in the task arithmetic (recorded in perta_config.json): the model being "
                   "unlearned (target) or the anchor of the task vector.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of <config>.json files that 'repo:config' data specs resolve to (offline copy).")
@max_shard_size_option("artifact")
@allow_pickle_option("model")
@hub_push_options
def compute_weights_command(model: str, forget: str, retain: str, method: str, out_dir: str, question_field: str,
                            answer_field: str, max_length: int, batch_size: int, retain_fraction: float | None,
                            max_examples: int | None, seed: int, params: str | None, dtype: str, device: str,
                            gradient_checkpointing: bool, gradients_at: str, data_dir: str | None,
                            max_shard_size: str, allow_pickle: bool, push_options: PushOptions) -> None:
    """Per-parameter importances of MODEL for the forget and retain data, saved as a weight map.

    MODEL is a folder or a Hub id org/name[@revision]. Data-parallel: prefix with
    `accelerate launch --num_processes N` (same result as one process).
    """
    from perta_hub.importance.weight_map import compute_weights

    push_options.check(1)
    summary = compute_weights(
        model, forget, retain, out_dir, method=method, question_field=question_field, answer_field=answer_field,
        max_length=max_length, batch_size=batch_size, retain_fraction=retain_fraction, max_examples=max_examples,
        seed=seed, params=params, dtype=dtype, device=device, gradient_checkpointing=gradient_checkpointing,
        data_dir=data_dir, max_shard_size=max_shard_size, gradients_at=gradients_at, allow_pickle=allow_pickle,
    )
    if summary.is_main:
        click.echo(summary.final_line())
        push_options.push(summary.out_dir)


@main.command("evaluate")
@click.argument("models", nargs=-1, required=True)
@click.option("--benchmark", type=click.Choice(["tofu"]), default="tofu", show_default=True,
              help="Benchmark to run (TOFU, with open-unlearning's metric definitions).")
@click.option("--forget-split", type=click.Choice(["forget01", "forget05", "forget10"]), default="forget10",
              show_default=True, help="TOFU forget split (its retain model is retain99 / retain95 / retain90).")
@click.option("--retain-logs", type=click.Path(dir_okay=False), default=None,
              help="JSON of the retain model's evaluation on the same forget split (this command's -o output, "
                   "or open-unlearning's TOFU_EVAL.json): the reference for forget quality.")
@click.option("--retain-model", default=None,
              help="Retain model (folder or Hub id) to evaluate first; its JSON is saved beside -o as "
                   "<stem>.retain.json (or ./tofu_<split>_retain_logs.json) for reuse with --retain-logs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Results JSON (TOFU_EVAL.json-style keys, every per-question value) [default: not written].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of TOFU <config>.json files (e.g. perta_hub/resources/tofu) [default: Hub locuslab/TOFU].")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Evaluate only the first N rows of each split, for quick runs (the JSON is marked as a "
                   "subset) [default: all rows].")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda when a GPU is visible), cpu, or cuda[:N].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Model dtype; auto is bfloat16 on GPU, float32 on CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences per forward pass and per generate call.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=200, show_default=True,
              help="Greedy generation budget for ROUGE, in tokens (the benchmark uses 200).")
@click.option("--max-length", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per example (prompt + answer); longer ones are cut.")
@click.option("--write-card", is_flag=True, default=False,
              help="Write the results into each model folder's README.md as model-index eval results.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG of forget quality (log scale) against model utility, one point per MODEL.")
def evaluate_command(models: tuple[str, ...], benchmark: str, forget_split: str, retain_logs: str | None,
                     retain_model: str | None, output: str | None, data_dir: str | None, max_examples: int | None,
                     device: str, dtype: str, batch_size: int, max_new_tokens: int, max_length: int,
                     write_card: bool, plot: str | None) -> None:
    """TOFU forget quality, model utility and extraction strength of one or more MODELs.

    Each MODEL is a folder or a Hub id org/name[@revision]; several (e.g. apply outputs for several
    alphas) give one table and, with --plot, one PNG.
    """
    from perta_hub.evaluation import run_evaluation

    run = run_evaluation(
        list(models), benchmark=benchmark, forget_split=forget_split, retain_logs=retain_logs,
        retain_model=retain_model, output=output, write_card=write_card, plot=plot,
        echo=lambda msg: click.echo(msg, err=True), data_dir=data_dir, max_examples=max_examples,
        device=device, dtype=dtype, batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=max_length,
    )
    click.echo(run["table"])
    for label, path in (("results", run["output"]), ("plot", run["plot"])):
        if path is not None:
            click.echo(f"Wrote {label} to {path}")
    for card in run["cards"]:
        click.echo(f"Wrote eval results into {card}")


@main.command("push")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("repo", metavar="REPO")
@click.option("--private/--public", "private", default=None,
              help="Visibility of a new repo. Task vectors, weight maps and fine-tuned models (kind in "
                   "perta_config.json) are private unless --public; other folders are public unless --private.")
@click.option("--revision", default=None, help="Branch to commit to (created from main if missing) [default: main].")
@click.option("--create-pr", is_flag=True, default=False, help="Open a pull request against main instead of committing.")
@click.option("--commit-message", default=None,
              help="Commit title [default: 'perta-hub: ' + the command recorded in perta_config.json].")
def push_command(folder: str, repo: str, private: bool | None, revision: str | None, create_pr: bool,
                 commit_message: str | None) -> None:
    """Publish an artifact or model folder DIR to the Hub repo REPO (org/name, created if missing).

    Stale weight shards of an earlier version are deleted, unchanged files are not uploaded again (re-run
    an interrupted push to complete it), and the commit sha is printed and recorded in perta_config.json
    and the card. The token comes from HF_TOKEN or `hf auth login`.
    """
    push_and_report(folder, repo, private=private, revision=revision, create_pr=create_pr,
                    commit_message=commit_message)


@main.command("demo")
@click.option("-o", "--output", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every model, artifact and result (a re-run reuses finished steps).")
@click.option("--quick", is_flag=True, help="Fewer authors and a smaller model: about 3 minutes on 2 CPU cores.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where training, importance, merging and evaluation run.")
def demo_command(out_dir: str, quick: bool, device: str) -> None:
    """TOFU-mini unlearning end to end, offline: train, forget with TV / PerTA-grad / PerTA-fisher, evaluate."""
    from perta_hub.demo import run_demo

    run_demo(out_dir, quick=quick, device=device, echo=click.echo)
