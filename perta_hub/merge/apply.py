"""The streaming PerTA merger: ``theta = theta_target - alpha * (w ⊙ tau)``, shard by shard.

Nothing is materialised beyond a few tensors: inputs are mapped one tensor at a time (at the
safetensors header's offsets, joined by name whatever their sharding), combined in fp32 on the chosen
device, cast to the target's dtype and appended to their shards in file order. Several alphas are
written in one pass.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from perta_hub.cards.render import model_card
from perta_hub.cards.render import preload as preload_cards
from perta_hub.errors import InputError, MismatchError, NonFiniteError
from perta_hub.io.artifacts import SHARD_METADATA, load_artifact
from perta_hub.io.compat import architecture, check_architecture, check_same_tensors, is_tied
from perta_hub.io.output_folder import claimed_outputs, copy_side_files, current_command, finish_output, make_run_id
from perta_hub.io.reader import open_checkpoint
from perta_hub.io.sharding import TensorSpec, plan_shards
from perta_hub.io.writer import IN_FLIGHT_BYTES, Output, stream_shards
from perta_hub.merge.math import DEFAULT_EPS, DEFAULT_LAM, DEFAULT_P, merge_chunked, merge_whole
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

    def __init__(self, source: str, p: float | None, lam: float | None, eps: float | None) -> None:
        self.artifact = load_artifact(source, "weight_map")
        cfg = self.artifact.config
        self.forget = self.artifact.group("importance_forget")
        self.retain = self.artifact.group("importance_retain")
        self.p = float(cfg.get("p", DEFAULT_P) if p is None else p)
        self.lam = float(cfg.get("lam", DEFAULT_LAM) if lam is None else lam)
        self.eps = float(cfg.get("eps", DEFAULT_EPS) if eps is None else eps)
        self.method = str(cfg.get("method", "weights"))
        check_same_tensors({n: self.forget.shape(n) for n in self.forget.names},
                           {n: self.retain.shape(n) for n in self.retain.names},
                           "importance_forget", "importance_retain")
        for name, value in (("p", self.p), ("lam", self.lam), ("eps", self.eps)):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"--{name} must be a finite number >= 0, got {value}")


def apply(
    model: str | Path,
    task_vector: str | Path,
    *,
    alphas: list[float],
    out_dir: str | Path,
    weights: str | Path | None = None,
    p: float | None = None,
    lam: float | None = None,
    eps: float | None = None,
    device: str = "auto",
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
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
    import torch

    alphas = check_alphas(alphas)
    dev = resolve_device(device)
    target = open_checkpoint(model, allow_pickle=allow_pickle)
    tv_artifact = load_artifact(task_vector, "task_vector")
    tau = tv_artifact.group("task_vector")
    target_arch = architecture(target.config)
    check_architecture(tv_artifact.config.get("base_config") or {}, target_arch, "the task vector", str(model))
    tied = is_tied(target.config)
    target_shapes = {n: target.shape(n) for n in target.names}
    check_same_tensors(target_shapes, {n: tau.shape(n) for n in tau.names}, f"model {model}",
                       f"task vector {task_vector}", tied=tied)
    wmap = None
    if weights is not None:
        wmap = _WeightMap(str(weights), p, lam, eps)
        check_architecture(wmap.artifact.config.get("model_config") or {}, target_arch, "the weight map", str(model))
        check_same_tensors(target_shapes, {n: wmap.forget.shape(n) for n in wmap.forget.names}, f"model {model}",
                           f"weight map {weights}", right_may_be_subset=True, tied=tied)
    elif any(v is not None for v in (p, lam, eps)):
        raise InputError("--p, --lam and --eps only apply with --weights")
    for name in target.names:
        if not target.dtype(name).is_floating_point:
            raise MismatchError(f"tensor {name} of {model} is {target.dtype(name)}, not floating point; "
                                "only float weights can be merged")

    out = Path(out_dir)
    folders = [out] if len(alphas) == 1 else [out / alpha_folder(a) for a in alphas]
    identity = {"target": target.identity, "task_vector": tau.identity,
                "weights": None if wmap is None else [wmap.forget.identity, wmap.retain.identity],
                "p": getattr(wmap, "p", None), "lam": getattr(wmap, "lam", None), "eps": getattr(wmap, "eps", None),
                "max_shard_size": str(max_shard_size)}
    run_ids = [make_run_id({"kind": "model", "alpha": a, **identity}) for a in alphas]
    specs = [TensorSpec(name, target.entries[name].dtype_code, target.shape(name)) for name in target.names]
    shards = plan_shards(specs, max_shard_size, "model")
    transfer = Transfer(dev)
    pool = BufferPool(IN_FLIGHT_BYTES // 4)  # CPU results are written, then reused for the next ones
    inputs = [tau] + ([] if wmap is None else [wmap.forget, wmap.retain])

    def held_bytes(spec: TensorSpec) -> int:
        """Memory one tensor holds in flight: its inputs (mapped) and one result per alpha."""
        read = spec.nbytes + sum(c.entries[spec.name].nbytes for c in inputs if spec.name in c.entries)
        return read + spec.nbytes * len(alphas)

    def load(name: str) -> tuple[list[Any], Any]:
        tensors = [target.get(name), tau.get(name), None, None]
        if wmap is not None and name in wmap.forget.entries:
            tensors[2], tensors[3] = wmap.forget.get(name), wmap.retain.get(name)
        return transfer.to_device(tensors)

    def combine(name: str, loaded: tuple[list[Any], Any]) -> list[Any]:
        (theta, delta, i_f, i_r), event = loaded
        transfer.wait(event)
        combination = None if i_f is None else (i_f, i_r, wmap.p, wmap.lam, wmap.eps)  # type: ignore[union-attr]
        if transfer.cuda:
            results, finite = merge_whole(theta, delta, alphas, combination)
        else:
            results, finite = merge_chunked(theta, delta, alphas, combination, pool.empty)
        if not finite:
            where = "the task vector" if not bool(torch.isfinite(delta).all()) else "the weight map"
            raise NonFiniteError(f"tensor {name} of {where} has NaN or Inf; re-create {where}")
        return transfer.to_host(results)

    local_inputs = [c.root for c in (target, tau) if not c.is_hub]
    if wmap is not None and not wmap.forget.is_hub:
        local_inputs.append(wmap.forget.root)
    with claimed_outputs(folders, run_ids, local_inputs), ThreadPoolExecutor(1) as hasher, one_torch_thread():
        # content hashes of local inputs (for provenance) are computed while the merge runs
        revisions = hasher.submit(lambda: (target.revision, tv_artifact.revision,
                                           None if wmap is None else wmap.artifact.revision))
        hasher.submit(preload_cards)
        stream_shards(shards, [Output(f, SHARD_METADATA) for f in folders], "model", load, combine,
                      desc=f"apply ({dev})", progress=progress, recycle=None if transfer.cuda else pool.give,
                      held_bytes=held_bytes)
        target_rev, tv_rev, wm_rev = revisions.result()
        for folder, alpha, run_id in zip(folders, alphas, run_ids, strict=True):
            copy_side_files(target.root, folder)
            config = {
                "kind": "model",
                "command": current_command(),
                "alpha": alpha,
                "method": "tv" if wmap is None else f"perta-{wmap.method}",
                "target": {**target.provenance(), "revision": target_rev},
                "task_vector": {"source": str(task_vector), "revision": tv_rev,
                                "repo_id": tv_artifact.source if tv_artifact.hub_sha else None},
                "weights": None if wmap is None else {
                    "source": str(weights), "revision": wm_rev, "method": wmap.method,
                    "repo_id": wmap.artifact.source if wmap.artifact.hub_sha else None,
                    "p": wmap.p, "lam": wmap.lam, "eps": wmap.eps},
                "device": dev,
                "run_id": run_id,
            }
            finish_output(folder, config, model_card(config))
    for ckpt in (target, tau) + (() if wmap is None else (wmap.forget, wmap.retain)):
        ckpt.close()
    return folders
