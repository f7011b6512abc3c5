"""The tensor math of PerTA, as pure functions: the weight map ``w`` and ``theta - alpha * (w ⊙ tau)``.

Every function takes tensors and numbers and returns tensors; nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_P, DEFAULT_LAM, DEFAULT_EPS = 1.0, 1.0, 1e-12

def combine_weights(i_forget: Any, i_retain: Any, p: float, lam: float, eps: float) -> Any:
    """``w = I_f^p / (I_f^p + lam * I_r^p + eps)`` in fp32, elementwise (same shape as the inputs)."""
    import torch

    f = i_forget.to(torch.float32)
    r = i_retain.to(torch.float32)
    if p != 1.0:
        f = f.pow(p)
        r = r.pow(p)
    return f / (f + lam * r + eps)


def _weighted_delta(delta: Any, combination: tuple | None) -> Any:
    import torch

    delta = delta.to(torch.float32)
    if combination is None:
        return delta
    i_f, i_r, p, lam, eps = combination
    return delta * combine_weights(i_f, i_r, p, lam, eps)


def merge_whole(theta: Any, delta: Any, alphas: list[float], combination: tuple | None) -> tuple[list[Any], bool]:
    """``theta - alpha * (w ⊙ delta)`` for each alpha in one shot (GPU path), in fp32, cast to theta's dtype.

    Returns:
        (one tensor per alpha, whether ``w ⊙ delta`` is finite everywhere).
    """
    import torch

    delta = _weighted_delta(delta, combination)
    finite = bool(torch.isfinite(delta).all())
    base = theta.to(torch.float32)
    return [torch.sub(base, delta, alpha=a).to(theta.dtype) for a in alphas], finite


CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32 per operand: the chunk stays in the CPU caches


def merge_chunked(theta: Any, delta: Any, alphas: list[float], combination: tuple | None,
                  empty: Callable[[tuple[int, ...], Any], Any] | None = None) -> tuple[list[Any], bool]:
    """The same as :func:`merge_whole`, chunk by chunk on CPU, so every operand stays in cache and no
    full-size fp32 temporary is allocated (about 3x faster than whole-tensor ops here).

    ``empty(shape, dtype)`` allocates the results (e.g. ``BufferPool.empty``; default ``torch.empty``).
    """
    import torch

    if empty is None:
        empty = lambda shape, dtype: torch.empty(shape, dtype=dtype)  # noqa: E731

    flat = theta.reshape(-1)
    deltas = delta.reshape(-1)
    parts = None if combination is None else (combination[0].reshape(-1), combination[1].reshape(-1))
    outs = [empty(tuple(flat.shape), flat.dtype) for _ in alphas]
    size = min(CHUNK_ELEMENTS, flat.numel())
    work, delta32 = torch.empty(size, dtype=torch.float32), torch.empty(size, dtype=torch.float32)
    in_place = deltas.dtype == torch.float32 and parts is None  # fp32 delta, nothing to weight: read as is
    finite = True
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        stop = min(start + CHUNK_ELEMENTS, flat.numel())
        if in_place:
            d = deltas[start:stop]
        else:
            d = delta32[: stop - start]
            d.copy_(deltas[start:stop])  # to fp32 without allocating
        if parts is not None:
            d.mul_(combine_weights(parts[0][start:stop], parts[1][start:stop], *combination[2:]))
        w = work[: stop - start]
        for alpha, out in zip(alphas, outs, strict=True):
            torch.add(flat[start:stop], d, alpha=-alpha, out=w)  # theta promoted to fp32 inside the kernel
            out[start:stop].copy_(w)
        finite = finite and bool(torch.isfinite(d.sum()) or torch.isfinite(d).all())  # d is in cache now
    return [o.reshape(theta.shape) for o in outs], finite


