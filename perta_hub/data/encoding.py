"""Question/answer data as token ids: tokenizer loading, prompt/label construction, collation.

The one place that turns TOFU-style QA rows into token ids. compute-weights, finetune and
evaluate all use it, so training, importance and evaluation see exactly the same prompts.
Formatting follows the open-unlearning TOFU benchmark (see ``docs/data.md``):

* chat-template tokenizers: messages ``[system SYSTEM_PROMPT, user q, assistant a]`` rendered with
  ``apply_chat_template(..., date_string=DATE_STRING)``; the prompt is the template of the first
  two messages with ``add_generation_prompt=True``; labels are -100 over the prompt and the token
  ids of the rest (answer + the template's end-of-turn token, + EOS if the template did not end
  with it).
* tokenizers without a chat template: ``"Question: {q}\\nAnswer: {a}"``, loss on the answer only.

Heavy libraries (transformers, torch) are imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import DataError, InputError

IGNORE_INDEX = -100
SYSTEM_PROMPT = "You are a helpful assistant."
DATE_STRING = "10 Apr 2025"
MAX_LENGTH = 512


# ---------------------------------------------------------------------------------------- formatting


@dataclass
class EncodedQA:
    """One tokenised example: ``input_ids`` and ``labels`` of equal length (labels -100 off the answer)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False  # True when max_length cut the end of the sequence

    @property
    def num_answer_tokens(self) -> int:
        """Number of positions that carry a loss (labels != -100)."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)

    @property
    def prompt_length(self) -> int:
        """Number of leading positions masked with -100 (the prompt)."""
        for i, t in enumerate(self.labels):
            if t != IGNORE_INDEX:
                return i
        return len(self.labels)


class EncodedQAList(list):
    """``list[EncodedQA]`` with a record of what encoding dropped or truncated.

    Attributes:
        indices: row index in the source dataset of each kept example.
        dropped: source indices of examples whose answer was cut away entirely by max_length.
        truncated: source indices of kept examples whose end (part of the answer) was cut.
        max_length: the limit used (tokens).
    """

    def __init__(self, items: Iterable[EncodedQA] = (), *, indices: Sequence[int] = (),
                 dropped: Sequence[int] = (), truncated: Sequence[int] = (), max_length: int = MAX_LENGTH):
        super().__init__(items)
        self.indices = list(indices)
        self.dropped = list(dropped)
        self.truncated = list(truncated)
        self.max_length = max_length

    @property
    def num_answer_tokens(self) -> int:
        """Total answer (loss-bearing) tokens over the kept examples, for provenance."""
        return count_answer_tokens(self)

    def report(self) -> str:
        """One line: kept / dropped / truncated counts and why."""
        text = f"{len(self)} examples, {self.num_answer_tokens} answer tokens"
        if self.dropped:
            text += (f"; dropped {len(self.dropped)} whose answer lies entirely beyond max_length="
                     f"{self.max_length} tokens (rows {_short(self.dropped)})")
        if self.truncated:
            text += (f"; {len(self.truncated)} truncated to max_length={self.max_length} tokens "
                     f"(rows {_short(self.truncated)})")
        return text


def _short(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


def load_tokenizer(root: str | Path, source: str) -> Any:
    """The tokenizer saved beside a model in ``root`` (``source`` names it in errors), with a pad token.

    Tokenizers without one get ``pad = EOS``: :func:`collate` builds the attention mask from the padding it
    adds, so real EOS tokens stay visible.
    Raises:
        CheckpointError: no usable tokenizer, or one with neither a pad nor an EOS token.
    """
    from transformers import AutoTokenizer

    from perta_hub.errors import CheckpointError

    try:
        tokenizer = AutoTokenizer.from_pretrained(root)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{source} has no usable tokenizer ({first}); save the tokenizer beside the model") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise CheckpointError(f"the tokenizer of {source} has neither a pad nor an EOS token; add one")
    return tokenizer


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template (then the chat format is used)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(question: str, answer: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False,
        date_string=DATE_STRING,
    )
    if isinstance(ids, Mapping):  # older transformers may still return a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def _plain_prompt_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=True)["input_ids"]]


def encode_prompt(tokenizer: Any, question: str) -> list[int]:
    """Token ids of the generation prompt for ``question`` (what the model sees before answering).

    Chat tokenizers: ``apply_chat_template([system, user q], add_generation_prompt=True,
    date_string="10 Apr 2025")``. Plain tokenizers: ``tokenizer("Question: {q}\\nAnswer:")`` with the
    tokenizer's own special tokens (BOS where its post-processor adds one).
    """
    if has_chat_template(tokenizer):
        return _template_ids(tokenizer, _chat(question), add_generation_prompt=True)
    return _plain_ids(tokenizer, _plain_prompt_text(question))


def encode_qa(tokenizer: Any, question: str, answer: str, *, max_length: int = MAX_LENGTH) -> EncodedQA:
    """Tokenise one QA pair into ``input_ids`` and ``labels`` (loss on the answer only).

    Chat tokenizers (``tokenizer.chat_template`` set), as in the open-unlearning benchmark:
        ``full = apply_chat_template([system, user q, assistant a], date_string="10 Apr 2025")``,
        ``prompt = apply_chat_template([system, user q], add_generation_prompt=True, ...)``;
        EOS appended when ``full`` does not end with it; labels = -100 for the first ``len(prompt)``
        positions, then the ids themselves (the answer, the end-of-turn token, EOS). BOS is whatever
        the template writes (e.g. Llama-3 writes ``<|begin_of_text|>``); nothing is added.
    Plain tokenizers (no chat template):
        ``prompt = tokenizer("Question: {q}\\nAnswer:")``,
        ``full = tokenizer("Question: {q}\\nAnswer: {a}")``,
        both with ``add_special_tokens=True``, so BOS is present exactly when the tokenizer's
        post-processor adds it (Llama: yes; GPT-2 style: no); EOS appended when missing. The prompt
        ends before the space, so the answer's first token (" The") is the same token as in ordinary
        text. Labels are -100 over the longest common prefix of ``prompt`` and ``full``, then the ids
        (the answer tokens, with the space before it, and EOS).
    Both: the sequence is cut to ``max_length`` tokens (input_ids and labels alike, ``truncated`` set).

    Returns:
        ``EncodedQA(input_ids, labels)``, two lists of equal length <= max_length.
    """
    if max_length < 2:
        raise InputError(f"max_length must be at least 2 tokens, got {max_length}")
    if has_chat_template(tokenizer):
        full = _template_ids(tokenizer, _chat(question, answer), add_generation_prompt=False)
        n_prompt = len(_template_ids(tokenizer, _chat(question), add_generation_prompt=True))
    else:
        prompt_text = _plain_prompt_text(question)
        prompt = _plain_ids(tokenizer, prompt_text)
        full = _plain_ids(tokenizer, f"{prompt_text} {answer}")
        if tokenizer.eos_token_id is not None and prompt and prompt[-1] == tokenizer.eos_token_id:
            prompt = prompt[:-1]  # a post-processor that appends EOS: the prompt does not end the text
        n_prompt = 0
        while n_prompt < min(len(prompt), len(full)) and prompt[n_prompt] == full[n_prompt]:
            n_prompt += 1
    eos = tokenizer.eos_token_id
    if eos is not None and (not full or full[-1] != eos):
        full = full + [int(eos)]
    labels = [IGNORE_INDEX] * min(n_prompt, len(full)) + full[n_prompt:]
    truncated = len(full) > max_length
    return EncodedQA(input_ids=full[:max_length], labels=labels[:max_length], truncated=truncated)


def check_qa_rows(dataset: Any, question_field: str = "question", answer_field: str = "answer") -> None:
    """Refuse a row whose question or answer is not a non-empty string (a missing value would train on "None").

    Rows are numbered from 0, in the order of ``dataset`` (a ``datasets.Dataset`` or a list of dicts); a field
    the data lacks altogether is left to :func:`encode_dataset`, which names the fields present.
    Raises:
        DataError: ``row I: field 'F' is None, not a non-empty string; ...`` (callers prefix the data spec).
    """
    names = getattr(dataset, "column_names", None)
    for f in (question_field, answer_field):
        if names is not None:
            if f not in names:
                continue
            values: Iterable[Any] = list(dataset[f])
        else:
            values = (row.get(f, "?") for row in dataset)
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                got = "an empty string" if isinstance(value, str) else _short_repr(value)
                raise DataError(f"row {i}: field {f!r} is {got}, not a non-empty string; fix or remove the row")


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def encode_dataset(
    tokenizer: Any,
    dataset: Any,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    max_length: int = MAX_LENGTH,
) -> EncodedQAList:
    """Encode every row of ``dataset`` with :func:`encode_qa`.

    Examples whose answer is cut away entirely by ``max_length`` are dropped (a warning says how
    many and why); partially cut ones are kept and listed in ``.truncated``.

    Returns:
        an :class:`EncodedQAList` (a ``list[EncodedQA]``) with ``.indices`` (source rows kept),
        ``.dropped``, ``.truncated`` and ``.num_answer_tokens``.
    Raises:
        DataError: empty dataset, a missing field (named, with the fields present), a question or answer that is
            not a non-empty string (:func:`check_qa_rows`), or no example left.
    """
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset is empty; pass a dataset with at least one example")
    fields = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if n else []))
    for name in (question_field, answer_field):
        if name not in fields:
            raise DataError(
                f"the dataset has no field {name!r} (fields present: {', '.join(fields)}); "
                "pass the right --question-field/--answer-field"
            )
    check_qa_rows(dataset, question_field, answer_field)
    items: list[EncodedQA] = []
    kept: list[int] = []
    dropped: list[int] = []
    truncated: list[int] = []
    for i in range(n):
        row = dataset[i]
        enc = encode_qa(tokenizer, row[question_field], row[answer_field], max_length=max_length)
        if enc.num_answer_tokens == 0:
            dropped.append(i)
            continue
        if enc.truncated:
            truncated.append(i)
        items.append(enc)
        kept.append(i)
    result = EncodedQAList(items, indices=kept, dropped=dropped, truncated=truncated, max_length=max_length)
    if not items:
        raise DataError(
            f"all {n} examples were dropped: their prompt alone fills max_length={max_length} tokens; "
            "raise --max-length"
        )
    if dropped or truncated:
        warnings.warn(result.report(), stacklevel=2)
    return result


def count_answer_tokens(examples: Iterable[EncodedQA]) -> int:
    """Total number of answer (loss-bearing) tokens over ``examples``."""
    return sum(e.num_answer_tokens for e in examples)


# ----------------------------------------------------------------------------------------- collation


@dataclass
class _Row:
    input_ids: list[int]
    labels: list[int] | None = field(default=None)


def _as_row(example: Any) -> _Row:
    if isinstance(example, EncodedQA):
        return _Row(list(example.input_ids), list(example.labels))
    if isinstance(example, Mapping):
        labels = example.get("labels")
        ids = [int(t) for t in example["input_ids"]]
        return _Row(ids, None if labels is None else [int(t) for t in labels])
    return _Row([int(t) for t in example])  # a bare list of ids (a generation prompt)


def collate(examples: Sequence[Any], pad_token_id: int | None, padding_side: str = "right") -> dict[str, Any]:
    """Pad a batch into tensors.

    Args:
        examples: ``EncodedQA`` items, dicts with ``input_ids`` (and optionally ``labels``), or bare
            lists of ids (prompts).
        pad_token_id: id written into the padding positions (any id; it is never used to find padding).
        padding_side: ``"right"`` (scoring, training) or ``"left"`` (generation).
    Returns:
        ``input_ids`` and ``attention_mask`` (int64, shape [batch, longest]); ``labels`` (int64, -100
        on padding) when the examples carry labels. The attention mask is 1 exactly on the tokens of
        the examples and 0 on the padding added here, so a real token equal to the pad id (e.g. an
        EOS used as pad) stays visible — unlike the benchmark's collator (open-unlearning issue #128).
    """
    import torch

    if not examples:
        raise DataError("cannot collate an empty batch")
    if padding_side not in ("right", "left"):
        raise InputError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if pad_token_id is None:
        raise InputError("the tokenizer has no pad token; pass pad_token_id (e.g. the EOS id)")
    rows = [_as_row(e) for e in examples]
    with_labels = rows[0].labels is not None
    if any((r.labels is not None) != with_labels for r in rows):
        raise DataError("a batch mixes examples with and without labels")
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        if with_labels and len(r.labels or []) != n:
            raise DataError(f"example {b}: {n} input ids but {len(r.labels or [])} labels")
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[b, sl] = torch.tensor(r.input_ids, dtype=torch.long)
        mask[b, sl] = 1
        if with_labels:
            labels[b, sl] = torch.tensor(r.labels, dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if with_labels:
        out["labels"] = labels
    return out
