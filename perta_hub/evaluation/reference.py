"""The retain model's numbers, computed once and reused: forget truth ratios (forget quality) and MIA scores
(PrivLeak).

:func:`read_reference` reads them from the JSON of an earlier ``perta-hub evaluate`` of the retain model (or
open-unlearning's ``TOFU_EVAL.json``: truth ratios, and MIA AUCs without per-row scores), and
:func:`reference_rows` writes the rows one evaluation used into its own result (``reference``), so intervals
and paired comparisons are computed from a result file alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perta_hub.errors import InputError
from perta_hub.evaluation.privacy import ATTACKS, ORIENTATION


@dataclass(frozen=True)
class Reference:
    """The retain model's per-row values on one forget split.

    Attributes:
        truth_ratios: forget row index (str) -> truth ratio.
        mia: attack -> ``{"forget": {index: score}, "holdout": {index: score}}`` (higher = member); only from
            perta-hub's own JSON, whose per-row scores say their orientation.
        mia_auc: attack -> AUC as logged (open-unlearning's ``mia_*.agg_value`` too).
        k: the Min-K fraction the logged attacks used (None when not recorded).
        source: the file read (None when given in memory).
    """

    truth_ratios: dict[str, float]
    mia: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    mia_auc: dict[str, float] = field(default_factory=dict)
    k: float | None = None
    source: str | None = None


def _retain_for(forget_split: str) -> str:
    from perta_hub.evaluation.tofu import RETAIN_FOR

    return RETAIN_FOR.get(forget_split, "retain")


def read_reference(path: str | Path, forget_split: str | None = None) -> Reference:
    """The retain model's :class:`Reference` from an earlier evaluation's JSON (``--retain-logs``).

    Raises:
        InputError: a missing or non-JSON file, no forget truth ratios, or logs of another forget split.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"--retain-logs {p} does not exist; evaluate the retain model first (--retain-model)")
    try:
        logs = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"--retain-logs {p} is not JSON ({err}); pass the retain model's evaluation JSON") from err
    if not isinstance(logs, dict):
        raise InputError(f"--retain-logs {p} is not one evaluation's JSON object; pass the retain model's JSON")
    try:
        by_index = logs["forget_truth_ratio"]["value_by_index"]
        ratios = {str(k): float(v["score"]) for k, v in by_index.items() if v is not None and v["score"] is not None}
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"--retain-logs {p} has no forget_truth_ratio.value_by_index scores; pass the JSON written by "
            "`perta-hub evaluate` (or open-unlearning's TOFU_EVAL.json) for the retain model"
        ) from err
    logged_split = (logs.get("meta") or {}).get("forget_split")
    if forget_split and logged_split and logged_split != forget_split:
        raise InputError(
            f"--retain-logs {p} were computed on {logged_split}, not {forget_split}; evaluate the retain "
            f"model ({_retain_for(forget_split)}) on {forget_split}"
        )
    if not ratios:
        raise InputError(f"--retain-logs {p} holds no truth ratios")
    mia, mia_auc, k = _read_mia(logs, p)
    return Reference(ratios, mia, mia_auc, k, str(path))


def _read_mia(logs: Mapping[str, Any], p: Path) -> tuple[dict[str, Any], dict[str, float], float | None]:
    """Per-row MIA scores (perta-hub's JSON only), logged AUCs and the Min-K ``k`` of a retain model's logs."""
    mia: dict[str, dict[str, dict[str, float]]] = {}
    aucs: dict[str, float] = {}
    k = None
    for attack in ATTACKS:
        entry = logs.get(attack)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("agg_value"), (int, float)):
            continue
        aucs[attack] = float(entry["agg_value"])
        if entry.get("k") is not None:
            k = float(entry["k"])
        if entry.get("score") != ORIENTATION:
            continue  # open-unlearning's per-row scores have the other sign: only its AUC is used
        try:
            mia[attack] = {side: {str(i): float(v["score"]) for i, v in entry[side]["value_by_index"].items()}
                           for side in ("forget", "holdout")}
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"--retain-logs {p}: {attack} lacks its per-row forget/holdout scores ({err}); "
                             "re-evaluate the retain model") from err
    return mia, aucs, k


def read_retain_logs(path: str | Path, forget_split: str | None = None) -> dict[str, float]:
    """Per-question forget truth ratios (index -> TR) from an earlier evaluation's JSON.

    Accepts the output of ``perta-hub evaluate`` on the retain model, and open-unlearning's
    ``TOFU_EVAL.json`` (both hold ``forget_truth_ratio.value_by_index[i].score``).
    """
    return read_reference(path, forget_split).truth_ratios


def as_reference(retain_logs: str | Path | Mapping[str, float] | Reference | None,
                 forget_split: str) -> Reference | None:
    """``--retain-logs`` in any of its forms (a path, index -> truth ratio, a :class:`Reference`) as a Reference."""
    if retain_logs is None or isinstance(retain_logs, Reference):
        return retain_logs
    if isinstance(retain_logs, Mapping):
        return Reference({str(k): float(v) for k, v in retain_logs.items()})
    return read_reference(retain_logs, forget_split)


def reference_rows(ref: Reference, forget_rows: list[str], holdout_rows: list[str]) -> dict[str, Any]:
    """The result's ``reference`` entry: the retain model's per-row values on the rows this evaluation used
    (``forget_truth_ratio``: index -> TR; ``mia``: attack -> forget / holdout index -> score), and its source."""
    mia = {a: {"forget": {i: s["forget"][i] for i in forget_rows if i in s["forget"]},
               "holdout": {i: s["holdout"][i] for i in holdout_rows if i in s["holdout"]}}
           for a, s in ref.mia.items()}
    return {"source": ref.source,
            "forget_truth_ratio": {i: ref.truth_ratios[i] for i in forget_rows if i in ref.truth_ratios},
            "mia": mia}
