"""The streaming PerTA merger: ``theta = theta_target - alpha * (w ⊙ tau)``, shard by shard.

Nothing is materialised beyond a few tensors: inputs are mapped one tensor at a time (at the
safetensors header's offsets, joined by name whatever their sharding), combined in fp32 on the chosen
device, cast to the target's dtype and appended to their shards in file order. Several alphas are
written in one pass.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from perta_hub.cards.render import model_card
from perta_hub.cards.render import preload as preload_cards
from perta_hub.errors import InputError, MismatchError
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import copy_side_files, current_command, make_run_id
from perta_hub.io.reader import scratch_for
from perta_hub.io.sharding import TensorSpec
from perta_hub.io.writer import IN_FLIGHT_BYTES
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.jobs.sink import Sink
from perta_hub.jobs.source import Input, Source
from perta_hub.merge.kernel import UNRESTRICTED, Weighting, merge_tensor, untouched
from perta_hub.merge.low_rank import open_task_vector
from perta_hub.merge.math import DEFAULT_EPS, DEFAULT_LAM, DEFAULT_P, check_combination
from perta_hub.merge.spec import MergeSpec
from perta_hub.options.apply import APPLY
from perta_hub.records import ModelRecord
from perta_hub.runtime.buffers import BufferPool, gc_paused
from perta_hub.runtime.devices import Transfer, one_torch_thread, resolve_device


def alpha_folder(alpha: float) -> str:
    """Subfolder name for one alpha of a sweep (``alpha-0.7``, ``alpha-1.0``)."""
    return f"alpha-{float(alpha)}"


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


class PerTAMergeJob(Job):
    """``theta - alpha * (w ⊙ tau)`` for every alpha of a :class:`~perta_hub.merge.spec.MergeSpec`, one output
    folder per alpha, in one pass over the inputs.

    The inputs are opened through ``source`` (default: local files, a Hub id downloaded whole; ``apply`` with Hub
    inputs opens them from their headers and fetches their files as the merge reads them,
    :class:`perta_hub.hub.source.HubSource`) and every check runs here, before anything is written.
    """

    def __init__(self, spec: MergeSpec, out_dir: str | Path, *, source: Source | None = None) -> None:
        self.spec = spec
        self.alphas = alphas = list(spec.alphas)
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
        out = Path(out_dir)
        self.folders = [out] if len(alphas) == 1 else [out / alpha_folder(a) for a in alphas]
        identity = {"target": target.identity, "task_vector": tau.identity,
                    "weights": None if wmap is None else [wmap.forget.identity, wmap.retain.identity],
                    "p": getattr(wmap, "p", None), "lam": getattr(wmap, "lam", None),
                    "eps": getattr(wmap, "eps", None), "max_shard_size": str(spec.max_shard_size)}
        if wmap is not None and wmap.rest_unchanged:
            identity["unrestricted"] = "w=0"
        self.run_ids = [make_run_id({"kind": "model", "alpha": a, **identity}) for a in alphas]
        self.inputs = [tau] + ([] if wmap is None else [wmap.forget, wmap.retain])
        self.transfer = Transfer(self.device)
        self.pool = BufferPool(IN_FLIGHT_BYTES // 4)  # CPU results are written, then reused for the next ones
        self.hasher = ThreadPoolExecutor(1)
        self.revisions: Future | None = None

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
        """Hash local inputs (for provenance) and import the card renderer while the merge runs."""
        wmap = self.wmap
        self.revisions = self.hasher.submit(lambda: (self.target.revision, self.tv_artifact.revision,
                                                     None if wmap is None else wmap.artifact.revision))
        self.hasher.submit(preload_cards)

    def held_bytes(self, spec: TensorSpec) -> int:
        """Memory one tensor holds in flight: its inputs (mapped) and one result per alpha."""
        read = spec.nbytes + sum(c.entries[spec.name].nbytes for c in self.inputs if spec.name in c.entries)
        return read + spec.nbytes * len(self.alphas)

    def in_map(self, name: str) -> bool:
        """Whether the weight map holds importances for tensor ``name``."""
        return self.wmap is not None and name in self.wmap.forget.entries

    def reads(self, name: str) -> list[Any]:
        """The inputs :meth:`load` reads for tensor ``name``: the target, the task vector (its factor groups for
        a low-rank one) unless the kernel leaves the tensor untouched, and the importances where the map has
        them."""
        wmap = self.wmap
        if untouched(None if wmap is None else wmap.weighting, self.in_map(name)):
            return [self.target]
        parts = getattr(self.tau, "parts", None)  # a low-rank task vector is read from its factor groups
        out = [self.target, *(parts(name) if parts is not None else [self.tau])]
        if wmap is not None and self.in_map(name):
            out += [wmap.forget, wmap.retain]
        return out

    def load(self, name: str) -> tuple[list[Any], Any]:
        """``[theta, delta, I_f, I_r]`` of tensor ``name`` on the device (None where not read) and the copy's event."""
        wmap = self.wmap
        if untouched(None if wmap is None else wmap.weighting, self.in_map(name)):
            return self.transfer.to_device([self.target.get(name), None, None, None])  # w = 0: target as is
        tensors = [self.target.get(name), self.tau.get(name), None, None]
        if wmap is not None and self.in_map(name):
            tensors[2], tensors[3] = wmap.forget.get(name), wmap.retain.get(name)
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
        return self.transfer.to_host(self.merge(name, tensors, self.alphas).checked())

    def finish_folder(self, index: int, folder: Path) -> None:
        copy_side_files(self.target.root, folder)

    def record(self, index: int, folder: Path) -> tuple[ModelRecord, Any]:
        assert self.revisions is not None
        target_rev, tv_rev, wm_rev = self.revisions.result()
        wmap, tv = self.wmap, self.tv_artifact
        record = ModelRecord.build({
            "command": current_command(),
            "alpha": self.alphas[index],
            "method": "tv" if wmap is None else f"perta-{wmap.method}",
            "target": {**self.target.provenance(), "revision": target_rev},
            "task_vector": {"source": str(self.task_vector), "revision": tv_rev,
                            "repo_id": tv.source if tv.hub_sha else None},
            "weights": None if wmap is None else {
                "source": str(self.weights), "revision": wm_rev, "method": wmap.method,
                "repo_id": wmap.artifact.source if wmap.artifact.hub_sha else None,
                "p": wmap.p, "lam": wmap.lam, "eps": wmap.eps,
                **({} if wmap.unrestricted is None else {"unrestricted": wmap.unrestricted})},
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
    alphas: list[float],
    out_dir: str | Path,
    weights: str | Path | None = APPLY.weights,
    p: float | None = APPLY.p,
    lam: float | None = APPLY.lam,
    eps: float | None = APPLY.eps,
    device: str = APPLY.device,
    max_shard_size: int | str = APPLY.max_shard_size,
    allow_pickle: bool = APPLY.allow_pickle,
    progress: bool = True,
) -> list[Path]:
    """Apply a task vector (optionally weighted per parameter) to ``model`` for each alpha.

    Args:
        model: the target to unlearn (folder, ``.safetensors`` or Hub id ``org/name[@revision]``).
        task_vector: a task-vector artifact (folder or Hub id).
        alphas: scaling factors; one alpha writes ``out_dir``, several write ``out_dir/alpha-{a}``.
        out_dir: output folder (a complete transformers checkpoint per alpha).
        weights: a weight-map artifact; without it ``w = 1`` (plain task-vector negation).
        p, lam, eps: override the weight map's recorded combination parameters.
        device: ``auto`` | ``cpu`` | ``cuda`` (math in fp32 there, result in the target's dtype).
        max_shard_size: output shard limit (``5GB``, ``500MB``, bytes).
    Returns:
        the output folders, one per alpha.
    """
    spec = MergeSpec(model, task_vector, weights=weights, alphas=tuple(alphas), p=p, lam=lam, eps=eps, device=device,
                     max_shard_size=max_shard_size, allow_pickle=allow_pickle)
    return apply_spec(spec, out_dir, progress=progress)


def apply_spec(spec: MergeSpec, out_dir: str | Path, *, progress: bool = True) -> list[Path]:
    """:func:`apply` of a :class:`~perta_hub.merge.spec.MergeSpec`: the output folders, one per alpha."""
    with gc_paused():  # torch's import (in the job's set-up) and the run make no garbage cycles worth a collection
        return run_merge(PerTAMergeJob(spec, out_dir), progress=progress)


def run_merge(job: PerTAMergeJob, *, sink: Sink | None = None, progress: bool = True) -> list[Path]:
    """Run an opened merge job into ``sink`` (default: its local output folders), torch on one thread."""
    with one_torch_thread():
        return run_job(job, max_shard_size=job.spec.max_shard_size, sink=sink, progress=progress)
