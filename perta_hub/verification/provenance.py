"""Provenance (``--recompute``): fetch the recorded inputs at their recorded revisions and recompute the
published tensors with the same math and cast as the command that wrote them, compared bit for bit.

- model (``apply``): the merge the record describes (:func:`recorded_spec`, a
  :class:`~perta_hub.merge.spec.MergeSpec` as ``apply`` carries it), ``theta - alpha * (w ⊙ tau)`` through apply's
  own kernel (:func:`perta_hub.merge.kernel.merge_tensor`: chunked on CPU, whole-tensor on GPU, the weight map's
  "unrestricted" rule for tensors a ``--params`` map does not cover); recorded inputs that give NaN or Inf (which
  apply refuses to write) fail with the kernel's diagnosis;
- task vector: ``finetuned - base`` in fp32 cast to the stored dtype, or a LoRA adapter's ``scaling * B @ A``;
- weight map: the stored importances recombined into ``w`` (finite, in [0, 1]); the importances themselves
  are not recomputed (that needs gradient passes over the data): NOT VERIFIED, as is any kind made by training.

Inputs are found by :mod:`perta_hub.verification.locate` (recorded path, then by content hash).

Inputs are streamed tensor by tensor (memory-mapped, as ``apply`` reads them); nothing holds a whole model.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perta_hub.errors import PertaError
from perta_hub.merge.kernel import Weighting, untouched
from perta_hub.merge.low_rank import LowRankTaskVector, is_low_rank, open_task_vector
from perta_hub.merge.spec import MergeSpec
from perta_hub.records import UNSET
from perta_hub.verification.locate import InputSearch, is_hub_input, locate, pinned_source
from perta_hub.verification.result import VerifyResult
from perta_hub.verification.sources import Subject, reason

LEVEL = "provenance"


def pick(names: list[str], sample: int | None, seed: int) -> list[str]:
    """Every name (``sample`` None), or ``sample`` names chosen with ``random.Random(seed)``, in file order."""
    if sample is None or sample >= len(names):
        return list(names)
    chosen = set(random.Random(seed).sample(names, sample))
    return [n for n in names if n in chosen]


def describe_difference(name: str, expected: Any, got: Any) -> str | None:
    """None when ``got`` is bit for bit ``expected``; else how many values differ, the first and by how much."""
    import torch

    if got.dtype != expected.dtype or tuple(got.shape) != tuple(expected.shape):
        return (f"{name} is {str(got.dtype).removeprefix('torch.')} {tuple(got.shape)} but the recomputation gives "
                f"{str(expected.dtype).removeprefix('torch.')} {tuple(expected.shape)}")
    e = expected.reshape(-1).view(torch.uint8)
    g = got.reshape(-1).contiguous().view(torch.uint8)  # a zero expanded (low-rank form) too
    if torch.equal(e, g):
        return None
    size = expected.element_size()
    mask = (e.reshape(-1, size) != g.reshape(-1, size)).any(dim=1)
    count = int(mask.sum())
    first = int(mask.nonzero()[0, 0])
    ef, gf = expected.reshape(-1).float(), got.reshape(-1).float()
    diff = (ef[mask] - gf[mask]).abs()
    biggest = float(diff.nan_to_num(nan=float("inf")).max())
    return (f"{name} differs in {count} of {expected.numel()} values (first at flat index {first}: published "
            f"{float(gf[first])!r}, recomputed {float(ef[first])!r}; largest |difference| {biggest:.6g})")


class _Tally:
    """The tensor comparisons of one recomputation: the first difference named, the rest counted."""

    def __init__(self) -> None:
        self.checked = 0
        self.differing: list[str] = []
        self.first: str | None = None

    def compare(self, name: str, expected: Any, got: Any) -> None:
        self.checked += 1
        problem = describe_difference(name, expected, got)
        if problem is not None:
            self.differing.append(name)
            self.first = self.first or problem

    def fail(self, name: str, problem: str) -> None:
        """Tensor ``name`` cannot match whatever was published (e.g. its recomputation is not finite)."""
        self.checked += 1
        self.differing.append(name)
        self.first = self.first or problem

    def report(self, result: VerifyResult, what: str, total: int) -> None:
        scope = "every tensor" if self.checked == total else f"{self.checked} of {total} tensors (--sample)"
        if self.first is not None:
            more = f"; {len(self.differing)} of {self.checked} tensors differ" if len(self.differing) > 1 else ""
            result.add(LEVEL, "tensors", "fail", f"{self.first}{more}")
        else:
            result.add(LEVEL, "tensors", "pass", f"{scope} recomputed as {what}: bit for bit identical")


def recorded_spec(record: Any, device: str) -> MergeSpec:
    """The merge an unlearned model's record describes: its target, task vector and weight map as recorded (pinned
    at their recorded revisions, :func:`~perta_hub.verification.locate.pinned_source`; :func:`locate` finds them),
    its alpha (any sign: what was written is recomputed) and the combination (p, lam, eps) it records, computed
    on ``device``."""
    weights = record.weights if record.weights is not UNSET else None

    def recorded(key: str) -> Any:
        value = getattr(weights, key, UNSET)
        return None if value is UNSET else value

    return MergeSpec(pinned_source(record.target), pinned_source(record.task_vector),
                     weights=None if weights is None else pinned_source(weights), alphas=(record.alpha,),
                     p=recorded("p"), lam=recorded("lam"), eps=recorded("eps"), device=device,
                     allow_negative_alpha=True)


def _open_input(result: VerifyResult, role: str, item: Any, opener: Callable[[str], Any], where: InputSearch) -> Any:
    """Open a recorded input at its recorded revision (a local one found as :mod:`~perta_hub.verification.locate`
    says); adds a line when it cannot be reached, was found elsewhere by content hash, or changed."""
    try:
        found = locate(item, opener, where)
    except PertaError as err:
        result.add(LEVEL, f"{role} input", "unverified", f"cannot fetch {pinned_source(item)} ({reason(err)})"
                   if is_hub_input(item) else reason(err))
        return None
    opened, source = found.opened, found.where
    revision = opened.revision
    result.inputs.setdefault(role, {"source": str(item.source), "repo_id": getattr(item, "repo_id", None),
                                    "revision": str(item.revision)})
    result.inputs[role]["found_revision"] = revision
    result.inputs[role]["found_at"] = source
    if revision != item.revision:
        what = "the resolved commit" if is_hub_input(item) else "its files' content hash"
        result.add(LEVEL, f"{role} input", "fail", f"{source}: {what} is {revision}, but the record says "
                   f"{item.revision} (the input changed since, or the record points elsewhere)")
    elif found.moved_from is not None:
        result.add(LEVEL, f"{role} input", "pass", f"{source} holds the recorded content {revision} (found by content "
                   f"hash; the record says {found.moved_from})")
    else:
        result.add(LEVEL, f"{role} input", "pass", f"{source} is at the recorded revision {revision}")
    return opened


def _published(result: VerifyResult, subject: Subject, prefix: str | None) -> Any:
    from perta_hub.io.reader import open_checkpoint

    try:
        return open_checkpoint(subject.folder, prefix=prefix)
    except PertaError as err:
        result.add(LEVEL, "tensors", "fail", f"the published tensors cannot be read ({reason(err)})")
        return None


def _published_low_rank(result: VerifyResult, subject: Subject, base: Any) -> Any:
    from perta_hub.io.artifacts import load_artifact

    try:
        shapes = {} if base is None else {n: base.shape(n) for n in base.names}
        return LowRankTaskVector(load_artifact(subject.folder, "task_vector"), shapes)
    except PertaError as err:
        result.add(LEVEL, "tensors", "fail", f"the published LoRA factors cannot be read ({reason(err)})")
        return None


def _same_names(result: VerifyResult, published: Any, reference: Any, what: str) -> bool:
    missing = [n for n in reference.names if n not in published.entries]
    extra = [n for n in published.names if n not in reference.entries]
    if missing or extra:
        first = f"{missing[0]} is missing" if missing else f"{extra[0]} is not in {what}"
        result.add(LEVEL, "tensors", "fail", f"the published tensors are not those of {what}: {first} "
                   f"({len(missing)} missing, {len(extra)} extra)")
        return False
    return True


def _device_math(device: str) -> Callable[..., Any]:
    """``(name, theta, delta, alpha, weighting, importances, empty) -> Merged``: apply's merge kernel with the
    inputs on ``device`` (the kernel takes its CUDA path there), the result back on the CPU."""
    from perta_hub.merge.kernel import Merged, merge_tensor

    if not device.startswith("cuda"):
        return lambda name, theta, delta, alpha, weighting, importances, empty: merge_tensor(
            name, theta, delta, [alpha], weighting=weighting, importances=importances, empty=empty)

    def on_gpu(name: str, theta: Any, delta: Any, alpha: float, weighting: Any, importances: Any, empty: Any) -> Any:
        to = lambda t: None if t is None else t.to(device, non_blocking=False)  # noqa: E731
        merged = merge_tensor(name, to(theta), to(delta), [alpha], weighting=weighting,
                              importances=None if importances is None else (to(importances[0]), to(importances[1])))
        return Merged([t.cpu() for t in merged.tensors], merged.error)

    return on_gpu


def recompute_model(result: VerifyResult, subject: Subject, *, sample: int | None, seed: int, device: str) -> None:
    """Recompute an unlearned model from its recorded target, task vector and weight map."""
    from perta_hub.io.artifacts import load_artifact
    from perta_hub.io.reader import open_checkpoint
    from perta_hub.runtime.buffers import BufferPool

    record = subject.record
    spec = recorded_spec(record, device)
    where = subject.inputs
    target = _open_input(result, "target", record.target, lambda s: open_checkpoint(s), where)
    tv = _open_input(result, "task_vector", record.task_vector, lambda s: load_artifact(s, "task_vector"), where)
    wm = None
    weights = record.weights if record.weights is not UNSET else None
    if weights is not None:
        wm = _open_input(result, "weights", weights, lambda s: load_artifact(s, "weight_map"), where)
    published = _published(result, subject, "model")
    if target is None or tv is None or published is None or (weights is not None and wm is None):
        if published is not None:
            result.add(LEVEL, "tensors", "unverified", "not recomputed: an input could not be fetched (see above)")
        return
    _side_files(result, subject.folder, target.root)
    tau = open_task_vector(tv, {n: target.shape(n) for n in target.names})  # dense, or formed from LoRA factors
    forget = retain = weighting = None
    if wm is not None:
        forget, retain = wm.group("importance_forget"), wm.group("importance_retain")
        unrestricted = wm.record.unrestricted if wm.record.unrestricted is not UNSET else None
        recorded = weights.unrestricted if weights.unrestricted is not UNSET else None
        if unrestricted != recorded:
            result.add(LEVEL, "weights input", "fail", f"the weight map records unrestricted={unrestricted!r} but the "
                       f"model records {recorded!r}")
        weighting = Weighting(spec.p, spec.lam, spec.eps, unrestricted)
    if not _same_names(result, published, target, "the target"):
        return
    names = pick(published.names, sample, seed)
    if sample is not None:
        result.sample = {"n": sample, "seed": seed, "tensors": names}
    math = _device_math(spec.device)
    pool = BufferPool(1 << 28)
    tally = _Tally()
    (alpha,) = spec.alphas
    for name in names:
        in_map = forget is not None and name in forget.entries
        delta = None if untouched(weighting, in_map) else tau.get(name)  # w = 0: the task vector is not read
        importances = (forget.get(name), retain.get(name)) if in_map else None
        merged = math(name, target.get(name), delta, alpha, weighting, importances, pool.empty)
        (expected,) = merged.tensors
        if merged.error is not None:
            tally.fail(name, f"the recorded inputs do not give a finite model, which apply refuses to write "
                             f"({reason(merged.error)})")
        else:
            tally.compare(name, expected, published.get(name))
        if not spec.device.startswith("cuda"):
            pool.give(expected)
    what = f"theta - {alpha} * (w ⊙ tau)" if weights is not None else f"theta - {alpha} * tau"
    tally.report(result, what, len(published.names))
    for ckpt in (target, tau, forget, retain, published):
        if ckpt is not None:
            ckpt.close()


def _side_files(result: VerifyResult, folder: Path, target_root: Path) -> None:
    """The model's config, tokenizer and other copied files are byte for byte the target's."""
    from perta_hub.verification.integrity import UNRECORDED
    from perta_hub.verification.loadable import WEIGHT_SUFFIXES

    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name not in UNRECORDED and not p.name.endswith(WEIGHT_SUFFIXES))
    differing = [n for n in names if not (target_root / n).is_file()
                 or (target_root / n).read_bytes() != (folder / n).read_bytes()]
    if differing:
        result.add(LEVEL, "side files", "fail", f"{differing[0]} is not the target's copy "
                   f"({len(differing)} of {len(names)} files differ)")
    else:
        result.add(LEVEL, "side files", "pass", f"{len(names)} file(s) (config, tokenizer...) are the target's copies")


def recompute_task_vector(result: VerifyResult, subject: Subject, *, sample: int | None, seed: int) -> None:
    """Recompute a task vector: ``finetuned - base`` (fp32, cast to the stored dtype), or a LoRA delta."""
    import torch

    from perta_hub.io.reader import open_checkpoint

    record = subject.record
    store = getattr(torch, record.dtype)
    base = _open_input(result, "base", record.base, lambda s: open_checkpoint(s), subject.inputs)
    if is_low_rank(record.to_dict()):  # the stored factors, formed as apply forms them
        published = _published_low_rank(result, subject, base)
    else:
        published = _published(result, subject, "task_vector")
    if record.adapter is not UNSET:
        delta = _open_adapter(result, record.adapter, subject.inputs)
        if base is None or delta is None or published is None:
            _not_recomputed(result, published)
            return

        def expected_of(name: str) -> Any:
            if name not in delta.pairs:
                return torch.zeros(base.shape(name), dtype=store)
            return delta.delta(name).to(store)
        what = "the LoRA adapter's scaling * B @ A"
    else:
        if record.finetuned is UNSET or (record.finetuned_kept is False):
            result.add(LEVEL, "finetuned input", "unverified", "the fine-tuned model was not kept (task-vector "
                       "--forget without --finetuned-dir), so the task vector cannot be recomputed")
            _not_recomputed(result, published)
            return
        tuned = _open_input(result, "finetuned", record.finetuned, lambda s: open_checkpoint(s), subject.inputs)
        if base is None or tuned is None or published is None:
            _not_recomputed(result, published)
            return

        def expected_of(name: str) -> Any:
            return tuned.get(name).to(torch.float32).sub_(base.get(name).to(torch.float32)).to(store)
        what = f"(finetuned - base) in float32 cast to {record.dtype}"
    if not _same_names(result, published, base, "the base model"):
        return
    names = pick(published.names, sample, seed)
    if sample is not None:
        result.sample = {"n": sample, "seed": seed, "tensors": names}
    tally = _Tally()
    for name in names:
        tally.compare(name, expected_of(name), published.get(name))
    tally.report(result, what, len(published.names))


def _open_adapter(result: VerifyResult, adapter: dict[str, Any], where: InputSearch) -> Any:
    """The recorded LoRA adapter a task vector was computed from, at its recorded content hash."""
    from types import SimpleNamespace

    from perta_hub.merge.lora_delta import read_adapter

    item = SimpleNamespace(source=str(adapter.get("source")), revision=adapter.get("revision"), repo_id=None,
                           path=adapter.get("path"))
    return _open_input(result, "adapter", item, read_adapter, where)


def _not_recomputed(result: VerifyResult, published: Any) -> None:
    result.add(LEVEL, "tensors", "unverified", "not recomputed: an input could not be fetched (see above)")


def check_weight_map(result: VerifyResult, subject: Subject, *, sample: int | None, seed: int) -> None:
    """Recombine a weight map's importances into ``w`` with its recorded p, lam, eps: finite and in [0, 1]."""
    from perta_hub.io.artifacts import load_artifact
    from perta_hub.merge.math import DEFAULT_EPS, DEFAULT_LAM, DEFAULT_P, combine_weights, importances_valid

    try:
        artifact = load_artifact(subject.folder, "weight_map")
        forget, retain = artifact.group("importance_forget"), artifact.group("importance_retain")
    except PertaError as err:
        result.add(LEVEL, "weights", "fail", f"the importances cannot be read ({reason(err)})")
        return
    record = subject.record
    p, lam, eps = (getattr(record, k) if getattr(record, k) is not UNSET else d
                   for k, d in (("p", DEFAULT_P), ("lam", DEFAULT_LAM), ("eps", DEFAULT_EPS)))
    if set(forget.names) != set(retain.names):
        result.add(LEVEL, "weights", "fail", "importance_forget and importance_retain hold different tensors")
        return
    names = pick(forget.names, sample, seed)
    if sample is not None:
        result.sample = {"n": sample, "seed": seed, "tensors": names}
    for name in names:
        i_f, i_r = forget.get(name), retain.get(name)
        if tuple(i_f.shape) != tuple(i_r.shape) or not importances_valid(i_f, i_r):
            result.add(LEVEL, "weights", "fail", f"{name}: importances of different shapes, negative or not finite")
            return
        w = combine_weights(i_f, i_r, p, lam, eps)
        if w.numel() and not (bool(w.isfinite().all()) and float(w.min()) >= 0 and float(w.max()) <= 1):
            result.add(LEVEL, "weights", "fail", f"{name}: w = I_f^p / (I_f^p + lam I_r^p + eps) leaves [0, 1] "
                       f"(p={p}, lam={lam}, eps={eps})")
            return
    result.add(LEVEL, "weights", "pass", f"{len(names)} tensor(s) of importances recombine into w in [0, 1] with "
               f"p={p}, lam={lam}, eps={eps}")
    result.add(LEVEL, "importances", "unverified", "not recomputed: the stored importances come from gradient "
               "passes over the forget and retain data, which verify does not re-run (verify the unlearned model "
               "made from this map, or re-run compute-weights with the recorded command to compare)")


def recompute(result: VerifyResult, subject: Subject, *, sample: int | None, seed: int, device: str) -> None:
    """The provenance level for the subject's kind (its ``recompute``, :mod:`perta_hub.records`)."""
    kind, how = subject.record.kind, subject.record.recompute
    try:
        if how == "merge":
            recompute_model(result, subject, sample=sample, seed=seed, device=device)
        elif how == "difference":
            recompute_task_vector(result, subject, sample=sample, seed=seed)
        elif how == "importances":
            check_weight_map(result, subject, sample=sample, seed=seed)
        else:
            result.add(LEVEL, "recompute", "unverified", f"this {kind.replace('_', ' ')} comes from training, which "
                       "verify does not re-run, so its weights cannot be recomputed (verify what was made from it, "
                       "such as its task vector)")
    except PertaError as err:
        result.add(LEVEL, "recompute", "unverified", f"stopped: {reason(err)}")
