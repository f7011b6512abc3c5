"""The streaming PerTA merger: ``theta = theta_target - alpha * (w ⊙ tau)``, shard by shard.

Nothing is materialised beyond a few tensors: inputs are mapped one tensor at a time (at the
safetensors header's offsets, joined by name whatever their sharding), combined in fp32 on the chosen
device, cast to the target's dtype and appended to their shards in file order. Several alphas are
written in one pass.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from perta_hub.cards.render import model_card
from perta_hub.cards.render import preload as preload_cards
from perta_hub.errors import CheckpointError, InputError, MismatchError, NonFiniteError, PertaError
from perta_hub.io.artifacts import load_artifact
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import copy_side_files, current_command, make_run_id
from perta_hub.io.reader import open_checkpoint, scratch_for
from perta_hub.io.sharding import TensorSpec
from perta_hub.io.writer import IN_FLIGHT_BYTES
from perta_hub.jobs.engine import Job, Stream, run_job
from perta_hub.merge.low_rank import open_task_vector
from perta_hub.merge.math import (
    DEFAULT_EPS,
    DEFAULT_LAM,
    DEFAULT_P,
    all_finite,
    check_combination,
    combine_weights,
    importances_valid,
    merge_chunked,
    merge_whole,
)
from perta_hub.options.apply import APPLY
from perta_hub.records import ModelRecord
from perta_hub.runtime.buffers import BufferPool
from perta_hub.runtime.devices import Transfer, one_torch_thread, resolve_device


def check_alphas(alphas: list[float]) -> list[float]:
    """Alphas must be finite numbers, at least one, no repeats."""
    if not alphas:
        raise InputError("give at least one --alpha")
    values = []
    for a in alphas:
        try:
            value = float(a)
        except (TypeError, ValueError) as err:
            raise InputError(f"--alpha must be a number, got {a!r}") from err
        if not math.isfinite(value):
            raise InputError(f"--alpha must be finite, got {a!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise InputError(f"--alpha values repeat: {values}")
    return values


def alpha_folder(alpha: float) -> str:
    """Subfolder name for one alpha of a sweep (``alpha-0.7``, ``alpha-1.0``)."""
    return f"alpha-{float(alpha)}"


class _WeightMap:
    """The two importance groups of a weight-map artifact and how to combine them."""

    def __init__(self, source: str, p: float | None, lam: float | None, eps: float | None,
                 artifact: Any = None) -> None:
        self.artifact = artifact if artifact is not None else load_artifact(source, "weight_map")
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
        if self.unrestricted not in (None, "w=0", "w=1"):
            raise InputError(f"the weight map {source} records unrestricted={self.unrestricted!r}; expected "
                             "'w=0' or 'w=1' (re-create it with compute-weights)")
        self.rest_unchanged = self.unrestricted == "w=0"
        check_same_tensors({n: self.forget.shape(n) for n in self.forget.names},
                           {n: self.retain.shape(n) for n in self.retain.names},
                           "importance_forget", "importance_retain")


def _non_finite(name: str, theta: Any, delta: Any, combination: tuple | None, alphas: list[float],
                results: list[Any]) -> PertaError:
    """Say which input (or which alpha's result) of tensor ``name`` is not finite (the merge's slow path)."""
    if not all_finite(theta):
        return NonFiniteError(f"tensor {name} of the model has NaN or Inf; it cannot be unlearned as is")
    if not all_finite(delta):
        return NonFiniteError(f"tensor {name} of the task vector has NaN or Inf; re-create the task vector")
    if combination is not None:
        for label, importance in (("importance_forget", combination[0]), ("importance_retain", combination[1])):
            if not all_finite(importance):
                return NonFiniteError(f"tensor {name} of the weight map has NaN or Inf in {label}; "
                                      "re-create the weight map")
            if not importances_valid(importance):
                return CheckpointError(f"tensor {name} of the weight map has a negative importance in {label} "
                                      f"({float(importance.min())}); importances must be >= 0: re-create the weight map")
        if not all_finite(delta.float() * combine_weights(*combination)):
            return NonFiniteError(f"tensor {name}: the weight map's importances give NaN or Inf weights with "
                                  f"p={combination[2]}, lam={combination[3]}, eps={combination[4]}; "
                                  "pass other --p/--lam/--eps")
    for alpha, result in zip(alphas, results, strict=True):
        if not all_finite(result):
            return NonFiniteError(f"tensor {name}: the merge with alpha {alpha} gives NaN or Inf in {result.dtype} "
                                  "(out of range for the model's dtype); use a smaller alpha")
    return NonFiniteError(f"tensor {name}: the merge gives NaN or Inf")


class PerTAMergeJob(Job):
    """``theta - alpha * (w ⊙ tau)`` for every alpha, one output folder per alpha, in one pass over the inputs."""

    def __init__(self, model: str | Path, task_vector: str | Path, *, alphas: list[float], out_dir: str | Path,
                 weights: str | Path | None, p: float | None, lam: float | None, eps: float | None, device: str,
                 max_shard_size: int | str, allow_pickle: bool) -> None:
        self.alphas = alphas = check_alphas(alphas)
        self.device = resolve_device(device)
        self.model, self.task_vector, self.weights = model, task_vector, weights
        self.target = target = self.open_model(model, allow_pickle, out_dir)
        self.tv_artifact = self.open_artifact(task_vector, "task_vector")
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
            self.wmap = wmap = _WeightMap(str(weights), p, lam, eps, self.open_artifact(weights, "weight_map"))
            check_architecture(wmap.artifact.config.get("model_config") or {}, target_arch, "the weight map",
                               str(model))
            check_same_tensors(target_shapes, {n: wmap.forget.shape(n) for n in wmap.forget.names}, f"model {model}",
                               f"weight map {weights}", right_may_be_subset=True, tied=tied)
        elif any(v is not None for v in (p, lam, eps)):
            raise InputError("--p, --lam and --eps only apply with --weights")
        for name in target.names:
            if not target.dtype(name).is_floating_point:
                raise MismatchError(f"tensor {name} of {model} is {target.dtype(name)}, not floating point; "
                                    "only float weights can be merged")
        out = Path(out_dir)
        self.folders = [out] if len(alphas) == 1 else [out / alpha_folder(a) for a in alphas]
        identity = {"target": target.identity, "task_vector": tau.identity,
                    "weights": None if wmap is None else [wmap.forget.identity, wmap.retain.identity],
                    "p": getattr(wmap, "p", None), "lam": getattr(wmap, "lam", None),
                    "eps": getattr(wmap, "eps", None), "max_shard_size": str(max_shard_size)}
        if wmap is not None and wmap.rest_unchanged:
            identity["unrestricted"] = "w=0"
        self.run_ids = [make_run_id({"kind": "model", "alpha": a, **identity}) for a in alphas]
        self.inputs = [tau] + ([] if wmap is None else [wmap.forget, wmap.retain])
        self.transfer = Transfer(self.device)
        self.pool = BufferPool(IN_FLIGHT_BYTES // 4)  # CPU results are written, then reused for the next ones
        self.hasher = ThreadPoolExecutor(1)
        self.revisions: Future | None = None

    def open_model(self, model: str | Path, allow_pickle: bool, out_dir: str | Path) -> Any:
        """The target checkpoint (a subclass may open it from remote headers, see perta_hub.hub.stream)."""
        return open_checkpoint(model, allow_pickle=allow_pickle, scratch=scratch_for(out_dir))

    def open_artifact(self, source: str | Path, kind: str) -> Any:
        """A task-vector or weight-map artifact (a subclass may open it from remote headers)."""
        return load_artifact(source, kind)

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
                       recycle=None if self.transfer.cuda else self.pool.give)]

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

    def load(self, name: str) -> tuple[list[Any], Any]:
        if self.wmap is not None and self.wmap.rest_unchanged and name not in self.wmap.forget.entries:
            return self.transfer.to_device([self.target.get(name), None, None, None])  # w = 0: target as is
        tensors = [self.target.get(name), self.tau.get(name), None, None]
        if self.wmap is not None and name in self.wmap.forget.entries:
            tensors[2], tensors[3] = self.wmap.forget.get(name), self.wmap.retain.get(name)
        return self.transfer.to_device(tensors)

    def combine(self, name: str, loaded: tuple[list[Any], Any]) -> list[Any]:
        (theta, delta, i_f, i_r), event = loaded
        self.transfer.wait(event)
        if delta is None:  # w = 0 (outside a restricted weight map): a bit-identical copy of the target's tensor
            return self.transfer.to_host([theta.clone() if self.transfer.cuda else
                                          self.pool.empty(tuple(theta.shape), theta.dtype).copy_(theta)
                                          for _ in self.alphas])
        wmap = self.wmap
        combination = None if i_f is None or wmap is None else (i_f, i_r, wmap.p, wmap.lam, wmap.eps)
        if self.transfer.cuda:
            results, finite = merge_whole(theta, delta, self.alphas, combination)
        else:
            results, finite = merge_chunked(theta, delta, self.alphas, combination, self.pool.empty)
        if not finite:
            raise _non_finite(name, theta, delta, combination, self.alphas, results)
        return self.transfer.to_host(results)

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
        return record, model_card(record.to_dict())

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
    job = PerTAMergeJob(model, task_vector, alphas=alphas, out_dir=out_dir, weights=weights, p=p, lam=lam, eps=eps,
                        device=device, max_shard_size=max_shard_size, allow_pickle=allow_pickle)
    with one_torch_thread():
        return run_job(job, max_shard_size=max_shard_size, progress=progress)
