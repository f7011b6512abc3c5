"""The TOFU evaluation runner: one model in, one ``TOFU_EVAL.json``-style dict out.

Key names follow open-unlearning's ``TOFU_EVAL.json`` (``forget_Q_A_Prob``, ``forget_truth_ratio``,
``forget_quality``, ``model_utility``, ``extraction_strength``, ...); every per-question metric has
``agg_value`` and ``value_by_index`` (keys are the row indices of the split, as strings).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perta_hub.data.encoding import IGNORE_INDEX, encode_prompt, encode_qa
from perta_hub.data.loading import load_qa
from perta_hub.errors import DataError, InputError
from perta_hub.evaluation import metrics, privacy
from perta_hub.evaluation.metric_info import UTILITY_KEYS
from perta_hub.evaluation.outputs import check_outputs, retain_logs_path, save_results
from perta_hub.evaluation.reference import Reference, as_reference, read_reference, read_retain_logs, reference_rows
from perta_hub.options.evaluate import EVALUATE

FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_FOR = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HUB_DATASET = "locuslab/TOFU"
NO_REFERENCE = (
    "forget quality needs the retain model's forget truth ratios: pass --retain-logs FILE (the JSON "
    "of an earlier evaluation of the retain model on the same forget split) or --retain-model M"
)
NO_MIA_REFERENCE = (
    "PrivLeak needs the retain model's MIA scores on the same forget and holdout rows: pass --retain-model M, or "
    "--retain-logs FILE written by this version of `perta-hub evaluate`"
)
__all__ = ["Reference", "evaluate_tofu", "read_reference", "read_retain_logs", "run_evaluation"]


def split_configs(forget_split: str) -> dict[str, str]:
    """Prefix -> TOFU config evaluated: forget, retain, ra (real authors), wf (world facts)."""
    if forget_split not in FORGET_SPLITS:
        raise InputError(f"unknown forget split {forget_split!r}; use one of {', '.join(FORGET_SPLITS)}")
    return {
        "forget": f"{forget_split}_perturbed",
        "retain": "retain_perturbed",
        "ra": "real_authors_perturbed",
        "wf": "world_facts_perturbed",
    }


def holdout_config(forget_split: str) -> str:
    """The TOFU holdout split of the same size as ``forget_split`` (non-members of the MIA attacks)."""
    split_configs(forget_split)
    return "holdout" + forget_split.removeprefix("forget")


def load_split(config: str, *, data_dir: str | Path | None, max_examples: int | None) -> tuple[list[dict], int]:
    """Rows of one TOFU config (the first ``max_examples`` when given) and the full row count."""
    ds = load_qa(f"{HUB_DATASET}:{config}", data_dir=data_dir)
    total = len(ds)
    if max_examples is not None and max_examples < total:
        ds = ds.select(range(max_examples))
    rows = [dict(r) for r in ds]
    required = {"question", "answer"}
    if not config.startswith("holdout"):
        required.add("perturbed_answer")
    if config.endswith("_perturbed") and config not in ("real_authors_perturbed", "world_facts_perturbed"):
        required.add("paraphrased_answer")
    missing = required - set(rows[0])
    if missing:
        raise DataError(
            f"TOFU config {config} lacks the fields {', '.join(sorted(missing))} (fields present: "
            f"{', '.join(sorted(rows[0]))}); pass the *_perturbed files of locuslab/TOFU"
        )
    return rows, total


def _prob_entry(values: Sequence[Any]) -> dict[str, Any]:
    by_index = {str(i): {"prob": metrics.probability(s.avg_nll), "avg_loss": s.avg_nll} for i, s in values}
    return {"agg_value": metrics.mean(v["prob"] for v in by_index.values()), "value_by_index": by_index}


def _encode(tok: Any, prefix: str, question: str, answer: str, where: str, max_length: int) -> Any:
    """``encode_qa`` with a clear error when the prompt leaves no room for the answer."""
    e = encode_qa(tok, question, answer, max_length=max_length)
    if e.num_answer_tokens == 0:
        raise DataError(f"{prefix} {where}: the prompt alone fills max_length={max_length} tokens; raise --max-length")
    return e


def score_answers(lm: Any, prefix: str, rows: list[dict], *, batch_size: int, max_length: int,
                  progress: bool = True, token_stats: bool = False) -> tuple[list[Any], list[Any]]:
    """Encode each row's answer given its question and score it (one teacher-forced pass per row).

    Returns:
        the encoded examples and their :class:`~perta_hub.evaluation.scoring.Scored` (with the per-token
        statistics of the MIA attacks when ``token_stats``).
    """
    from perta_hub.evaluation.scoring import score

    qa = [_encode(lm.tokenizer, prefix, r["question"], r["answer"], f"row {i}", max_length)
          for i, r in enumerate(rows)]
    return qa, score(lm, qa, batch_size=batch_size, desc=f"{prefix} Q/A", progress=progress, token_stats=token_stats)


def answer_text(tok: Any, encoded: Any) -> str:
    """The answer as its labels decode (``skip_special_tokens=True``, not stripped): zlib's text; ROUGE's
    ground truth is this, stripped."""
    return tok.decode([t for t in encoded.labels if t != IGNORE_INDEX], skip_special_tokens=True)


def evaluate_split(
    lm: Any, prefix: str, rows: list[dict], *, batch_size: int, max_new_tokens: int, max_length: int,
    progress: bool = True, answers: tuple[list[Any], list[Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """All metrics of one split, keyed like ``TOFU_EVAL.json`` with ``prefix`` (forget/retain/ra/wf).

    ``answers``: the result of :func:`score_answers` on these rows when already computed (else computed here).
    """
    from perta_hub.evaluation.scoring import generate, score

    tok = lm.tokenizer
    forgetlike = prefix in ("forget", "retain")

    def enc(question: str, answer: str, where: str) -> Any:
        return _encode(tok, prefix, question, answer, where, max_length)

    qa, qa_scores = answers or score_answers(lm, prefix, rows, batch_size=batch_size, max_length=max_length,
                                             progress=progress)
    out: dict[str, dict[str, Any]] = {}
    idx = range(len(rows))
    out[f"{prefix}_Q_A_Prob"] = _prob_entry(list(zip(idx, qa_scores, strict=True)))

    # perturbed answers: all of a question's answers in one batch
    counts = [len(r["perturbed_answer"]) for r in rows]
    if min(counts) == 0:
        raise DataError(f"{prefix}: a question without perturbed answers (row {counts.index(0)})")
    pert = [enc(r["question"], a, f"row {i} perturbed answer") for i, r in enumerate(rows)
            for a in r["perturbed_answer"]]
    pert_scores = score(lm, pert, batch_size=batch_size, groups=counts, desc=f"{prefix} perturbed",
                        progress=progress)
    pert_by_q: list[list[Any]] = []
    pos = 0
    for c in counts:
        pert_by_q.append(pert_scores[pos:pos + c])
        pos += c
    out[f"{prefix}_Q_A_PERT_Prob"] = {
        "agg_value": metrics.mean(metrics.mean(metrics.probability(s.avg_nll) for s in ss) for ss in pert_by_q),
        "value_by_index": {
            str(i): {"prob": [metrics.probability(s.avg_nll) for s in ss], "avg_loss": [s.avg_nll for s in ss]}
            for i, ss in enumerate(pert_by_q)
        },
    }

    if forgetlike:
        para = [enc(r["question"], r["paraphrased_answer"], f"row {i} paraphrase") for i, r in enumerate(rows)]
        correct = score(lm, para, batch_size=batch_size, desc=f"{prefix} paraphrased", progress=progress)
        out[f"{prefix}_Q_A_PARA_Prob"] = _prob_entry(list(zip(idx, correct, strict=True)))
    else:
        correct = qa_scores
        norm = [
            metrics.normalised_probability(metrics.probability(c.avg_nll),
                                           [metrics.probability(s.avg_nll) for s in ss])
            for c, ss in zip(correct, pert_by_q, strict=True)
        ]
        out[f"{prefix}_Q_A_Prob_normalised"] = {
            "agg_value": metrics.mean(norm), "value_by_index": {str(i): {"prob": v} for i, v in enumerate(norm)},
        }

    ratios = [metrics.truth_ratio(c.avg_nll, [s.avg_nll for s in ss])
              for c, ss in zip(correct, pert_by_q, strict=True)]
    tr_key = "forget_truth_ratio" if prefix == "forget" else f"{prefix}_Truth_Ratio"
    aggregate = metrics.truth_ratio_forget if prefix == "forget" else metrics.truth_ratio_retain
    out[tr_key] = {
        "agg_value": aggregate(ratios),
        "value_by_index": {str(i): {"score": tr} for i, tr in enumerate(ratios)},
    }

    # generation + ROUGE-L recall against the answer as the labels decode
    prompts = [encode_prompt(tok, r["question"]) for r in rows]
    texts = generate(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     desc=f"{prefix} generation", progress=progress)
    rouge_by_index: dict[str, Any] = {}
    for i, (e, text) in enumerate(zip(qa, texts, strict=True)):
        gt = answer_text(tok, e).strip()
        rouge_by_index[str(i)] = {**metrics.rouge_scores(gt, text), "input": rows[i]["question"],
                                  "ground_truth": gt, "generation": text}
    out[f"{prefix}_Q_A_ROUGE"] = {
        "agg_value": metrics.mean(v["rougeL_recall"] for v in rouge_by_index.values()),
        "value_by_index": rouge_by_index,
    }

    if forgetlike:
        es_key = "extraction_strength" if prefix == "forget" else "retain_extraction_strength"
        es = {str(i): {"score": s.extraction_strength} for i, s in enumerate(qa_scores)}
        out[es_key] = {"agg_value": metrics.mean(v["score"] for v in es.values()), "value_by_index": es}
    return out


def forget_quality_entry(model_ratios: Mapping[str, float], retain: Mapping[str, float] | None,
                         *, subset: bool, source: str | None) -> dict[str, Any]:
    """The ``forget_quality`` entry: KS p-value against the retain model's TRs on the same questions."""
    if retain is None:
        return {"agg_value": None, "log10": None, "message": NO_REFERENCE}
    common = [k for k in model_ratios if k in retain]
    if not subset and set(retain) != set(model_ratios):
        raise InputError(
            f"the retain logs cover {len(retain)} questions, this forget split has {len(model_ratios)}; "
            "use logs of the retain model evaluated on the same forget split"
        )
    if not common:
        raise InputError("the retain logs share no question index with this evaluation")
    p = metrics.forget_quality([model_ratios[k] for k in common], [retain[k] for k in common])
    return {"agg_value": p, "log10": metrics.log10_or_none(p), "num_questions": len(common),
            "reference": source}


def membership_entries(tok: Any, forget: tuple[list[Any], list[Any]], holdout: tuple[list[Any], list[Any]],
                       k: float) -> dict[str, dict[str, Any]]:
    """The four ``mia_*`` entries: each row's attack score (higher = member) and the attack's ROC AUC.

    Args:
        tok: the tokenizer (zlib's text is the decoded answer labels).
        forget, holdout: :func:`score_answers` of the forget rows (members) and the holdout rows (non-members),
            with ``token_stats``.
        k: the Min-K fraction of Min-K% and Min-K%++.
    """
    def scores(pair: tuple[list[Any], list[Any]]) -> list[dict[str, float]]:
        return [privacy.attack_scores(s.avg_nll, answer_text(tok, e), s.token_logprobs, s.token_mu, s.token_var, k)
                for e, s in zip(*pair, strict=True)]

    members, nonmembers = scores(forget), scores(holdout)
    out: dict[str, dict[str, Any]] = {}
    for attack in privacy.ATTACKS:
        m, n = [r[attack] for r in members], [r[attack] for r in nonmembers]
        value = privacy.auc(m, n)
        out[attack] = {
            "agg_value": value, "auc": value, "score": privacy.ORIENTATION,
            **({"k": k} if "min_k" in attack else {}),
            "forget": {"value_by_index": {str(i): {"score": v} for i, v in enumerate(m)}},
            "holdout": {"value_by_index": {str(i): {"score": v} for i, v in enumerate(n)}},
        }
    return out


def row_scores(results: Mapping[str, Any], attack: str, side: str) -> dict[str, float]:
    """Row index -> ``attack``'s score on the ``side`` (``forget`` | ``holdout``) rows of a result."""
    return {i: float(v["score"]) for i, v in results[attack][side]["value_by_index"].items()}


def add_privleak(results: dict[str, Any], ref: Reference | None, *, subset: bool) -> None:
    """MUSE's PrivLeak of each attack against the retain model's AUC on the same rows, into ``results``.

    Sets ``results[attack]["privleak"]`` (None without a reference) and ``results["privleak"]``: ``agg_value``
    the Min-K% attack's (open-unlearning's ``privleak``), ``reference_auc`` the retain model's AUCs, ``num_rows``
    the rows compared, ``reference`` the logs' file; without the retain model's MIA scores, None with a message.
    """
    by_attack: dict[str, float] = {}
    ref_auc: dict[str, float] = {}
    rows: dict[str, int] = {}
    for attack in privacy.ATTACKS:
        results[attack]["privleak"] = None
        if ref is None:
            continue
        mine = {side: row_scores(results, attack, side) for side in ("forget", "holdout")}
        if attack in ref.mia:
            theirs = ref.mia[attack]
            if not subset and any(set(theirs[side]) != set(mine[side]) for side in mine):
                raise InputError(
                    f"the retain logs' {attack} scores cover {len(theirs['forget'])} forget and "
                    f"{len(theirs['holdout'])} holdout rows, this evaluation {len(mine['forget'])} and "
                    f"{len(mine['holdout'])}; use logs of the retain model evaluated on the same forget split")
            common = {side: [i for i in mine[side] if i in theirs[side]] for side in mine}
            if not common["forget"] or not common["holdout"]:
                raise InputError(f"the retain logs' {attack} scores share no forget or holdout row with this "
                                 "evaluation")
            model_auc = privacy.auc(*([mine[side][i] for i in common[side]] for side in ("forget", "holdout")))
            ref_auc[attack] = privacy.auc(*([theirs[side][i] for i in common[side]] for side in ("forget", "holdout")))
            rows = {side: len(common[side]) for side in common}
        elif attack in ref.mia_auc and not subset:  # open-unlearning's logs: their AUC on the same full splits
            model_auc, ref_auc[attack] = results[attack]["agg_value"], ref.mia_auc[attack]
        else:
            continue
        by_attack[attack] = results[attack]["privleak"] = privacy.privleak(model_auc, ref_auc[attack])
    if not by_attack:
        results["privleak"] = {"agg_value": None, "message": NO_MIA_REFERENCE}
        return
    results["privleak"] = {"agg_value": by_attack.get(privacy.HEADLINE_ATTACK), "attack": privacy.HEADLINE_ATTACK,
                           "reference_auc": ref_auc, **({"num_rows": rows} if rows else {}),
                           "reference": ref.source}


def check_mia_k(k: float, ref: Reference | None) -> None:
    """Refuse a Min-K fraction outside (0, 1], or one that differs from the retain logs' (PrivLeak would compare
    two different attacks)."""
    if not 0 < k <= 1:
        raise InputError(f"--mia-k must be in (0, 1], got {k}")
    if ref is not None and ref.k is not None and ref.k != k:
        raise InputError(f"the retain logs' Min-K attacks used k = {ref.k:g}, this evaluation k = {k:g}; pass "
                         f"--mia-k {ref.k:g} or re-evaluate the retain model")


def model_utility_entry(results: Mapping[str, Any]) -> dict[str, Any]:
    """``model_utility``: harmonic mean of the nine retain/real-author/world-fact numbers."""
    parts = {k: float(results[k]["agg_value"]) for k in UTILITY_KEYS}
    return {"agg_value": metrics.model_utility(list(parts.values())), "components": parts}


def perta_labels(path: Path) -> dict[str, Any]:
    """``alpha`` and ``method`` of an unlearned model written by ``apply`` (kind ``model`` in its
    ``perta_config.json``); ``method`` and ``setting`` (``lr=..,ep=..``) of one written by ``unlearn``
    (kind ``unlearned_model``); empty for any other folder, e.g. a fine-tuned model or a plain checkpoint.

    Raises:
        CheckpointError: a ``perta_config.json`` that does not validate (:func:`perta_hub.records.read_record`).
    """
    from perta_hub.records import ModelRecord, UnlearnedModelRecord, record_of

    record = record_of(path)
    if isinstance(record, UnlearnedModelRecord):
        training = record.get("training") or {}
        return {"method": record.method,
                "setting": f"lr={training.get('lr', 0):g},ep={training.get('epochs', 0):g}"}
    if not isinstance(record, ModelRecord):
        return {}
    return {k: record.get(k) for k in ("alpha", "method") if record.get(k) is not None}


def evaluate_tofu(
    model: str | Any,
    *,
    forget_split: str = EVALUATE.forget_split,
    retain_logs: str | Path | Mapping[str, float] | Reference | None = EVALUATE.retain_logs,
    data_dir: str | Path | None = EVALUATE.data_dir,
    max_examples: int | None = EVALUATE.max_examples,
    device: str = EVALUATE.device,
    dtype: str = EVALUATE.dtype,
    batch_size: int = EVALUATE.batch_size,
    max_new_tokens: int = EVALUATE.max_new_tokens,
    max_length: int = EVALUATE.max_length,
    mia_k: float = EVALUATE.mia_k,
    bootstrap: int = EVALUATE.bootstrap,
    seed: int = EVALUATE.seed,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one model on TOFU, as open-unlearning does, with the MIA attacks and PrivLeak.

    Args:
        model: local folder or Hub id ``org/name[@revision]`` (or a ``LoadedModel``).
        forget_split: ``forget01`` | ``forget05`` | ``forget10``; its holdout split (``holdout01/05/10``, first
            as many rows as the forget split) gives the MIA attacks' non-members.
        retain_logs: the retain model's evaluation JSON (path), a :class:`Reference`, or its per-question
            forget truth ratios (index -> TR); without it forget quality is None with a message, and without
            its MIA scores (a path written by this version, or a Reference) PrivLeak is.
        data_dir: folder with the TOFU JSON files (default: the Hub dataset ``locuslab/TOFU``).
        max_examples: evaluate only the first N rows of each split (the result says ``subset``).
        device: ``auto`` | ``cpu`` | ``cuda``; dtype: ``auto`` (bf16 on GPU, fp32 on CPU) or a name.
        batch_size: sequences per forward pass / per generate call.
        max_new_tokens: generation budget (tokens) for ROUGE; max_length: token limit per example.
        mia_k: fraction of the answer tokens Min-K% and Min-K%++ average (open-unlearning's 0.4).
        bootstrap: number of bootstrap resamples of the question rows for 95 % percentile intervals of every
            aggregate (``bootstrap`` entry, :func:`perta_hub.evaluation.bootstrap.bootstrap_intervals`); 0: none.
        seed: seed of the bootstrap's resampling.
    Returns:
        a dict in the shape of open-unlearning's ``TOFU_EVAL.json`` plus ``meta``, ``subset``, the retain
        model's per-row values used (``reference``) and, with ``bootstrap``, the intervals.
    """
    from perta_hub._version import __version__
    from perta_hub.evaluation.bootstrap import bootstrap_intervals, check_resamples
    from perta_hub.evaluation.scoring import LoadedModel, load_model

    configs = split_configs(forget_split)
    if max_examples is not None and max_examples < 1:
        raise InputError(f"--max-examples must be >= 1, got {max_examples}")
    check_resamples(bootstrap)
    data = {p: load_split(c, data_dir=data_dir, max_examples=max_examples) for p, c in configs.items()}
    holdout_split = holdout_config(forget_split)
    try:
        holdout_rows, _ = load_split(holdout_split, data_dir=data_dir, max_examples=len(data["forget"][0]))
    except DataError as err:
        raise DataError(f"the MIA attacks' non-members (TOFU's {holdout_split}): {err}") from None
    subset = any(len(rows) < total for rows, total in data.values())
    ref = as_reference(retain_logs, forget_split)
    check_mia_k(mia_k, ref)

    t0 = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(str(model), device=device, dtype=dtype)
    labels = perta_labels(lm.path)  # read (and checked) before the evaluation's work
    results: dict[str, Any] = {}
    scored = {"forget": score_answers(lm, "forget", data["forget"][0], batch_size=batch_size, max_length=max_length,
                                      progress=progress, token_stats=True),
              "holdout": score_answers(lm, "holdout", holdout_rows, batch_size=batch_size, max_length=max_length,
                                       progress=progress, token_stats=True)}
    for prefix, (rows, _) in data.items():
        results.update(evaluate_split(lm, prefix, rows, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      max_length=max_length, progress=progress, answers=scored.get(prefix)))
    results.update(membership_entries(lm.tokenizer, scored["forget"], scored["holdout"], mia_k))
    model_ratios = {k: v["score"] for k, v in results["forget_truth_ratio"]["value_by_index"].items()}
    results["forget_quality"] = forget_quality_entry(model_ratios, None if ref is None else ref.truth_ratios,
                                                     subset=subset, source=None if ref is None else ref.source)
    results["model_utility"] = model_utility_entry(results)
    add_privleak(results, ref, subset=subset)
    results["subset"] = subset
    if ref is not None:
        results["reference"] = reference_rows(ref, list(model_ratios), list(row_scores(results, "mia_loss", "holdout")))
    results["meta"] = {
        "benchmark": "tofu",
        "forget_split": forget_split,
        "model": lm.source,
        "revision": lm.revision,
        "label": model_label(lm.source, labels),
        **labels,
        "data": str(Path(data_dir).resolve()) if data_dir is not None else HUB_DATASET,
        "splits": {**configs, "holdout": holdout_split},
        "subset": subset,
        "max_examples": max_examples,
        "num_examples": {**{p: len(rows) for p, (rows, _) in data.items()}, "holdout": len(holdout_rows)},
        "mia_k": mia_k,
        "device": lm.device,
        "dtype": lm.dtype,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "max_length": max_length,
        "seconds": round(time.perf_counter() - t0, 3),
        "perta_hub_version": __version__,
    }
    if bootstrap:
        results["bootstrap"] = bootstrap_intervals(results, resamples=bootstrap, seed=seed)
    return results


def model_label(source: str, labels: Mapping[str, Any]) -> str:
    """Short label for tables and plots: ``method alpha=A`` from perta_config.json, else the folder name."""
    if labels:
        parts = [str(labels["method"])] if labels.get("method") is not None else []
        if labels.get("alpha") is not None:
            parts.append(f"alpha={labels['alpha']}")
        if labels.get("setting") is not None:
            parts.append(str(labels["setting"]))
        if parts:
            return " ".join(parts)
    path = Path(source)
    return path.name if path.exists() else source


def run_evaluation(
    models: Sequence[str],
    *,
    benchmark: str = EVALUATE.benchmark,
    forget_split: str = EVALUATE.forget_split,
    retain_logs: str | Path | None = EVALUATE.retain_logs,
    retain_model: str | None = EVALUATE.retain_model,
    output: str | Path | None = EVALUATE.output,
    write_card: bool = EVALUATE.write_card,
    plot: str | Path | None = EVALUATE.plot,
    overwrite: bool = EVALUATE.overwrite,
    echo: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """What ``perta-hub evaluate`` does: evaluate each model, then write JSON, cards, table and plot.

    Args:
        models: one or more local folders / Hub ids.
        retain_logs / retain_model: the forget-quality reference (at most one); ``retain_model`` is
            evaluated first and its JSON saved (see :func:`retain_logs_path`) for reuse as ``retain_logs``.
        output: JSON path; one model gives its ``TOFU_EVAL.json``-style dict, several give
            ``{"benchmark", "forget_split", "models": [dict, ...]}``.
        write_card: write each (local) model's results into its README.md ``model-index``.
        plot: PNG path for the forget quality / model utility plot.
        overwrite: replace an existing ``output``, ``plot`` or retain-logs file; without it an
            existing one is refused before any model is evaluated.
        echo: a ``print``-like callable for progress lines (None: silent).
        options: passed to :func:`evaluate_tofu` (data_dir, max_examples, device, dtype, batch_size,
            max_new_tokens, max_length, mia_k, bootstrap, seed, progress).
    Returns:
        ``{"results": [...], "table": str, "output": Path|None, "retain_logs": Path|None,
        "plot": Path|None, "cards": [Path, ...]}``.
    """
    from perta_hub.evaluation.report import format_table
    from perta_hub.evaluation.report import write_card as write_model_card

    say = echo or (lambda *_: None)
    if benchmark != "tofu":
        raise InputError(f"unknown benchmark {benchmark!r}; only 'tofu' is supported")
    if not models:
        raise InputError("pass at least one MODEL (a folder or a Hub id)")
    if retain_logs is not None and retain_model is not None:
        raise InputError("pass either --retain-logs or --retain-model, not both")
    split_configs(forget_split)
    if write_card:
        for m in models:
            if not Path(m).expanduser().is_dir():
                raise InputError(f"--write-card writes into a local model folder; {m} is not one")
    if retain_logs is not None:  # fail before any model runs
        check_mia_k(options.get("mia_k", EVALUATE.mia_k), read_reference(retain_logs, forget_split))
    if plot is not None and retain_logs is None and retain_model is None:
        raise InputError("--plot needs forget quality: pass --retain-logs FILE or --retain-model M")
    check_outputs([("-o", output), ("--plot", plot),
                   ("the retain model's logs", retain_logs_path(output, forget_split) if retain_model else None)],
                  inputs=[retain_logs], overwrite=overwrite)
    saved_logs, ref = None, None
    if retain_model is not None:
        say(f"Evaluating the retain model {retain_model} on {forget_split} ...")
        ref = evaluate_tofu(retain_model, forget_split=forget_split, **options)
        saved_logs = save_results(ref, retain_logs_path(output, forget_split))
        say(f"Saved the retain model's logs to {saved_logs}; reuse them with --retain-logs {saved_logs}")
        retain_logs = saved_logs
    results = []
    for m in models:
        say(f"Evaluating {m} on TOFU {forget_split} ...")
        results.append(evaluate_tofu(m, forget_split=forget_split, retain_logs=retain_logs, **options))
    out_path = None
    if output is not None:
        payload: Any = results[0] if len(results) == 1 else {
            "benchmark": "tofu", "forget_split": forget_split, "models": results}
        out_path = save_results(payload, output)
    cards = [write_model_card(Path(m).expanduser(), r) for m, r in zip(models, results, strict=True)] \
        if write_card else []
    plot_path = None
    if plot is not None:
        from perta_hub.evaluation.plot import plot_sweep

        plot_path = plot_sweep(results + ([{**ref, "forget_quality": {"agg_value": None}}] if ref else []), plot)
    return {"results": results, "table": format_table(results), "output": out_path,
            "retain_logs": saved_logs, "plot": plot_path, "cards": cards}
