"""Running a causal LM over QA examples: teacher-forced NLL and greedy generation.

* :func:`score` — batched teacher-forced pass (right padding); per example the average
  cross-entropy over the answer labels (nats per token) and the extraction strength.
* :func:`generate` — batched greedy decoding (left padding, KV cache), cut at EOS.
* :func:`load_model` — a local folder or Hub id (``org/name[@revision]``) with its tokenizer.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.data.encoding import IGNORE_INDEX, EncodedQA, collate, load_tokenizer
from perta_hub.errors import InputError
from perta_hub.evaluation.metrics import extraction_strength
from perta_hub.runtime.devices import resolve_device

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A model ready for evaluation, with what is needed to record where it came from."""

    model: Any
    tokenizer: Any
    source: str
    path: Path
    revision: str
    device: str
    dtype: str

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, else its EOS id (used only to fill padding; masks come from lengths)."""
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS ids that end a generation: the tokenizer's EOS and the generation config's ``eos_token_id``."""
        ids: list[int] = []
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for t in gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]:
            if t is not None and int(t) not in ids:
                ids.append(int(t))
        return ids


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``bfloat16`` on a GPU that supports it (else ``float16``), ``float32`` on CPU."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def load_model(source: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a folder or a Hub id, in eval mode.

    Hub ids (``org/name[@revision]``) are downloaded with only the safetensors weights, JSON files
    and tokenizer files (``perta_hub.io.hub_source.download``). The recorded revision is the Hub commit sha,
    or ``sha256:<hex>`` of a local folder's content.
    """
    import torch

    from perta_hub.io.reader import open_checkpoint
    from perta_hub.runtime.models import load_causal_lm

    ckpt = open_checkpoint(source)
    root = Path(ckpt.root)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tokenizer = load_tokenizer(root, str(source))
    model = load_causal_lm(root, str(source), getattr(torch, dt), dev, eval_mode=True)
    return LoadedModel(model, tokenizer, str(source), root, ckpt.revision, dev, dt)


@dataclass
class Scored:
    """Teacher-forced scores of one example.

    Attributes:
        avg_nll: mean cross-entropy over the answer labels (nats per token).
        num_tokens: number of answer labels scored.
        extraction_strength: ES over the answer labels without the final one (see metrics).
        token_logprobs, token_mu, token_var: with ``token_stats`` only (else None), per answer label (length
            ``num_tokens``): the label's log-probability, and the mean and variance of ``log p(z)`` under the
            model's next-token distribution at that position (nats, nats^2; the Min-K%++ statistics).
    """

    avg_nll: float
    num_tokens: int
    extraction_strength: float
    token_logprobs: list[float] | None = None
    token_mu: list[float] | None = None
    token_var: list[float] | None = None


def score(
    lm: LoadedModel,
    examples: Sequence[EncodedQA],
    *,
    batch_size: int = 16,
    groups: Sequence[int] | None = None,
    desc: str = "scoring",
    progress: bool = True,
    token_stats: bool = False,
) -> list[Scored]:
    """Teacher-forced scoring of ``examples`` in batches (right padding).

    Args:
        examples: encoded examples; each must carry at least one answer label.
        batch_size: examples per forward pass; a group larger than this gets a batch of its own.
        groups: sizes of consecutive groups of examples that must share a batch (e.g. the five
            perturbed answers of each question); default: every example alone.
        token_stats: also keep each label's log-probability and the mean / variance of the next-token
            log-probabilities there (for the membership-inference attacks), from the same forward pass.
    Returns:
        one :class:`Scored` per example, in order. Cross-entropy is computed in float32 from the
        logits of the labelled positions only.
    """
    from perta_hub.runtime.progress import Progress

    results: list[Scored] = []
    with Progress(desc, len(examples), unit="ex", enabled=progress, leave=False) as bar:
        for start, stop in _batches(len(examples), batch_size, groups):
            results.extend(_score_batch(lm, examples, start, stop, token_stats))
            bar.update(stop - start)
    return results


def _score_batch(lm: LoadedModel, examples: Sequence[EncodedQA], start: int, stop: int,
                 token_stats: bool = False) -> list[Scored]:
    """The :class:`Scored` of ``examples[start:stop]``, one forward pass (the ``[n, vocab]`` log-probabilities
    of one example at a time, never the whole batch's)."""
    import torch
    import torch.nn.functional as F

    results: list[Scored] = []
    chunk = list(examples[start:stop])
    batch = collate(chunk, lm.pad_token_id, padding_side="right")
    with torch.inference_mode():
        logits = lm.model(
            input_ids=batch["input_ids"].to(lm.device), attention_mask=batch["attention_mask"].to(lm.device)
        ).logits
    labels = batch["labels"].to(lm.device)
    for b in range(len(chunk)):
        target = labels[b, 1:]
        positions = (target != IGNORE_INDEX).nonzero(as_tuple=True)[0]
        n = int(positions.numel())
        if n == 0:
            raise InputError(f"example {start + b} has no answer tokens to score")
        row_logits = logits[b, positions].float()  # [n, vocab]: logits predicting the labels
        gold = target[positions]
        preds = row_logits.argmax(dim=-1)[:-1].tolist()  # without the final (EOS) label
        es = extraction_strength(preds, gold[:-1].tolist())
        if not token_stats:
            nll = F.cross_entropy(row_logits, gold, reduction="sum").item() / n
            results.append(Scored(avg_nll=nll, num_tokens=n, extraction_strength=es))
            continue
        logp = F.log_softmax(row_logits, dim=-1)  # [n, vocab]
        label_logp = logp.gather(1, gold[:, None])[:, 0]  # [n]
        p = logp.exp()
        mu = (p * logp).sum(-1)  # [n]: E_z[log p(z)]
        var = (p * (logp - mu[:, None]).square()).sum(-1)  # [n]: Var_z[log p(z)], two-pass (no cancellation)
        results.append(Scored(avg_nll=-label_logp.sum().item() / n, num_tokens=n, extraction_strength=es,
                              token_logprobs=label_logp.tolist(), token_mu=mu.tolist(), token_var=var.tolist()))
    return results


def _batches(n: int, batch_size: int, groups: Sequence[int] | None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``batch_size`` examples that never split a group."""
    sizes = list(groups) if groups is not None else [1] * n
    if sum(sizes) != n:
        raise ValueError(f"group sizes add up to {sum(sizes)}, not {n}")
    spans: list[tuple[int, int]] = []
    start = pos = 0
    for size in sizes:
        if pos > start and pos + size - start > batch_size:
            spans.append((start, pos))
            start = pos
        pos += size
    if pos > start:
        spans.append((start, pos))
    return spans


def generate(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    desc: str = "generating",
    progress: bool = True,
) -> list[str]:
    """Greedy generation for each prompt (token ids), batched with left padding and a KV cache.

    Returns:
        the generated texts: new tokens up to (not including) the first EOS, decoded with
        ``skip_special_tokens=True`` and stripped.
    """
    import torch
    from transformers import GenerationConfig

    from perta_hub.runtime.progress import Progress

    stop = lm.stop_token_ids
    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, use_cache=True,
        pad_token_id=lm.pad_token_id, eos_token_id=stop or None,
    )
    texts: list[str] = []
    with Progress(desc, len(prompts), unit="ex", enabled=progress, leave=False) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = [list(p) for p in prompts[start:start + batch_size]]
            batch = collate(chunk, lm.pad_token_id, padding_side="left")
            with torch.inference_mode():
                out = lm.model.generate(
                    input_ids=batch["input_ids"].to(lm.device),
                    attention_mask=batch["attention_mask"].to(lm.device),
                    generation_config=config,
                )
            new = out[:, batch["input_ids"].shape[1]:].tolist()
            for ids in new:
                cut = next((i for i, t in enumerate(ids) if t in stop), len(ids))
                text = lm.tokenizer.decode(ids[:cut], skip_special_tokens=True)
                texts.append(text.strip())
            bar.update(len(chunk))
    return texts
