"""``perta-hub tune``: choose alpha in memory, then write only the chosen model through ``apply``.

Steps: check every input as ``apply`` does (one job per ``--weights`` candidate; nothing written), load and
encode the signal subsets, load the target once, score it (alpha 0: the reference), search alpha for each
candidate with the model set in place (:class:`~perta_hub.tuning.in_place.InPlaceMerge`), free the model, write
each chosen model with :func:`perta_hub.merge.apply.apply_spec` (so its bytes are apply's), add the search to its
``perta_config.json`` (``tune``) and card (table, ``tune.png``), and with ``evaluate`` run the full TOFU
evaluation on the chosen models.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.merge.spec import MergeSpec
from perta_hub.options.tune import DEFAULT_ALPHA_RANGE, TUNE

TV = "none"  # --weights none: plain task vector (w = 1) as one of the candidates


def _candidates(weights: Sequence[str | Path | None] | str | Path | None) -> list[str | None]:
    if weights is None or isinstance(weights, (str, Path)):
        weights = [weights] if weights is not None else []
    items = [None if w is None or str(w) == TV else str(w) for w in weights] or [None]
    if len(set(items)) != len(items):
        raise InputError(f"--weights repeats: {[w or TV for w in items]}")
    return items


def _labels(items: list[str | None]) -> list[str]:
    labels = []
    for i, w in enumerate(items):
        label = "tv" if w is None else (Path(w).name or f"weights-{i}")
        labels.append(label if label not in labels else f"{label}-{i}")
    return labels


def _grid(alphas: Sequence[Any], alpha_range: Sequence[float] | None, max_evals: int, grid_points: int | None
          ) -> list[float]:
    from perta_hub.merge.spec import check_alphas
    from perta_hub.tuning.search import linear_grid

    if alphas and alpha_range:
        raise InputError("pass either --alpha (repeated) or --alpha-range LO HI, not both")
    # apply's rule for alpha (> 0), without its --allow-negative-alpha: alpha 0 is the search's reference
    remedy = "tune searches alpha > 0 (alpha 0, the target, is always evaluated as the reference)"
    if alphas:
        values = check_alphas([part for a in alphas for part in (a.split(",") if isinstance(a, str) else [a])],
                              remedy=remedy)
        return sorted(values)
    lo, hi = alpha_range or DEFAULT_ALPHA_RANGE
    check_alphas([lo, hi] if lo != hi else [lo], option="--alpha-range", remedy=remedy)
    return linear_grid(float(lo), float(hi), grid_points or max(2, min(max_evals, (max_evals + 1) // 2)))


def tune(
    model: str | Path,
    task_vector: str | Path,
    *,
    forget: str,
    retain: str,
    out_dir: str | Path,
    weights: Sequence[str | Path | None] | str | Path | None = TUNE.weights,
    p: float | None = TUNE.p,
    lam: float | None = TUNE.lam,
    eps: float | None = TUNE.eps,
    utility_budget: float = TUNE.utility_budget,
    alphas: Sequence[Any] = TUNE.alphas,
    alpha_range: Sequence[float] | None = TUNE.alpha_range,
    grid_points: int | None = TUNE.grid_points,
    max_evals: int = TUNE.max_evals,
    forget_examples: int = TUNE.forget_examples,
    retain_examples: int = TUNE.retain_examples,
    rouge_questions: int = TUNE.rouge_questions,
    max_new_tokens: int = TUNE.max_new_tokens,
    batch_size: int = TUNE.batch_size,
    max_length: int = TUNE.max_length,
    data_dir: str | Path | None = TUNE.data_dir,
    device: str = TUNE.device,
    max_shard_size: int | str = TUNE.max_shard_size,
    allow_pickle: bool = TUNE.allow_pickle,
    evaluate: bool = TUNE.evaluate,
    forget_split: str = TUNE.forget_split,
    retain_model: str | None = TUNE.retain_model,
    retain_logs: str | Path | None = TUNE.retain_logs,
    eval_max_examples: int | None = TUNE.eval_max_examples,
    echo: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose alpha for each weight map (or the plain task vector) and write the chosen model(s).

    Args:
        model, task_vector, weights, p, lam, eps, device, max_shard_size, allow_pickle: as :func:`apply`;
            ``weights`` may list several weight maps (``"none"``: the plain task vector), one chosen alpha each.
        forget, retain: QA data specs of the signals (``tofu:forget01``, a file, a Hub dataset).
        out_dir: the chosen model's folder (several candidates: ``out_dir/<weight map folder name>``).
        utility_budget: keep the mean retain-answer probability >= this fraction of the target's (0 < b <= 1).
        alphas / alpha_range / grid_points: the coarse grid (given alphas, or ``grid_points`` evenly spaced in
            ``alpha_range``; default about half of ``max_evals`` in ``[0.5, 8]``); then bisection on the boundary.
        max_evals: alphas evaluated per candidate (grid + bisection), besides the target itself.
        forget_examples, retain_examples, rouge_questions: subset sizes of the signals (seeded, in file order).
        evaluate: run the full TOFU evaluation (``evaluate``'s definitions) on each chosen model, written into its
            card, with ``forget_split``, ``retain_model`` / ``retain_logs`` and ``eval_max_examples``.
    Returns:
        ``{"outputs": [Path], "chosen": {label: alpha}, "records": {label: tune dict}, "table": str,
        "notes": [str] (alphas evaluated per candidate), "warnings": [str] (a choice at the edge of the alphas
        searched), "evaluation": run_evaluation's dict or None, "seconds": {...}}``.
    """
    from perta_hub.io.output_folder import refuse_unusable
    from perta_hub.tuning.search import check_budget

    say = echo or (lambda *_: None)
    t0 = time.perf_counter()
    check_budget(utility_budget)
    if max_evals < 1:
        raise InputError(f"--max-evals must be >= 1, got {max_evals}")
    grid = _grid(alphas, alpha_range, max_evals, grid_points)
    items = _candidates(weights)
    labels = _labels(items)
    out = Path(out_dir).expanduser()
    folders = [out] if len(items) == 1 else [out / label for label in labels]
    if retain_model is not None and retain_logs is not None:
        raise InputError("pass either --retain-model or --retain-logs, not both")
    if not evaluate and (retain_model is not None or retain_logs is not None or eval_max_examples is not None):
        raise InputError("--retain-model, --retain-logs and --eval-max-examples only apply with --evaluate")
    if evaluate and retain_logs is not None:
        from perta_hub.evaluation.tofu import read_retain_logs

        read_retain_logs(retain_logs, forget_split)
    for folder in folders:
        refuse_unusable(folder)
    # the merge of every candidate: this spec with the candidate's weight map (and, when written, its alpha)
    spec = MergeSpec(model, task_vector, p=p, lam=lam, eps=eps, device=device, max_shard_size=max_shard_size,
                     allow_pickle=allow_pickle)
    return _run(spec, items, labels, folders, forget=forget, retain=retain,
                budget=utility_budget, grid=grid, max_evals=max_evals, forget_examples=forget_examples,
                retain_examples=retain_examples, rouge_questions=rouge_questions, max_new_tokens=max_new_tokens,
                batch_size=batch_size, max_length=max_length, data_dir=data_dir, evaluate=evaluate,
                forget_split=forget_split, retain_model=retain_model, retain_logs=retain_logs,
                eval_max_examples=eval_max_examples, say=say, progress=progress, t0=t0)


def _run(spec: MergeSpec, items: list[str | None], labels: list[str], folders: list[Path], *,
         forget: str, retain: str, budget: float, grid: list[float], max_evals: int,
         forget_examples: int, retain_examples: int, rouge_questions: int, max_new_tokens: int, batch_size: int,
         max_length: int, data_dir: Any, evaluate: bool,
         forget_split: str, retain_model: Any, retain_logs: Any, eval_max_examples: Any, say: Any, progress: bool,
         t0: float) -> dict[str, Any]:
    from perta_hub.data.encoding import load_tokenizer
    from perta_hub.evaluation.scoring import LoadedModel
    from perta_hub.tuning.in_place import InPlaceMerge, load_target, open_job, target_dtype
    from perta_hub.tuning.report import tune_record
    from perta_hub.tuning.search import search_alpha
    from perta_hub.tuning.signals import measure, prepare_probe

    jobs = []
    try:
        for w, folder in zip(items, folders, strict=True):  # every input checked before any work
            jobs.append(open_job(spec.replace(weights=w), folder))
        first = jobs[0]
        tokenizer = load_tokenizer(first.target.root, str(spec.model))
        probe = prepare_probe(tokenizer, forget, retain, forget_examples=forget_examples,
                              retain_examples=retain_examples, rouge_questions=rouge_questions,
                              max_length=max_length, data_dir=data_dir)
        say(f"Loading {spec.model} once ({first.device}) ...")
        t_load = time.perf_counter()
        net = load_target(first)
        dtype_name = str(target_dtype(first)).removeprefix("torch.")
        lm = LoadedModel(net, tokenizer, str(spec.model), Path(first.target.root), first.target.identity, first.device,
                         dtype_name)
        seconds: dict[str, float] = {"load": time.perf_counter() - t_load}

        def signals() -> dict[str, float]:
            return measure(lm, probe, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)

        reference = signals()
        say(f"target: forget NLL {reference['forget_nll']:.4g}, retain probability {reference['retain_prob']:.4g}")
        records: dict[str, dict[str, Any]] = {}
        for job, label in zip(jobs, labels, strict=True):
            merge = InPlaceMerge(job, net)
            seen: dict[float, dict[str, float]] = {}
            seconds[f"set weights {label}"] = 0.0  # of the search: setting the parameters in place, all alphas

            def score(alpha: float, merge: InPlaceMerge = merge, seen: dict = seen, label: str = label
                      ) -> tuple[float, float]:
                t_set = time.perf_counter()
                merge.set_alpha(alpha)
                seconds[f"set weights {label}"] += time.perf_counter() - t_set
                seen[alpha] = signals()
                say(f"{label} alpha {alpha:g}: forget NLL {seen[alpha]['forget_nll']:.4g}, retain probability "
                    f"{seen[alpha]['retain_prob']:.4g}")
                return seen[alpha]["forget_nll"], seen[alpha]["retain_prob"]

            t_search = time.perf_counter()
            result = search_alpha(score, grid=grid, budget=budget, reference_utility=reference["retain_prob"],
                                  max_evals=max_evals)
            elapsed = time.perf_counter() - t_search
            seconds[f"search {label}"] = elapsed
            records[label] = tune_record(result, seen, reference, grid=grid, max_evals=max_evals, data=probe.data,
                                         seconds=elapsed)
            say(f"{label}: chosen alpha {result.chosen.alpha:g} ({len(result.points)} alphas in {elapsed:.1f} s)")
        lm.model = None  # free the model before writing
        del net
    finally:
        for job in jobs:
            job.close()
    return _write(spec, items, labels, folders, records, evaluate=evaluate,
                  forget_split=forget_split, retain_model=retain_model, retain_logs=retain_logs,
                  eval_max_examples=eval_max_examples, data_dir=data_dir, batch_size=batch_size,
                  max_length=max_length, say=say, progress=progress, seconds=seconds, t0=t0)


def _write(spec: MergeSpec, items: list[str | None], labels: list[str], folders: list[Path],
           records: dict[str, dict[str, Any]], *, evaluate: bool, forget_split: str, retain_model: Any, retain_logs: Any,
           eval_max_examples: Any, data_dir: Any, batch_size: int, max_length: int, say: Any, progress: bool,
           seconds: dict[str, float], t0: float) -> dict[str, Any]:
    from perta_hub.merge.apply import apply_spec
    from perta_hub.tuning.report import edge_warnings, search_notes, search_table

    outputs = []
    t_write = time.perf_counter()
    for w, label, folder in zip(items, labels, folders, strict=True):
        tune_data = records[label]
        (path,) = apply_spec(spec.replace(weights=w, alphas=(tune_data["chosen"],)), folder, progress=progress)
        add_search(path, tune_data, title=f"{label}: alpha search (budget {tune_data['budget']:g})")
        outputs.append(path)
    seconds["write"] = time.perf_counter() - t_write
    evaluation = None
    if evaluate:
        from perta_hub.evaluation import run_evaluation

        evaluation = run_evaluation([str(o) for o in outputs], forget_split=forget_split, retain_model=retain_model,
                                    retain_logs=retain_logs, write_card=True, echo=say, data_dir=data_dir,
                                    max_examples=eval_max_examples, device=spec.device, batch_size=batch_size,
                                    max_length=max_length, progress=progress, output=evaluation_path(folders),
                                    overwrite=True)
    seconds["total"] = time.perf_counter() - t0
    runs = [(label, records[label]) for label in labels]
    return {"outputs": outputs, "chosen": {label: records[label]["chosen"] for label in labels}, "records": records,
            "table": search_table(runs), "notes": search_notes(runs), "warnings": edge_warnings(runs),
            "evaluation": evaluation,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def evaluation_path(folders: list[Path]) -> Path:
    """``<OUT>.tofu_eval.json`` beside the output folder ``-o`` (the retain model's logs beside it as
    ``<OUT>.tofu_eval.retain.json``): tune's own files, replaced by a re-run; never inside a model folder."""
    out = folders[0] if len(folders) == 1 else folders[0].parent
    return out.with_name(f"{out.name}.tofu_eval.json")


def add_search(folder: Path, tune_data: dict[str, Any], *, title: str) -> None:
    """Record the search in a finished model folder: ``tune`` in ``perta_config.json``, the plot and the card's
    table (each file replaced atomically; the weights are not touched)."""
    from perta_hub.cards.render import model_card
    from perta_hub.io.atomic import write_atomic
    from perta_hub.io.fingerprint import file_sha256
    from perta_hub.records import CONFIG_NAME, read_record
    from perta_hub.tuning.report import PLOT_NAME, plot_search

    record = read_record(folder)
    if getattr(record, "alpha", None) != tune_data["chosen"]:
        raise InputError(f"{folder} holds alpha {getattr(record, 'alpha', None)}, not the chosen "
                         f"{tune_data['chosen']}; choose another -o")
    plot = plot_search(tune_data, folder / PLOT_NAME, title)
    changes: dict[str, Any] = {"tune": tune_data}
    files = getattr(record, "files", None)
    if isinstance(files, dict):  # the files the run wrote, for `verify`: the plot is one of them now
        changes["files"] = dict(sorted({**files, PLOT_NAME: file_sha256(plot)}.items()))
    updated = dataclasses.replace(record, **changes)
    write_atomic(folder / "README.md", str(model_card(updated.to_dict())))
    write_atomic(folder / CONFIG_NAME, updated.to_json())
