"""Time estimates of ``perta-hub run --dry-run``: each step's work in units, times seconds per unit.

A step's work is counted in the units its time grows with (training: rows x epochs x million parameters; a weight
map: examples x M; apply: alphas x M; evaluate: models x rows x M; tune: candidates x alphas x examples x M). The
seconds per unit come from the steps this machine finished before (every finished step adds its rate to
``$HF_HOME/perta-hub/recipe-rates.json``; used when one of a model size within 4x exists), else from
:data:`TABLE`, measured for SmolLM2-135M-Instruct on 2 CPU cores (docs/results-weak-target.md), plus :data:`OVERHEAD_S` per
step. A model on the Hub that is not downloaded, or data on the Hub, leaves a step without an estimate.
"""

from __future__ import annotations

import json
import statistics
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perta_hub.recipes.plan import Instance, Plan
from perta_hub.recipes.values import Ref

#: seconds per unit, measured for SmolLM2-135M-Instruct (134.5 M parameters, fp32 training, bf16 evaluation) on
#: the 2-core CPU of docs/results-weak-target.md: each step's wall time divided by its work (see the module's docstring)
TABLE = {
    "finetune": 0.005, "task-vector": 0.005,  # per row x epoch x M parameters (40 rows, 1 epoch: 26 s)
    "unlearn:ga": 0.005, "unlearn:gd": 0.0082, "unlearn:npo": 0.011,  # per forget row x epoch x M
    "compute-weights:grad": 0.0033, "compute-weights:fisher": 0.0048,  # per example x M (80 examples: 36 / 52 s)
    "apply": 0.0082,  # per alpha x M (about 1.1 s per alpha)
    "evaluate": 0.0093,  # per model x row x M (40 rows per split, 32 new tokens: about 50 s a model)
    "tune": 0.00041,  # per candidate x alpha x example x M (2 candidates x 8 alphas x 64 examples: 56 s)
}
#: seconds a step costs besides its work (loading, set-up), with the table's rates
OVERHEAD_S = 5.0
#: the local kinds: seconds
FIXED_S = {"tiny-model": 5.0, "report": 3.0}
TABLE_SOURCE = "built-in table (SmolLM2-135M on 2 CPU cores, docs/results-weak-target.md)"
#: a measured rate is used for models within this factor of its model's size
SIZE_FACTOR = 4.0
#: measured rates kept per kind of work
KEEP = 20


@dataclass(frozen=True)
class Estimate:
    """A step's estimated seconds (None: unknown) and where its rate comes from."""

    seconds: float | None
    source: str


def rates_file() -> Path:
    """``$HF_HOME/perta-hub/recipe-rates.json``, beside apply's transfer rates."""
    from perta_hub.hub.stream_plan import rates_path

    return rates_path().with_name("recipe-rates.json")


def measured() -> dict[str, list[list[float]]]:
    """Rate kind -> [[million parameters, seconds per unit], ...] of the steps finished on this machine."""
    try:
        data = json.loads(rates_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(work: tuple[str, float, float] | None, seconds: float) -> None:
    """Add a finished step's rate (``work``: rate kind, units, million parameters) to :func:`rates_file`."""
    if work is None or work[1] <= 0 or seconds <= 0:
        return
    from perta_hub.io.atomic import write_atomic

    kind, units, params = work
    data = measured()
    data[kind] = [*data.get(kind, []), [params, seconds / units]][-KEEP:]
    try:
        rates_file().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(rates_file(), json.dumps(data) + "\n")
    except OSError:
        pass  # a read-only home only costs the measured estimates


def estimate(plan: Plan, inst: Instance) -> Estimate:
    """The time of one instance (see the module's docstring)."""
    kind = inst.step.kind.name
    if kind in FIXED_S:
        return Estimate(FIXED_S[kind], "fixed")
    work = work_of(plan, inst)
    if work is None:
        return Estimate(None, "unknown (Hub model or data not on this machine, or push)")
    rate_kind, units, params = work
    near = [rate for size, rate in measured().get(rate_kind, [])
            if params / SIZE_FACTOR <= size <= params * SIZE_FACTOR]
    if near:
        return Estimate(units * statistics.median(near), f"measured here ({len(near)} earlier steps)")
    return Estimate(units * TABLE[rate_kind] + OVERHEAD_S, TABLE_SOURCE)


def work_of(plan: Plan, inst: Instance) -> tuple[str, float, float] | None:
    """(rate kind, units of work, million parameters) of an instance, None when not known before it runs."""
    step, kind = inst.step, inst.step.kind.name
    v = step.effective()
    model = v.get("models", (None,))[0] if kind == "evaluate" else v.get("model") or v.get("base")
    params = params_of(plan, inst, model)
    if params is None or kind == "push":
        return None
    if kind in ("finetune", "task-vector", "unlearn"):
        data = v.get("data") if kind == "finetune" else v.get("forget")
        if kind == "task-vector" and data is None:  # the difference of two checkpoints: one streamed pass
            return "apply", params, params
        rows = rows_of(plan, data)
        rate = f"unlearn:{v.get('method')}" if kind == "unlearn" else kind
        return (rate, rows * float(v.get("epochs") or 1) * params, params) if rows is not None else None
    if kind == "compute-weights":
        forget, retain = rows_of(plan, v.get("forget")), rows_of(plan, v.get("retain"))
        if forget is None or retain is None:
            return None
        if v.get("retain_fraction"):
            retain = max(1, round(retain * v["retain_fraction"]))
        if v.get("max_examples"):
            retain = min(retain, v["max_examples"])
        return f"compute-weights:{v.get('method')}", (forget + retain) * params, params
    if kind == "apply":
        return "apply", len(v.get("steps") or v.get("alphas") or ()) * params, params
    if kind == "tune":
        forget, retain = rows_of(plan, v.get("forget")), rows_of(plan, v.get("retain"))
        if forget is None or retain is None:
            return None
        examples = min(forget, v["forget_examples"]) + min(retain, v["retain_examples"])
        return "tune", max(1, len(v.get("weights") or ())) * v["max_evals"] * examples * params, params
    if kind == "evaluate":
        models = sum(outputs_of(inst, m) for m in v["models"]) + (1 if v.get("retain_model") else 0)
        rows = min(v.get("max_examples") or 10**9, FORGET_ROWS.get(v["forget_split"], 40))
        return "evaluate", models * rows * params, params
    return None


def outputs_of(inst: Instance, value: Any) -> int:
    """How many models a value names: a sweep's outputs (apply: its alphas or step norms; tune: its weight maps),
    else one."""
    if not (isinstance(value, Ref) and any(d.name == value.name for d in inst.needs)):
        return 1
    step = inst.need(value.name).step
    v = step.effective()
    if step.kind.name == "apply":
        return len(v.get("steps") or v.get("alphas") or (1,))
    if step.kind.name == "tune":
        return max(1, len(v.get("weights") or ()))
    return 1


#: rows of each TOFU forget split (the evaluation's row count is bounded by it)
FORGET_ROWS = {"forget01": 40, "forget05": 200, "forget10": 400}


def rows_of(plan: Plan, value: Any) -> int | None:
    """Rows of a data value: a data entry or a local spec; None for a Hub dataset or a step's output."""
    from perta_hub.recipes.data import Spec

    try:
        if isinstance(value, Ref) and value.name in plan.recipe.data:
            return len(plan.data.rows(plan.recipe.data[value.name]))
        if isinstance(value, str):
            return len(plan.data.rows(Spec(value)))
    except Exception:  # noqa: BLE001 - a Hub dataset offline, a file not there yet: no estimate
        return None
    return None


def params_of(plan: Plan, inst: Instance, value: Any) -> float | None:
    """Million parameters of a model value: a step's model (the model it was made from), a local folder, a tiny
    model's shape; None for a Hub model not on this machine."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    if isinstance(value, Ref):
        if value.name in plan.recipe.steps:
            source = inst.need(value.name)
            v = source.step.effective()
            if source.step.kind.name == "tiny-model":
                h, i, n = v["hidden_size"], v["intermediate_size"], v["layers"]
                return (2 * v["vocab_size"] * h + n * (4 * h * h + 3 * h * i)) / 1e6
            inner = v.get("models", (None,))[0] if source.step.kind.name == "evaluate" else v.get("model") or \
                v.get("base")
            return params_of(plan, source, inner)
        if value.name in plan.recipe.models:
            value = plan.recipe.models[value.name]
    return safetensors_params(Path(value)) if isinstance(value, str) else None


def safetensors_params(folder: Path) -> float | None:
    """Million parameters of the ``*.safetensors`` files of a local folder, from their headers."""
    if not folder.is_dir():
        return None
    total = 0
    for path in folder.glob("*.safetensors"):
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total / 1e6 if total else None
