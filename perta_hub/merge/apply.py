"""The streaming PerTA merger: ``theta = theta_target - alpha * (w ⊙ tau)``, shard by shard.

Nothing is materialised beyond a few tensors: inputs are mapped one tensor at a time (at the
safetensors header's offsets, joined by name whatever their sharding), combined in fp32 on the chosen
device, cast to the target's dtype and appended to their shards in file order. Several alphas are
written in one pass. The step norm ``||alpha w ⊙ tau|| / ||tau||`` is summed while merging and recorded
(``step_norm``); ``--step`` sets alpha from one pass over the task vector and the weight map before the merge
(:meth:`PerTAMergeJob.prepare`). A weight map whose every weight is zero is refused before anything is written
(:meth:`PerTAMergeJob.check_weights`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from perta_hub.cards.render import model_card
from perta_hub.cards.render import preload as preload_cards
from perta_hub.errors import InputError, MismatchError
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import copy_side_files, current_command, make_run_id
from perta_hub.io.reader import recorded_path, scratch_for
from perta_hub.io.sharding import TensorSpec
from perta_hub.io.writer import IN_FLIGHT_BYTES
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.jobs.sink import Sink
from perta_hub.jobs.source import Input, Source
from perta_hub.merge.kernel import (
    UNRESTRICTED,
    WARN_ZERO_SHARE,
    ZERO_WEIGHT,
    StepNorm,
    Weighting,
    merge_tensor,
    untouched,
    zero_weight_share,
)
from perta_hub.merge.low_rank import open_task_vector
from perta_hub.merge.math import DEFAULT_EPS, DEFAULT_LAM, DEFAULT_P, check_combination, step_sums
from perta_hub.merge.spec import MergeSpec
from perta_hub.options.apply import APPLY
from perta_hub.records import ModelRecord
from perta_hub.runtime.buffers import BufferPool, gc_paused
from perta_hub.runtime.devices import Transfer, one_torch_thread, resolve_device

log = logging.getLogger("perta_hub.merge")


class _WeightMap:
    """The two importance groups of a weight-map artifact and how to combine them."""

    def __init__(self, source: str, p: float | None, lam: float | None, eps: float | None, artifact: Any) -> None:
        self.artifact = artifact
        cfg = self.artifact.config
        self.forget = self.artifact.group("importance_forget")
        self.retain = self.artifact.group("importance_retain")
        given = {"p": p, "lam": lam, "eps": eps}
        defaults = {"p": DEFAULT_P, "lam": DEFAULT_LAM, "eps": DEFAULT_EPS}
        values = {k: cfg.get(k, defaults[k]) if v is None else v for k, v in given.items()}
        origin = {k: f"{k} = {cfg[k]!r} in {source}/perta_config.json" for k, v in given.items() if v is None and k in cfg}
        self.p, self.lam, self.eps = check_combination(values["p"], values["lam"], values["eps"], origin)
        self.method = str(cfg.get("method", "weights"))
        # tensors without importances (a map restricted with --params): "w=0" leaves them unchanged,
        # "w=1" applies plain task arithmetic; maps made before the key existed were made for w = 1
        self.unrestricted = cfg.get("unrestricted")
        if self.unrestricted is not None and self.unrestricted not in UNRESTRICTED:
            raise InputError(f"the weight map {source} records unrestricted={self.unrestricted!r}; expected "
                             "'w=0' or 'w=1' (re-create it with compute-weights)")
        #: what the merge kernel needs: p, lam, eps and the rule for the tensors the map leaves out
        self.weighting = Weighting(self.p, self.lam, self.eps, self.unrestricted)
        self.rest_unchanged = self.weighting.rest_unchanged
        check_same_tensors({n: self.forget.shape(n) for n in self.forget.names},
                           {n: self.retain.shape(n) for n in self.retain.names},
                           "importance_forget", "importance_retain")
        self.source = source

    def check(self) -> None:
        """Refuse the map when every weight it gives is below :data:`~perta_hub.merge.kernel.ZERO_WEIGHT` (the
        merge would write the target back unchanged); warn in one line when at least
        :data:`~perta_hub.merge.kernel.WARN_ZERO_SHARE` of them are."""
        share = zero_weight_share(self.forget.names, self.forget.get, self.retain.get, self.weighting)
        combination = f"p={self.p:g}, lam={self.lam:g}, eps={self.eps:g}"
        if share == 1.0:
            count = sum(math.prod(self.forget.shape(n)) for n in self.forget.names)
            raise InputError(f"the weight map {self.source} gives w < {ZERO_WEIGHT:g} on all {count:,} parameters it "
                             f"covers (100% zero weights at {combination}): the merge would write the target back "
                             "unchanged; re-create the weight map or pass other --p/--lam/--eps")
        if share >= WARN_ZERO_SHARE:
            log.warning("warning: about %.0f%% of the weights of %s are below %g at %s (sampled): those parameters "
                        "stay as the target's", 100 * share, self.source, ZERO_WEIGHT, combination)


class PerTAMergeJob(Job):
    """``theta - alpha * (w ⊙ tau)`` for every alpha of a :class:`~perta_hub.merge.spec.MergeSpec`, one output
    folder per alpha (or per ``--step``), in one pass over the inputs.

    The inputs are opened through ``source`` (default: local files, a Hub id downloaded whole; ``apply`` with Hub
    inputs opens them from their headers and fetches their files as the merge reads them,
    :class:`perta_hub.hub.source.HubSource`) and every check of the inputs runs here, once; :meth:`prepare` then
    checks the weight map's zero weights and sets the alphas of ``--step``, before anything is written.
    """

    def __init__(self, spec: MergeSpec, out_dir: str | Path, *, source: Source | None = None) -> None:
        self.requested = spec  # as asked for: with --step, its alphas are set by prepare()
        self.out_dir = out_dir
        self.model, self.task_vector, self.weights = model, task_vector, weights = (spec.model, spec.task_vector,
                                                                                  spec.weights)
        self.source = source = source or Source()
        if weights is None and any(v is not None for v in (spec.p, spec.lam, spec.eps)):
            raise InputError("--p, --lam and --eps only apply with --weights")
        opening = source.open([  # a Hub source starts reading headers now, while torch is imported below
            Input("target", model, allow_pickle=spec.allow_pickle, scratch=scratch_for(out_dir)),
            Input("task_vector", task_vector, "task_vector"),
            *([] if weights is None else [Input("weight_map", weights, "weight_map")])])
        self.device = resolve_device(spec.device)
        self.target = target = opening[0]()
        self.tv_artifact = opening[1]()
        target_arch = architecture(target.config)
        check_architecture(self.tv_artifact.config.get("base_config") or {}, target_arch, "the task vector",
                           str(model))
        tied = is_tied(target.config)
        target_shapes = {n: target.shape(n) for n in target.names}
        self.tau = tau = open_task_vector(self.tv_artifact, target_shapes)  # dense, or LoRA factors (formed here)
        check_same_tensors(target_shapes, {n: tau.shape(n) for n in tau.names}, f"model {model}",
                           f"task vector {task_vector}", tied=tied)
        self.wmap = wmap = None
        if weights is not None:
            self.wmap = wmap = _WeightMap(str(weights), spec.p, spec.lam, spec.eps, opening[2]())
            check_architecture(wmap.artifact.config.get("model_config") or {}, target_arch, "the weight map",
                               str(model))
            check_same_tensors(target_shapes, {n: wmap.forget.shape(n) for n in wmap.forget.names}, f"model {model}",
                               f"weight map {weights}", right_may_be_subset=True, tied=tied)
        for name in target.names:
            if not target.dtype(name).is_floating_point:
                raise MismatchError(f"tensor {name} of {model} is {target.dtype(name)}, not floating point; "
                                    "only float weights can be merged")
        self.identity = {"target": target.identity, "task_vector": tau.identity,
                         "weights": None if wmap is None else [wmap.forget.identity, wmap.retain.identity],
                         "p": getattr(wmap, "p", None), "lam": getattr(wmap, "lam", None),
                         "eps": getattr(wmap, "eps", None), "max_shard_size": str(spec.max_shard_size)}
        if wmap is not None and wmap.rest_unchanged:
            self.identity["unrestricted"] = "w=0"
        self.resolved: MergeSpec | None = None  # the spec with --step's alphas, once prepare() set them
        self._set_spec(spec.planned())  # until then, --step's steps stand in for the alphas (plan, disk check)
        self.inputs = [tau] + ([] if wmap is None else [wmap.forget, wmap.retain])
        self.transfer = Transfer(self.device)
        self.pool = BufferPool(IN_FLIGHT_BYTES // 4)  # CPU results are written, then reused for the next ones
        self.hasher = ThreadPoolExecutor(1)
        self.revisions: Future | None = None

    def _set_spec(self, spec: MergeSpec) -> None:
        """The alphas this job writes, their folders and run ids."""
        self.spec = spec
        self.alphas = list(spec.alphas)
        self.folders = spec.folders(self.out_dir)
        self.run_ids = [make_run_id({"kind": "model", "alpha": a, **self.identity}) for a in self.alphas]

    def prepare(self, *, whole_inputs: bool = True) -> None:
        """Before anything is written: with ``--step``, set the alphas from the steps (one pass over the task vector
        and the map: a Hub source downloads them whole first, unless ``whole_inputs`` is False, as for a streaming
        run, which then needs them local); and refuse a weight map whose every weight is zero
        (:meth:`check_weights`)."""
        steps = self.requested.steps and not self.requested.alphas
        if steps and whole_inputs:
            self.source.fetch_whole(self.norm_inputs())
        self.check_weights()
        if steps:
            self.resolved = self.requested.at_steps(self.step_ratio())
            self._set_spec(self.resolved)

    def outputs(self) -> list[tuple[Path, str]]:
        return list(zip(self.folders, self.run_ids, strict=True))

    def local_inputs(self) -> list[Path]:
        roots = [c.root for c in (self.target, self.tau) if not c.is_hub]
        if self.wmap is not None and not self.wmap.forget.is_hub:
            roots.append(self.wmap.forget.root)
        return roots

    def streams(self) -> list[Stream]:
        target = self.target
        specs = [TensorSpec(name, target.entries[name].dtype_code, target.shape(name)) for name in target.names]
        return [Stream("model", specs, self.load, self.combine, f"apply ({self.device})", held_bytes=self.held_bytes,
                       recycle=None if self.transfer.cuda else self.pool.give, reads=self.reads)]

    def started(self) -> None:
        """Hash local inputs (for provenance) and import the card renderer while the merge runs; the step norm
        starts from zero."""
        if self.requested.steps and not self.requested.alphas and self.resolved is None:
            raise InputError("--step: call prepare() before running the merge (it sets alpha from the steps)")
        wmap = self.wmap
        self.revisions = self.hasher.submit(lambda: (self.target.revision, self.tv_artifact.revision,
                                                     None if wmap is None else wmap.artifact.revision))
        self.hasher.submit(preload_cards)
        self.step_norm = StepNorm()

    def check_weights(self) -> None:
        """Refuse a weight map whose every weight is zero, before anything is written (warn in one line when
        most are); a Hub map whose files arrive during the merge (a Hub source) is judged by the merge's step norm
        instead, before the output is finished or anything committed (:meth:`record`)."""
        if self.wmap is not None and self._on_disk([self.wmap.forget, self.wmap.retain]):
            self.wmap.check()

    def norm_inputs(self) -> list[Any]:
        """The checkpoints the step norm reads (the task vector's, or its factor groups, and the map's)."""
        found: dict[int, Any] = {}
        for name in self.target.names:
            for ckpt in self.reads(name)[1:]:
                found.setdefault(id(ckpt), ckpt)
        return list(found.values())

    def _on_disk(self, checkpoints: list[Any]) -> bool:
        return all(self.source.on_disk(ckpt) for ckpt in checkpoints)

    def step_ratio(self) -> float:
        """``||w ⊙ tau|| / ||tau||`` over every tensor of the task vector (``w = 1`` without a map; outside a
        restricted map, its rest rule): one pass over the task vector and the weight map, on the CPU, summed as
        the merge sums them. What ``--step`` divides by.

        Raises:
            InputError: the task vector or the map is not on disk (Hub files fetched as the merge reads them,
                ``--stream``).
        """
        if not self._on_disk(self.norm_inputs()):
            raise InputError("--step with --stream needs the task vector and the weight map on local disk (alpha is "
                             "set from one pass over them before the merge): download them first, or give --alpha")
        step = StepNorm()
        self.add_norms(step, self.target.names)
        return step.ratio

    def add_norms(self, step: StepNorm, names: list[str]) -> None:
        """Add the squared norms of tensors ``names`` to ``step``, read from the task vector and the map (CPU)."""
        wmap = self.wmap
        for name in names:
            tau = self.tau.get(name)
            if wmap is not None and self.in_map(name):
                combination = (wmap.forget.get(name), wmap.retain.get(name), wmap.p, wmap.lam, wmap.eps)
                step.add(name, step_sums(tau, combination))
            elif untouched(None if wmap is None else wmap.weighting, False):
                step.add(name, (0.0, step_sums(tau, None)[1]))
            else:
                step.add(name, step_sums(tau, None))

    def held_bytes(self, spec: TensorSpec) -> int:
        """Memory one tensor holds in flight: its inputs (mapped) and one result per output."""
        read = spec.nbytes + sum(c.entries[spec.name].nbytes for c in self.inputs if spec.name in c.entries)
        return read + spec.nbytes * self.spec.outputs

    def in_map(self, name: str) -> bool:
        """Whether the weight map holds importances for tensor ``name``."""
        return self.wmap is not None and name in self.wmap.forget.entries

    def reads(self, name: str) -> list[Any]:
        """The inputs :meth:`load` reads for tensor ``name``: the target, the task vector (its factor groups for
        a low-rank one; for a tensor the kernel leaves untouched, only for its norm) and the importances where
        the map has them."""
        parts = getattr(self.tau, "parts", None)  # a low-rank task vector is read from its factor groups
        out = [self.target, *(parts(name) if parts is not None else [self.tau])]
        if self.in_map(name):
            out += [self.wmap.forget, self.wmap.retain]  # type: ignore[union-attr]
        return out

    def load(self, name: str) -> tuple[list[Any], Any]:
        """``[theta, delta, I_f, I_r]`` of tensor ``name`` on the device (None where not read) and the copy's event."""
        tensors = [self.target.get(name), self.tau.get(name), None, None]
        if self.in_map(name):
            tensors[2], tensors[3] = self.wmap.forget.get(name), self.wmap.retain.get(name)  # type: ignore[union-attr]
        return self.transfer.to_device(tensors)

    def merge(self, name: str, tensors: list[Any], alphas: list[float]) -> Any:
        """The kernel on one tensor's loaded inputs (``[theta, delta, I_f, I_r]``, on the job's device): a
        :class:`~perta_hub.merge.kernel.Merged` (CPU results from the job's buffer pool)."""
        theta, delta, i_f, i_r = tensors
        return merge_tensor(name, theta, delta, alphas, weighting=None if self.wmap is None else self.wmap.weighting,
                            importances=None if i_f is None else (i_f, i_r), empty=self.pool.empty)

    def combine(self, name: str, loaded: tuple[list[Any], Any]) -> list[Any]:
        tensors, event = loaded
        self.transfer.wait(event)
        merged = self.merge(name, tensors, self.alphas)
        results = merged.checked()
        self.step_norm.add(name, merged.norms)
        return self.transfer.to_host(results)

    def finish_folder(self, index: int, folder: Path) -> None:
        copy_side_files(self.target.root, folder)

    def finished_step_norm(self) -> StepNorm | None:
        """The merge's step norm over every tensor: the tensors of shards an earlier run wrote (resume) are added
        from the inputs (task vector and map only); None when they are not on disk (a resumed ``--stream``)."""
        missing = [n for n in self.target.names if n not in self.step_norm.names]
        if missing:
            if not self._on_disk(self.norm_inputs()):
                log.warning("warning: the step norm is not recorded: %d tensors were merged by an earlier run whose "
                            "inputs are no longer here", len(missing))
                return None
            self.add_norms(self.step_norm, missing)
        wmap = self.wmap
        if wmap is not None and not self._on_disk([wmap.forget, wmap.retain]) and self.step_norm.ratio < ZERO_WEIGHT:
            raise InputError(f"the weight map {wmap.source} moves the model by ||w*tau|| / ||tau|| = "
                             f"{self.step_norm.ratio:.3g} (its weights are below {ZERO_WEIGHT:g}): the merge would "
                             "write the target back unchanged; nothing is committed")
        return self.step_norm

    def record(self, index: int, folder: Path) -> tuple[ModelRecord, Any]:
        return self._record(index, self.finished_step_norm())

    def preview(self, index: int, folder: Path) -> tuple[ModelRecord, Any]:
        """The record and card before the merge (no step norm yet)."""
        return self._record(index, None)

    def _record(self, index: int, step: StepNorm | None) -> tuple[ModelRecord, Any]:
        assert self.revisions is not None
        target_rev, tv_rev, wm_rev = self.revisions.result()
        wmap, tv = self.wmap, self.tv_artifact
        alpha = self.alphas[index]
        record = ModelRecord.build({
            "command": current_command(),
            "alpha": alpha,
            **({"step": self.spec.steps[index]} if self.spec.steps else {}),
            **({} if step is None else {"step_norm": step.step(alpha)}),
            "method": "tv" if wmap is None else f"perta-{wmap.method}",
            "target": {**self.target.provenance(), "revision": target_rev},
            "task_vector": {"source": str(self.task_vector), "revision": tv_rev,
                            "repo_id": tv.source if tv.hub_sha else None,
                            **recorded_path(self.task_vector, bool(tv.hub_sha))},
            "weights": None if wmap is None else {
                "source": str(self.weights), "revision": wm_rev, "method": wmap.method,
                "repo_id": wmap.artifact.source if wmap.artifact.hub_sha else None,
                "p": wmap.p, "lam": wmap.lam, "eps": wmap.eps,
                **({} if wmap.unrestricted is None else {"unrestricted": wmap.unrestricted}),
                **recorded_path(self.weights, bool(wmap.artifact.hub_sha))},
            "device": self.device,
            "run_id": self.run_ids[index],
        })
        return record, model_card(record.to_dict(), target_card=self.target.root / "README.md")

    def close(self) -> None:
        self.hasher.shutdown(wait=True)
        for ckpt in [self.target, *self.inputs]:
            ckpt.close()


def apply(
    model: str | Path,
    task_vector: str | Path,
    *,
    alphas: Sequence[float] = APPLY.alphas,
    out_dir: str | Path,
    steps: Sequence[float] = APPLY.steps,
    weights: str | Path | None = APPLY.weights,
    p: float | None = APPLY.p,
    lam: float | None = APPLY.lam,
    eps: float | None = APPLY.eps,
    device: str = APPLY.device,
    max_shard_size: int | str = APPLY.max_shard_size,
    allow_pickle: bool = APPLY.allow_pickle,
    allow_negative_alpha: bool = APPLY.allow_negative_alpha,
    progress: bool = True,
) -> list[Path]:
    """Apply a task vector (optionally weighted per parameter) to ``model`` for each alpha (or step norm).

    Args:
        model: the target to unlearn (folder, ``.safetensors`` or Hub id ``org/name[@revision]``).
        task_vector: a task-vector artifact (folder or Hub id).
        alphas: scaling factors (> 0 unless ``allow_negative_alpha``); one alpha writes ``out_dir``, several write
            ``out_dir/alpha-{a}``.
        out_dir: output folder (a complete transformers checkpoint per alpha).
        steps: instead of ``alphas``: step norms ``||alpha w ⊙ tau|| / ||tau||`` (> 0, dimensionless); each alpha is
            set to ``step / (||w ⊙ tau|| / ||tau||)`` from one pass over the task vector and the map before merging;
            several write ``out_dir/step-{s}``.
        weights: a weight-map artifact; without it ``w = 1`` (plain task-vector negation).
        p, lam, eps: override the weight map's recorded combination parameters.
        device: ``auto`` | ``cpu`` | ``cuda`` (math in fp32 there, result in the target's dtype).
        max_shard_size: output shard limit (``5GB``, ``500MB``, bytes).
        allow_negative_alpha: accept alpha <= 0 (it adds the forget data's knowledge back, or, at 0, changes nothing).
    Returns:
        the output folders, one per alpha; each records ``alpha``, ``step_norm`` (and ``step`` when asked).
    Raises:
        InputError: alpha <= 0 without ``allow_negative_alpha``, both or neither of ``alphas`` and ``steps``, a
            weight map whose every weight is zero (one line; nothing written).
    """
    from perta_hub.merge.spec import requested

    spec = MergeSpec(model, task_vector, weights=weights, p=p, lam=lam, eps=eps, device=device,
                     max_shard_size=max_shard_size, allow_pickle=allow_pickle,
                     allow_negative_alpha=allow_negative_alpha, **requested(alphas, steps))
    return apply_spec(spec, out_dir, progress=progress)


def open_merge(spec: MergeSpec, out_dir: str | Path, *, source: Source | None = None) -> PerTAMergeJob:
    """The merge job of ``spec`` (its inputs opened through ``source`` and checked), prepared
    (:meth:`PerTAMergeJob.prepare`: the weight map's zero weights, ``--step``'s alphas); closed if that fails."""
    job = PerTAMergeJob(spec, out_dir, source=source)
    try:
        job.prepare()
    except BaseException:
        job.close()
        raise
    return job


def apply_spec(spec: MergeSpec, out_dir: str | Path, *, progress: bool = True) -> list[Path]:
    """:func:`apply` of a :class:`~perta_hub.merge.spec.MergeSpec`: the output folders, one per alpha."""
    with gc_paused():  # torch's import (in the job's set-up) and the run make no garbage cycles worth a collection
        return run_merge(open_merge(spec, out_dir), progress=progress)


def run_merge(job: PerTAMergeJob, *, sink: Sink | None = None, progress: bool = True) -> list[Path]:
    """Run a prepared merge job into ``sink`` (default: its local output folders), torch on one thread."""
    with one_torch_thread():
        return run_job(job, max_shard_size=job.spec.max_shard_size, sink=sink, progress=progress)


def merge_summary(folder: str | Path) -> str:
    """What an ``apply`` output's record says of its step, for the result line: ``alpha 2, step norm
    ||alpha w*tau|| / ||tau|| = 0.84`` (with ``(--step 0.84)`` when it was asked for)."""
    from perta_hub.records import read_record

    record = read_record(folder)
    alpha, step, norm = record.get("alpha"), record.get("step"), record.get("step_norm")
    line = f"alpha {alpha:g}"
    if norm is not None:
        line += f", step norm ||alpha w*tau|| / ||tau|| = {norm:.4g}"
    if step is not None:
        line += f" (--step {step:g})"
    return line
