"""``compute-weights``: forget and retain importances of a model, saved as a weight-map artifact.

Loads the model and the two QA datasets, runs :func:`perta_hub.importance.accumulate_importance`
on the forget set, keeps the result (cast to the storage dtype, on the CPU), runs it again on the
retain set, and writes both with :func:`perta_hub.artifacts.save_artifact`. ``apply`` combines
them into ``w = I_f^p / (I_f^p + lam * I_r^p + eps)``. See ``docs/compute-weights.md``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perta_hub.data.encoding import load_tokenizer
from perta_hub.errors import InputError, MismatchError
from perta_hub.importance.methods import METHODS
from perta_hub.io.output_folder import refuse_unusable
from perta_hub.merge.math import DEFAULT_LAM, DEFAULT_P
from perta_hub.options.compute_weights import COMPUTE_WEIGHTS, ComputeWeightsOptions
from perta_hub.runtime.devices import resolve_device
from perta_hub.runtime.distributed import SINGLE_CPU_PROCESS_NOTE, fsdp_launch, single_process_cpu_launch

if TYPE_CHECKING:
    import torch

# The recorded p, lam and eps are merge.math's defaults; eps only guards 0/0 where both importances vanish and
# is the same gradient scale, merge.math.DEFAULT_EPS = 1e-12, in each method's units (ImportanceMethod.eps):
# grad importances are |gradients| (eps = 1e-12), fisher importances are squared gradients (eps = (1e-12)**2).
# Both are far below any importance that bf16 storage keeps meaningfully and far above the fp32 underflow
# threshold (1.2e-38), so w = I_f / (I_f + I_r) wherever either is non-negligible.


@dataclass
class WeightsSummary:
    """What :func:`compute_weights` did.

    Attributes:
        out_dir: the artifact folder (written by the main process).
        num_examples: {"forget": n, "retain": n}, over all processes.
        num_answer_tokens: {"forget": n, "retain": n}.
        underflow: {"importance_forget": n, "importance_retain": n}: entries non-zero in fp32 that are
            zero in the storage dtype.
        num_entries: number of importance values per group (selected parameters' elements).
        seconds: wall-clock time of the whole run, in seconds.
        peak_memory_bytes: peak memory (see ``peak_memory_kind``) of this process, in bytes.
        peak_memory_kind: ``"GPU max allocated"`` or ``"max RSS"``.
        is_main: True on the process that wrote the artifact (the only one, or rank 0).
        selectivity: how ``w`` spreads (:mod:`perta_hub.importance.summary`; recorded as ``selectivity``); with a
            task vector, read back from the saved map with ``norm_w_tau_over_norm_tau`` (None off the main process).
    """

    out_dir: Path
    num_examples: dict[str, int]
    num_answer_tokens: dict[str, int]
    underflow: dict[str, int]
    num_entries: int
    seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    is_main: bool = True
    selectivity: dict[str, Any] | None = None

    def selectivity_lines(self) -> list[str]:
        """The selectivity summary as lines (a table: the whole map and each module type), then, with a task
        vector, ``||w*tau|| / ||tau||`` over every tensor of it."""
        from perta_hub.importance.summary import selectivity_markdown

        s = self.selectivity
        if s is None:
            return []
        shown = {**s, "groups": {k: v for k, v in s["groups"].items() if not k.startswith("layer:")}}
        lines = selectivity_markdown(shown).rstrip("\n").split("\n")
        if "norm_w_tau_over_norm_tau" in s:
            ratio = s["norm_w_tau_over_norm_tau"]
            lines.append(f"||w*tau|| / ||tau|| = {ratio:.4g} over every tensor of the task vector {s['task_vector']}: "
                         f"apply --alpha A steps A x {ratio:.4g}; apply --step S sets alpha = S / {ratio:.4g}")
        return lines

    def final_line(self) -> str:
        """One line for the terminal: time, peak memory, underflow."""
        gib = self.peak_memory_bytes / 2**30
        under = sum(self.underflow.values())
        return (f"compute-weights: done in {self.seconds:.1f} s, peak memory {gib:.2f} GiB "
                f"({self.peak_memory_kind}); {under} of {2 * self.num_entries} importance values underflowed "
                f"to zero in the storage dtype; artifact in {self.out_dir}")


def compute_weights(
    model: str,
    forget: str,
    retain: str,
    out_dir: str | Path,
    *,
    method: str = COMPUTE_WEIGHTS.method,
    question_field: str = COMPUTE_WEIGHTS.question_field,
    answer_field: str = COMPUTE_WEIGHTS.answer_field,
    max_length: int = COMPUTE_WEIGHTS.max_length,
    batch_size: int = COMPUTE_WEIGHTS.batch_size,
    retain_fraction: float | None = COMPUTE_WEIGHTS.retain_fraction,
    max_examples: int | None = COMPUTE_WEIGHTS.max_examples,
    seed: int = COMPUTE_WEIGHTS.seed,
    params: str | None = COMPUTE_WEIGHTS.params,
    unrestricted_rest: bool = COMPUTE_WEIGHTS.unrestricted_rest,
    dtype: str = COMPUTE_WEIGHTS.dtype,
    device: str = COMPUTE_WEIGHTS.device,
    gradient_checkpointing: bool = COMPUTE_WEIGHTS.gradient_checkpointing,
    data_dir: str | Path | None = COMPUTE_WEIGHTS.data_dir,
    max_shard_size: int | str = COMPUTE_WEIGHTS.max_shard_size,
    gradients_at: str = COMPUTE_WEIGHTS.gradients_at,
    allow_pickle: bool = COMPUTE_WEIGHTS.allow_pickle,
    task_vector: str | Path | None = COMPUTE_WEIGHTS.task_vector,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> WeightsSummary:
    """Compute ``I_f`` (forget) and ``I_r`` (retain) for every parameter of ``model`` and save a weight map.

    Args:
        model: local model folder or Hub id ``org/name[@revision]`` (the model whose gradients are taken).
        forget, retain: data specs for :func:`perta_hub.data.load_qa` (``locuslab/TOFU:forget10``,
            a .json/.jsonl/.parquet file, ``tofu:forget10`` for the bundled copy).
        out_dir: artifact folder to create.
        method: a name of :data:`perta_hub.importance.methods.METHODS`: ``"grad"`` (``|mean g_i|``) or
            ``"fisher"`` (``mean g_i**2``).
        question_field, answer_field: column names of the question and the answer.
        max_length: tokens per example (prompt + answer), longer ones are cut.
        batch_size: examples per forward/backward for grad; examples loaded per step for fisher
            (which runs them one at a time).
        retain_fraction: keep this fraction (0, 1] of the retain rows (seeded), None = all.
        max_examples: keep at most this many retain rows (seeded), None = all.
        seed: seed of the retain subsample.
        params: regex (``re.search``) of parameter names to keep; others get no entry, and ``apply`` leaves
            them unchanged (w = 0; recorded as ``"unrestricted": "w=0"``).
        unrestricted_rest: with ``params``, ``apply`` uses w = 1 (plain task arithmetic) for the other
            parameters instead (recorded as ``"unrestricted": "w=1"``).
        dtype: storage dtype, ``bfloat16`` (default), ``float16`` or ``float32``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; on CUDA bf16 autocast is used.
        gradient_checkpointing: recompute each decoder layer in backward (less activation memory).
        data_dir: folder of ``<config>.json`` files that ``repo:config`` specs resolve to.
        max_shard_size: shard limit of the artifact (``5GB``, ``500MB`` or bytes).
        gradients_at: ``target`` or ``anchor``: which role ``model`` plays in the task arithmetic.
        allow_pickle: accept a pickle (.bin) model checkpoint.
        task_vector: the task-vector artifact the map is for (folder or Hub id): checked against ``model`` before
            any gradient, and ``||w ⊙ tau|| / ||tau||`` over its tensors added to the returned ``selectivity``.
        progress: report progress (main process): a bar per pass on a terminal, lines elsewhere.
        echo: where status lines go (default: stderr on the main process).
    Returns:
        :class:`WeightsSummary`.
    Raises:
        InputError: an option out of its range or choices (:class:`ComputeWeightsOptions`, as on the command line).
    """
    ComputeWeightsOptions.pick(locals())  # the command line's checks, one line naming the option
    import torch

    start = time.perf_counter()
    spec = METHODS[method]
    storage = getattr(torch, dtype)

    from accelerate import Accelerator, PartialState

    # cpu=True also for `auto` without a GPU: accelerate then forms a CPU (gloo) group under a multi-process
    # launch; without it every process would run alone. An FSDP config needs the full AcceleratorState
    # (PartialState alone never selects FSDP).
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=on_cpu) if fsdp_launch() else None
    state = PartialState(cpu=on_cpu)
    is_main = state.is_main_process
    say = echo or ((lambda line: print(line, file=sys.stderr, flush=True)) if is_main else (lambda line: None))
    if single_process_cpu_launch(state):
        say("compute-weights: " + SINGLE_CPU_PROCESS_NOTE.format(
            consequence="the result is the same, computed by one process"))
    fsdp = accelerator is not None and accelerator.distributed_type.value == "FSDP"
    if fsdp and not accelerator.is_fsdp2:  # type: ignore[union-attr]
        raise InputError("FSDP version 1 hides per-parameter gradients from the hooks; set fsdp_version: 2 in "
                         "the accelerate config (see docs/compute-weights.md)")
    if accelerator is not None and not fsdp:
        say("compute-weights: accelerate uses FSDP only on GPUs; running plain data-parallel on the CPU instead "
            "(same result)")
    run_device = _resolve_device(device, state)
    out = Path(out_dir).expanduser()
    refuse_unusable(out)

    from perta_hub.io.compat import architecture
    from perta_hub.io.reader import open_checkpoint, scratch_for

    ckpt = open_checkpoint(model, allow_pickle=allow_pickle, scratch=scratch_for(out_dir))
    if task_vector is not None:  # before any gradient: the task vector is one, and made for this model
        from perta_hub.io.artifacts import load_artifact
        from perta_hub.io.compat import check_architecture

        tv = load_artifact(task_vector, "task_vector")
        check_architecture(tv.config.get("base_config") or {}, architecture(ckpt.config), "the task vector", str(model))
    tokenizer = load_tokenizer(ckpt.root, model)
    forget_data = _encode(forget, tokenizer, "forget", question_field, answer_field, max_length, data_dir, say)
    retain_data = _encode(retain, tokenizer, "retain", question_field, answer_field, max_length, data_dir, say,
                          fraction=retain_fraction, max_examples=max_examples, seed=seed)

    # Under FSDP the model is loaded on the CPU and accelerate moves only each process's shard to its GPU.
    from perta_hub.importance.gradients import enable_gradient_checkpointing
    from perta_hub.runtime.models import load_causal_lm

    net = load_causal_lm(ckpt.root, str(model), None if run_device.type == "cuda" else torch.float32,
                         torch.device("cpu") if fsdp else run_device, eval_mode=True)
    if gradient_checkpointing:
        enable_gradient_checkpointing(net)
    if fsdp:
        net = accelerator.prepare(net)  # type: ignore[union-attr]  # fully_shard, each process's shard to its GPU
    autocast = torch.bfloat16 if run_device.type == "cuda" else None
    from perta_hub.importance.gradients import accumulate_importance, cast_importance, select_parameters
    from perta_hub.runtime.memory import peak_memory

    selected = list(select_parameters(net, params))
    missing = [n for n in selected if n not in ckpt.entries]
    if missing:
        raise MismatchError(
            f"{len(missing)} parameter(s) of the loaded model have no tensor of the same name in {model} "
            f"(e.g. {missing[0]}): the weight map must use the checkpoint's names; exclude them with --params"
        )
    say(f"compute-weights: {method} importances of {len(selected)} tensors of {model} on {run_device}"
        + (f" in {state.num_processes} processes" if state.num_processes > 1 else ""))

    groups: dict[str, dict[str, torch.Tensor]] = {}
    underflow: dict[str, int] = {}
    counts: dict[str, tuple[int, int]] = {}
    num_entries = 0
    for role, encoded in (("forget", forget_data.examples), ("retain", retain_data.examples)):
        # fisher under FSDP: every process runs every example (a reduce-scattered gradient mixes processes).
        mine = encoded if (fsdp and spec.per_example) else _shard(encoded, state.process_index, state.num_processes)
        batches = _batches(mine, batch_size, tokenizer.pad_token_id)
        result = accumulate_importance(
            net, batches, method=method, params=params, device=run_device, autocast_dtype=autocast,
            total_examples=len(mine), desc=f"{method} {role}", progress=progress, fsdp=fsdp,
        )
        key = f"importance_{role}"
        groups[key], underflow[key] = cast_importance(result.importance, storage)  # empty off rank 0
        del result.importance  # one fp32 accumulator set at a time: only the cast copy stays
        counts[role] = (result.num_examples, result.num_answer_tokens)
        num_entries = sum(t.numel() for t in groups[key].values())
        if underflow[key]:
            say(f"  {key}: {underflow[key]} of {num_entries} non-zero values underflow to zero in {dtype}")

    provenance: dict[str, Any] = {
        "model": ckpt.provenance(),
        "model_config": architecture(ckpt.config),
        "gradients_at": gradients_at,
        "method": method,
        "p": DEFAULT_P,
        "lam": DEFAULT_LAM,
        "eps": spec.eps,
        "forget_data": forget_data.describe(*counts["forget"]),
        "retain_data": retain_data.describe(*counts["retain"]),
        "max_length": max_length,
        "params": params,
        # what apply does with the parameters --params leaves out: w = 0 (unchanged) or w = 1 (plain negation)
        **({"unrestricted": "w=1" if unrestricted_rest else "w=0"} if params is not None else {}),
        "num_tensors": len(groups["importance_forget"]),
        "num_parameters": num_entries,
        "dtype": dtype,
        "underflow": {**underflow, "total": sum(underflow.values())},
        "compute": {
            "device": run_device.type,
            "autocast": "bfloat16" if autocast is not None else None,
            "num_processes": state.num_processes,
            "distributed": "fsdp" if fsdp else ("data_parallel" if state.num_processes > 1 else None),
            "batch_size": batch_size,
            "gradient_checkpointing": gradient_checkpointing,
        },
    }
    if is_main:
        from perta_hub.importance.summary import summary_of_groups
        from perta_hub.jobs.artifact import save_artifact

        provenance["selectivity"] = summary_of_groups(groups, p=DEFAULT_P, lam=DEFAULT_LAM, eps=spec.eps)

        save_artifact(out, "weight_map", groups, provenance, max_shard_size=max_shard_size,
                      inputs=[ckpt.root], progress=progress)
    state.wait_for_everyone()
    peak, kind = peak_memory(run_device)
    selectivity = provenance.get("selectivity")
    if is_main and task_vector is not None:
        from perta_hub.importance.summary import summarise_folder

        selectivity = summarise_folder(out, task_vector)  # the saved map, as apply reads it
    return WeightsSummary(out, {k: v[0] for k, v in counts.items()}, {k: v[1] for k, v in counts.items()},
                          underflow, num_entries, time.perf_counter() - start, peak, kind, is_main, selectivity)


@dataclass
class _Data:
    """Encoded examples of one role and what to record about them."""

    spec: str
    examples: list[Any]
    info: dict[str, Any]

    def describe(self, num_examples: int, num_answer_tokens: int) -> dict[str, Any]:
        return {**self.info, "num_examples": num_examples, "num_answer_tokens": num_answer_tokens}


def _encode(spec: str, tokenizer: Any, role: str, question_field: str, answer_field: str, max_length: int,
            data_dir: str | Path | None, say: Callable[[str], None], *, fraction: float | None = None,
            max_examples: int | None = None, seed: int = 0) -> _Data:
    """Load, subsample (retain) and encode one dataset; report what was dropped or truncated."""
    from perta_hub.data import check_qa_rows, describe_data, encode_dataset, load_qa, subsample
    from perta_hub.errors import DataError

    try:
        rows = load_qa(spec, data_dir=data_dir)
        total_rows = len(rows)
        check_qa_rows(rows, question_field, answer_field)  # before subsampling: row numbers of the file
        if fraction is not None or max_examples is not None:
            rows = subsample(rows, fraction=fraction, max_examples=max_examples, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same facts are reported below, once, with the role
            encoded = encode_dataset(tokenizer, rows, question_field=question_field, answer_field=answer_field,
                                     max_length=max_length)
    except DataError as err:
        raise DataError(f"{role} data {spec!r}: {err}") from err
    say(f"  {role} data {spec}: {encoded.report()}")
    info: dict[str, Any] = {**describe_data(spec, data_dir), "split": "train",
                            "question_field": question_field, "answer_field": answer_field,
                            "num_rows": total_rows, "dropped_answer_beyond_max_length": len(encoded.dropped),
                            "truncated": len(encoded.truncated)}
    if role == "retain":
        info.update(retain_fraction=fraction, max_examples=max_examples, seed=seed, num_rows_used=len(rows))
    return _Data(spec, list(encoded), info)


def _resolve_device(device: str, state: Any) -> torch.device:
    """The torch device: accelerate's for this process when it is a GPU, else ``cuda``/``cpu``."""
    import torch

    if resolve_device(device) == "cuda":
        state_device = getattr(state, "device", None)
        if state_device is not None and state_device.type == "cuda":
            return state_device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _shard(examples: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Contiguous block ``rank`` of ``world`` nearly equal blocks (sizes differ by at most one)."""
    n = len(examples)
    return list(examples[rank * n // world:(rank + 1) * n // world])


def _batches(examples: Sequence[Any], batch_size: int, pad_token_id: int) -> list[dict[str, Any]]:
    """Right-padded micro-batches, longest examples first (an out-of-memory shows on the first step)."""
    from perta_hub.data.encoding import collate

    order = sorted(examples, key=lambda e: len(e.input_ids), reverse=True)
    return [collate(order[i:i + batch_size], pad_token_id, padding_side="right")
            for i in range(0, len(order), batch_size)]
