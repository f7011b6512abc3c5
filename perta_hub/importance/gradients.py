"""Per-parameter importance (PerTA-grad, PerTA-fisher): the gradient engine.

For a causal LM and a set of question/answer examples, with
``loss_i = mean NLL over the answer tokens of example i`` and ``g_i = d loss_i / d theta``:

- ``grad``:   ``I = | (1/N) sum_i g_i |``  (absolute value of the mean gradient);
- ``fisher``: ``I = (1/N) sum_i g_i ** 2`` (diagonal empirical Fisher, per-example gradients).

Memory: every selected parameter has one fp32 accumulator (same shape as the parameter, on
its device). A ``register_post_accumulate_grad_hook`` folds each ``.grad`` into its
accumulator as soon as autograd has produced it and sets ``.grad`` to None, so the model's
gradients are never held all at once (peak: the weights, the accumulators, the activations,
and the gradient of one parameter).

grad runs whole micro-batches: the loss of a micro-batch is the *sum* over its examples of
their answer-averaged NLL, so its gradient is ``sum_i g_i``; the signed sums are accumulated,
summed across processes, divided by the total number of examples, and only then made absolute.
fisher runs each example alone (micro-batch of one, padding stripped) and squares each
gradient in the hook. Why micro-batch 1 rather than ``torch.func.vmap`` per-sample gradients:
see ``docs/compute-weights.md`` (the benchmark ``benchmarks/bench_weights.py`` measures both).

Distributed: under ``accelerate launch`` (several processes, no FSDP) each process takes its
own shard of the examples; at the end the accumulators and the example/token counts are summed
over processes with ``all_reduce`` before dividing, so the result equals the one-process result
whatever the shard sizes. Under FSDP2 (``fully_shard``, accelerate ``fsdp_version: 2``) the hooks
receive reduce-scattered gradient shards; see :func:`accumulate_importance`.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from perta_hub.data.encoding import IGNORE_INDEX
from perta_hub.errors import DataError, InputError, NonFiniteError
from perta_hub.importance.methods import ImportanceMethod, method_named
from perta_hub.runtime.distributed import gather_full, local_shard, lockstep_padding, reduce_sum, world_and_rank
from perta_hub.runtime.progress import Progress

if TYPE_CHECKING:
    import torch

_BATCH_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass
class ImportanceResult:
    """One pass (forget or retain) of :func:`accumulate_importance`.

    Attributes:
        importance: parameter name -> fp32 tensor of the parameter's shape, on the CPU; filled on
            the main process (rank 0) only, empty on the others (their memory is not spent on copies).
        num_examples: examples seen by all processes together.
        num_answer_tokens: answer (label) tokens over all those examples.
        seconds: wall-clock time of the pass, in seconds.
        input_tokens: non-padding input tokens run through the model by this process.
    """

    importance: dict[str, torch.Tensor]
    num_examples: int
    num_answer_tokens: int
    seconds: float
    input_tokens: int = 0


def select_parameters(model: torch.nn.Module, params: str | None) -> dict[str, torch.nn.Parameter]:
    """The trainable parameters whose name matches ``params`` (``re.search``; None = all), in model order.

    Raises:
        InputError: the regex is invalid or matches no parameter.
    """
    named = dict(model.named_parameters())  # tied parameters appear once, under their first name
    if params is None:
        return named
    try:
        pattern = re.compile(params)
    except re.error as err:
        raise InputError(f"--params {params!r} is not a valid regular expression: {err}") from err
    chosen = {name: p for name, p in named.items() if pattern.search(name)}
    if not chosen:
        sample = ", ".join(list(named)[:4])
        raise InputError(
            f"--params {params!r} matches none of the model's {len(named)} parameters (e.g. {sample}); "
            "fix the regular expression (it is matched with re.search against these names)"
        )
    return chosen


def answer_nll_sum(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, int, int]:
    """Sum over the batch's examples of their answer-averaged NLL.

    Args:
        model: a causal LM returning ``.logits`` of shape (B, T', V).
        batch: ``input_ids``, ``attention_mask``, ``labels`` of shape (B, T) (labels aligned with
            the inputs, ``-100`` outside the answer; the model predicts ``labels[:, t+1]`` at ``t``).
    Returns:
        (scalar loss = sum_i mean_{answer tokens of i} NLL, number of examples, number of answer tokens).
        The gradient of the loss is ``sum_i g_i``.
    Raises:
        DataError: an example has no answer token.
    """
    import torch.nn.functional as F

    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    targets = labels[:, 1:]
    answer = targets != IGNORE_INDEX
    per_example = answer.sum(dim=1)
    if bool((per_example == 0).any()):
        bad = int((per_example == 0).sum())
        raise DataError(
            f"{bad} example(s) of a batch have no answer token (all labels are -100); "
            "encode the data with perta_hub.data.encode_dataset, which drops such examples"
        )
    # Logits only from the first position that predicts an answer token (the prompt's lm_head is skipped);
    # an int logits_to_keep is a slice of the last positions, so its backward is a cheap view.
    first = int(answer.any(dim=0).nonzero()[0])
    if _accepts_logits_to_keep(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=input_ids.shape[1] - first).logits
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, first:]
    logits = logits[:, :-1]  # the last position predicts nothing
    targets = targets[:, first:]
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    loss = (nll.sum(dim=1) / per_example.to(nll.dtype)).sum()
    return loss, int(input_ids.shape[0]), int(per_example.sum())


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def split_examples(batch: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The batch's examples one by one, each of shape (1, L_i) with its padding removed."""
    out = []
    mask = batch["attention_mask"].bool()
    for i in range(batch["input_ids"].shape[0]):
        keep = mask[i]
        out.append({
            "input_ids": batch["input_ids"][i, keep][None],
            "attention_mask": batch["attention_mask"][i, keep][None],
            "labels": batch["labels"][i, keep][None],
        })
    return out


class _Accumulators:
    """fp32 accumulators fed by post-accumulate-grad hooks (the method's ``fold``); each ``.grad`` is freed once
    folded in."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], spec: ImportanceMethod) -> None:
        import torch

        self.fold = spec.fold
        self.sums: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, p in params.items():
            local = local_shard(p)
            self.sums[name] = torch.zeros(local.shape, dtype=torch.float32, device=local.device)
            self._handles.append(p.register_post_accumulate_grad_hook(self._hook(self.sums[name])))

    def _hook(self, acc: torch.Tensor) -> Callable[[torch.nn.Parameter], None]:
        def fold(p: torch.nn.Parameter) -> None:
            if p.grad is None:
                return
            g = local_shard(p.grad)
            if g.dtype != acc.dtype:
                g = g.float()
            self.fold(acc, g)
            p.grad = None

        return fold

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def accumulate_importance(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    method: str,
    params: str | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    total_examples: int | None = None,
    desc: str = "importance",
    progress: bool = True,
    fsdp: bool = False,
) -> ImportanceResult:
    """Run ``method`` over ``batches`` and return the per-parameter importance.

    Args:
        model: a causal LM (eval mode is set; dropout off). Parameters not selected by ``params``
            get ``requires_grad=False`` for the pass (and are restored after).
        batches: collated micro-batches (``input_ids``, ``attention_mask``, ``labels``; (B, T)).
            Each is one forward/backward, or, for a per-example method (``fisher``), each example is run alone.
        method: a name of :data:`perta_hub.importance.methods.METHODS` (``"grad"``, ``"fisher"``).
        params: regex selecting parameter names (``re.search``); None = every parameter.
        device: where batches are moved (default: the device of the first parameter).
        autocast_dtype: e.g. ``torch.bfloat16`` on GPU; None = no autocast.
        total_examples: this process's number of examples (the progress total), if known.
        desc: the phase's label.
        progress: report progress (examples, input tokens/s) on the main process: a bar on a terminal, lines
            elsewhere (:mod:`perta_hub.runtime.progress`).
        fsdp: the model is sharded with FSDP2 and every process runs in lockstep. The hooks then
            see reduce-scattered gradient shards (averaged over processes); a whole-batch method (``grad``)
            takes the mean over processes back to a sum, a per-example one (``fisher``) requires every
            process to feed the *same* examples (a mixed gradient cannot be squared per example) and does
            not sum counts across processes.
    Returns:
        :class:`ImportanceResult` with fp32 CPU tensors keyed by parameter name.
    Raises:
        DataError: no example at all, or an example without answer tokens.
        NonFiniteError: a NaN/Inf importance (diverged model or bad data).
    """
    import torch

    spec = method_named(method)
    selected = select_parameters(model, params)
    was_training = model.training
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in selected)
    eval_mode(model)
    if device is None:
        device = next(iter(selected.values())).device
    device = torch.device(device)
    acc = _Accumulators(selected, spec)
    world, rank = world_and_rank()
    bar = Progress(desc, total_examples, unit="ex", enabled=progress and rank == 0)
    n_examples = n_tokens = n_inputs = 0
    start = time.perf_counter()
    real_steps: int | None = None  # under FSDP grad, steps past this are lockstep fillers
    if fsdp and not spec.per_example:
        batches = list(batches)
        real_steps = len(batches)
        batches += batches[:1] * lockstep_padding(real_steps, device)
    try:
        for step, batch in enumerate(batches):
            batch = {k: batch[k].to(device, non_blocking=True) for k in _BATCH_KEYS}
            pieces = split_examples(batch) if spec.per_example else [batch]
            for piece in pieces:
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    loss, n, t = answer_nll_sum(model, piece)
                if real_steps is not None and step >= real_steps:  # FSDP lockstep filler: zero contribution
                    (loss * 0).backward()
                    continue
                loss.backward()
                n_examples += n
                n_tokens += t
                n_inputs += int(piece["attention_mask"].sum())
                bar.set_postfix(_throughput(n_inputs, start))
                bar.update(n)
    except BaseException:
        bar.close(failed=True)
        raise
    finally:
        acc.remove()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
        model.train(was_training)
    bar.close()
    sums = acc.sums
    counts = torch.tensor([n_examples, n_tokens], dtype=torch.float64, device=device)
    if world > 1 and not (fsdp and spec.per_example):
        reduce_sum(counts, everyone=True)
    total_n, total_t = int(counts[0].item()), int(counts[1].item())
    if total_n == 0:
        raise DataError(f"{desc}: no example to compute the importance on; check the data and its split")
    # Under FSDP the hooks saw mean-over-processes gradients: a whole-batch method turns them back into a sum.
    scale = (world if fsdp and not spec.per_example else 1) / total_n
    out: dict[str, torch.Tensor] = {}
    for name in list(sums):
        t = sums.pop(name)  # free each accumulator as soon as it is folded into the result
        if fsdp:
            t = gather_full(selected[name], t)
        elif world > 1:
            reduce_sum(t, everyone=False)
        if rank != 0:
            continue
        t.mul_(scale)
        if spec.finish is not None:
            spec.finish(t)  # only now: e.g. grad's abs of the signed sums of every micro-batch and process
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"the {desc} importance of {name} has NaN/Inf values; check that the model's loss is finite "
                "on this data (e.g. run on CPU in float32)"
            )
        out[name] = t.cpu()
    return ImportanceResult(out, total_n, total_t, time.perf_counter() - start, n_inputs)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer during backward (transformers' activation checkpointing, non-reentrant).

    transformers checkpoints a layer only while that layer's ``training`` flag is set; :func:`eval_mode`
    sets that one flag (not ``.train()``, which would turn on the dropout of its submodules).
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise InputError(f"{type(model).__name__} does not support gradient checkpointing; "
                         "drop --gradient-checkpointing")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    eval_mode(model)


def eval_mode(model: torch.nn.Module) -> None:
    """``model.eval()`` (no dropout), keeping the layers marked for gradient checkpointing checkpointed."""
    model.eval()
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True and hasattr(module, "_gradient_checkpointing_func"):
            module.training = True


def _throughput(tokens: int, start: float) -> str:
    elapsed = max(time.perf_counter() - start, 1e-9)
    return f"{tokens / elapsed:,.0f} tok/s (input tokens)"


def cast_importance(
    tensors: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], int]:
    """Cast fp32 importances to the storage ``dtype``.

    Returns:
        (cast tensors, number of entries that were non-zero in fp32 and became zero).
    Raises:
        NonFiniteError: an entry overflows to Inf in ``dtype`` (float16 holds at most 65504).
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    underflow = 0
    for name, t in tensors.items():
        c = t.to(dtype)
        if dtype != t.dtype:
            underflow += int(((c == 0) & (t != 0)).sum())
            if not bool(torch.isfinite(c).all()):
                raise NonFiniteError(
                    f"importance of {name} overflows in {str(dtype).removeprefix('torch.')} (max "
                    f"{float(t.max()):.3g}); use --dtype bfloat16 or float32"
                )
        out[name] = c
    return out, underflow
