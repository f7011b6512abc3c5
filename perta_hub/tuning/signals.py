"""The quick signals that score one alpha: forget and retain answer NLL / probability, optionally ROUGE.

The forget and retain subsets are loaded, subsampled (seeded) and encoded once (:func:`prepare_probe`), with
the same encoding as ``evaluate`` and ``compute-weights`` (:mod:`perta_hub.data.encoding`). :func:`measure`
scores both subsets in one batched teacher-forced pass (:func:`perta_hub.evaluation.scoring.score`) and,
when asked, greedily answers the first few forget questions for ROUGE-L recall, as ``evaluate`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from perta_hub.errors import DataError


@dataclass
class Probe:
    """The encoded subsets of one tune run.

    Attributes:
        forget, retain: encoded examples (``EncodedQA``), in subset order.
        rouge_prompts: generation prompts (token ids) of the first ROUGE questions of the forget subset.
        rouge_answers: their reference answers, decoded from the labels as ``evaluate`` does.
        data: what was used: spec, rows in the file, rows kept (for the record).
    """

    forget: list[Any]
    retain: list[Any]
    rouge_prompts: list[list[int]]
    rouge_answers: list[str]
    data: dict[str, Any]


def _subset(spec: str, n: int, data_dir: Any, what: str) -> tuple[Any, int]:
    from perta_hub.data.loading import load_qa, subsample

    try:
        rows = load_qa(spec, data_dir=data_dir)
    except DataError as err:
        raise DataError(f"{what} data {spec}: {err}") from None
    return subsample(rows, max_examples=n, seed=0), len(rows)


def prepare_probe(tokenizer: Any, forget: str, retain: str, *, forget_examples: int, retain_examples: int,
                  rouge_questions: int = 0, max_length: int = 512, data_dir: Any = None) -> Probe:
    """Load, subsample (seed 0, original order) and encode the forget and retain subsets.

    Raises:
        DataError: an empty or unreadable data file, a row without a question or answer (one line, naming which).
    """
    from perta_hub.data.encoding import IGNORE_INDEX, encode_dataset, encode_prompt

    encoded = {}
    data: dict[str, Any] = {}
    for what, spec, n in (("forget", forget, forget_examples), ("retain", retain, retain_examples)):
        rows, total = _subset(spec, n, data_dir, what)
        try:
            encoded[what] = encode_dataset(tokenizer, rows, max_length=max_length)
        except DataError as err:
            raise DataError(f"{what} data {spec}: {err}") from None
        data[what] = {"spec": spec, "rows": total, "examples": len(encoded[what]),
                      "answer_tokens": encoded[what].num_answer_tokens}
        if what == "forget":
            questions = [rows[i]["question"] for i in encoded[what].indices[:rouge_questions]]
    prompts = [encode_prompt(tokenizer, q) for q in questions]
    answers = [tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX], skip_special_tokens=True).strip()
               for e in encoded["forget"][:rouge_questions]]
    data["rouge_questions"] = len(prompts)
    return Probe(list(encoded["forget"]), list(encoded["retain"]), prompts, answers, data)


def measure(lm: Any, probe: Probe, *, batch_size: int = 8, max_new_tokens: int = 48,
            progress: bool = False) -> dict[str, float]:
    """Score ``lm`` (a :class:`perta_hub.evaluation.scoring.LoadedModel`) on the probe.

    Returns:
        ``forget_nll`` / ``retain_nll`` (mean over examples of the answer's mean cross-entropy, nats per token),
        ``forget_prob`` / ``retain_prob`` (mean of ``exp(-nll)``, TOFU's Q_A_Prob), and ``forget_rouge``
        (mean ROUGE-L recall of greedy answers) when the probe has ROUGE questions.
    """
    from perta_hub.evaluation.metrics import probability, rouge_scores
    from perta_hub.evaluation.scoring import generate, score

    scored = score(lm, probe.forget + probe.retain, batch_size=batch_size, desc="tune signals", progress=progress)
    forget, retain = scored[:len(probe.forget)], scored[len(probe.forget):]
    out = {
        "forget_nll": _mean(s.avg_nll for s in forget),
        "forget_prob": _mean(probability(s.avg_nll) for s in forget),
        "retain_nll": _mean(s.avg_nll for s in retain),
        "retain_prob": _mean(probability(s.avg_nll) for s in retain),
    }
    if probe.rouge_prompts:
        texts = generate(lm, probe.rouge_prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         desc="tune ROUGE", progress=progress)
        out["forget_rouge"] = _mean(rouge_scores(gt, text)["rougeL_recall"]
                                    for gt, text in zip(probe.rouge_answers, texts, strict=True))
    return out


def _mean(values: Any) -> float:
    items = list(values)
    return math.fsum(items) / len(items)
