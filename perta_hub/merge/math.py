"""The tensor math of PerTA, as pure functions: the weight map ``w`` and ``theta - alpha * (w ⊙ tau)``.

Every function takes tensors and numbers and returns tensors; nothing here reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from perta_hub.errors import InputError

DEFAULT_P, DEFAULT_LAM, DEFAULT_EPS = 1.0, 1.0, 1e-12
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max: w is computed in fp32


def check_combination(p: Any, lam: Any, eps: Any, origin: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Check that ``w = I_f^p / (I_f^p + lam * I_r^p + eps)`` is a weight in [0, 1] for any importances >= 0.

    ``p`` must be a finite number > 0 (``p = 0`` makes ``w`` one constant), ``lam`` and ``eps`` finite
    and >= 0 within fp32 range (``lam = inf`` gives ``inf * 0 = NaN``), and ``eps > 0`` (``eps = 0`` gives
    ``0 / 0 = NaN`` wherever both importances are 0, as in every unused embedding row).
    ``origin`` maps a parameter to where its value came from (default ``--p`` etc., the command line).

    Returns:
        (p, lam, eps) as floats.
    Raises:
        InputError: one line naming the parameter, its value and the fix.
    """
    origin = origin or {}
    values = []
    for name, value, need_positive in (("p", p, True), ("lam", lam, False), ("eps", eps, True)):
        where = origin.get(name, f"--{name}")
        try:
            number = float(value)
            if isinstance(value, bool):
                raise TypeError
        except (TypeError, ValueError):
            raise InputError(f"{where} must be a number, got {value!r}") from None
        ok = math.isfinite(number) and abs(number) <= FLOAT32_MAX and (number > 0 if need_positive else number >= 0)
        if not ok:
            bound = "> 0" if need_positive else ">= 0"
            why = {"p": "", "lam": "", "eps": " (eps = 0 makes w = 0/0 = NaN wherever both importances are 0)"}[name]
            raise InputError(f"{where} must be a finite number {bound}, got {value!r}{why}; "
                             f"pass --{name} with a value in range")
        values.append(number)
    return values[0], values[1], values[2]


def combine_weights(i_forget: Any, i_retain: Any, p: float, lam: float, eps: float) -> Any:
    """``w = I_f^p / (I_f^p + lam * I_r^p + eps)`` in fp32, elementwise (same shape as the inputs)."""
    import torch

    f = i_forget.to(torch.float32)
    r = i_retain.to(torch.float32)
    if p != 1.0:
        f = f.pow(p)
        r = r.pow(p)
    return f / (f + lam * r + eps)


def _combine_weights_into(f: Any, r: Any, i_forget: Any, i_retain: Any, p: float, lam: float, eps: float) -> Any:
    """:func:`combine_weights` into the fp32 buffers ``f`` (the result) and ``r`` (scratch), both of the inputs'
    size: the same operations in the same order, so the same bits, with no temporary allocated (about twice
    as fast on a chunk). ``lam = 1`` skips the multiplication by 1, which changes no value."""
    import torch

    f.copy_(i_forget)
    r.copy_(i_retain)
    if p != 1.0:
        f.pow_(p)
        r.pow_(p)
    if lam != 1.0:
        r.mul_(lam)
    r.add_(f)  # f + lam * r
    r.add_(eps)
    return torch.div(f, r, out=f)


# bits of a float viewed as a signed integer: finite and >= 0 <=> 0 <= bits < first non-finite pattern
_BITS = {"torch.bfloat16": ("int16", 0x7F80), "torch.float16": ("int16", 0x7C00), "torch.float32": ("int32", 0x7F800000)}


def importances_valid(*importances: Any) -> bool:
    """Whether every value is finite and >= 0 (NaN fails).

    One integer min/max pass per tensor over its bits (about 2.5x faster than a float min/max on bf16);
    only a tensor that fails it (a NaN, an Inf, a negative value, or -0.0) is judged again as floats.
    """
    import torch

    for t in importances:
        if not t.numel():
            continue
        bits = _BITS.get(str(t.dtype))
        if bits is not None:
            low, high = torch.aminmax(t.view(getattr(torch, bits[0])))
            if low.item() >= 0 and high.item() < bits[1]:
                continue
        low, high = torch.aminmax(t)
        if not (low.item() >= 0 and high.item() < math.inf):
            return False
    return True


def all_finite(t: Any) -> bool:
    """Whether ``t`` has no NaN or Inf (a sum first: a finite sum is the common, cheap answer; fp16 is summed
    in fp32, where a sum of finite weights cannot overflow)."""
    import torch

    total = t.sum(dtype=torch.float32) if t.dtype == torch.float16 else t.sum()
    return bool(torch.isfinite(total) or torch.isfinite(t).all())


def _weighted_delta(delta: Any, combination: tuple | None) -> Any:
    import torch

    delta = delta.to(torch.float32)
    if combination is None:
        return delta
    i_f, i_r, p, lam, eps = combination
    return delta * combine_weights(i_f, i_r, p, lam, eps)


def merge_whole(theta: Any, delta: Any, alphas: list[float], combination: tuple | None
                ) -> tuple[list[Any], bool, tuple[float, float]]:
    """``theta - alpha * (w ⊙ delta)`` for each alpha in one shot (GPU path), in fp32, cast to theta's dtype.

    Returns:
        (one tensor per alpha, whether everything is sound: the importances finite and >= 0, ``w ⊙ delta``
        finite, and every result finite after the cast (on False the caller finds out which),
        ``(||w ⊙ delta||^2, ||delta||^2)`` as Python floats, summed in fp32 over the whole tensor).
    """
    import torch

    ok = combination is None or importances_valid(combination[0], combination[1])
    tau = delta.to(torch.float32)
    tau_sq = torch.dot(tau.reshape(-1), tau.reshape(-1))
    delta = _weighted_delta(tau, combination)
    weighted_sq = tau_sq if combination is None else torch.dot(delta.reshape(-1), delta.reshape(-1))
    ok = ok and bool(torch.isfinite(delta).all())
    base = theta.to(torch.float32)
    results = [torch.sub(base, delta, alpha=a).to(theta.dtype) for a in alphas]
    return results, ok and all(bool(torch.isfinite(r).all()) for r in results), (float(weighted_sq), float(tau_sq))


CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32 per operand: the chunk stays in the CPU caches


def _weighted_chunks(delta: Any, combination: tuple | None, norms: Any) -> Iterator[tuple[int, int, Any, bool]]:
    """``w ⊙ delta`` chunk by chunk in fp32 (CPU): ``(start, stop, chunk, importances valid)`` per chunk.

    The chunk is a reused buffer (or, for an fp32 delta without weights, a view of it): use it before the next
    one. Fills ``norms`` (fp32, shape ``(2, number of chunks)``): row 0 the chunk's ``||w ⊙ delta||^2``, row 1 its
    ``||delta||^2``, one dot product each while the chunk is in cache (without weights, once the caller has used
    the chunk: an fp32 view is then read from memory once, not twice); complete once the generator is exhausted.
    The one order of these operations for :func:`merge_chunked` and :func:`step_sums`, so both give the same bits.
    """
    import torch

    deltas = delta.reshape(-1)
    parts = None if combination is None else (combination[0].reshape(-1), combination[1].reshape(-1))
    size = min(CHUNK_ELEMENTS, deltas.numel())
    delta32 = torch.empty(size, dtype=torch.float32)
    if parts is not None:
        w_forget, w_retain = torch.empty(size, dtype=torch.float32), torch.empty(size, dtype=torch.float32)
    in_place = deltas.dtype == torch.float32 and parts is None  # fp32 delta, nothing to weight: read as is
    for k, start in enumerate(range(0, deltas.numel(), CHUNK_ELEMENTS)):
        stop = min(start + CHUNK_ELEMENTS, deltas.numel())
        if in_place:
            d = deltas[start:stop]
        else:
            d = delta32[: stop - start]
            d.copy_(deltas[start:stop])  # to fp32 without allocating
        if parts is None:
            yield start, stop, d, True
            torch.dot(d, d, out=norms[1, k])  # after the caller used it: in cache now (an fp32 view is read once)
            continue
        torch.dot(d, d, out=norms[1, k])
        i_f, i_r = parts[0][start:stop], parts[1][start:stop]
        valid = importances_valid(i_f, i_r)
        d.mul_(_combine_weights_into(w_forget[: stop - start], w_retain[: stop - start], i_f, i_r, *combination[2:]))
        torch.dot(d, d, out=norms[0, k])
        yield start, stop, d, valid
    if parts is None:  # w = 1: ||w * delta|| = ||delta||
        norms[0].copy_(norms[1])


def _chunk_norms(numel: int) -> Any:
    """The ``norms`` buffer of :func:`_weighted_chunks` for a tensor of ``numel`` elements."""
    import torch

    return torch.zeros((2, -(-numel // CHUNK_ELEMENTS)), dtype=torch.float32)


def _summed(norms: Any) -> tuple[float, float]:
    """``(||w ⊙ delta||^2, ||delta||^2)`` of a filled ``norms`` buffer: its chunk sums added in float64."""
    import torch

    weighted_sq, tau_sq = norms.sum(dim=1, dtype=torch.float64).tolist()
    return weighted_sq, tau_sq


def step_sums(delta: Any, combination: tuple | None) -> tuple[float, float]:
    """``(||w ⊙ delta||^2, ||delta||^2)`` of one tensor (CPU), exactly as :func:`merge_chunked` sums them while
    merging (``combination`` None: ``w = 1``): what ``apply --step`` measures before the merge, and the
    ``||delta||^2`` of a tensor the merge leaves unchanged (``w = 0``)."""
    norms = _chunk_norms(delta.numel())
    for _ in _weighted_chunks(delta, combination, norms):
        pass
    return _summed(norms)


def merge_chunked(theta: Any, delta: Any, alphas: list[float], combination: tuple | None,
                  empty: Callable[[tuple[int, ...], Any], Any] | None = None
                  ) -> tuple[list[Any], bool, tuple[float, float]]:
    """The same as :func:`merge_whole`, chunk by chunk on CPU, so every operand stays in cache and no
    full-size fp32 temporary is allocated (about 3x faster than whole-tensor ops here). The soundness
    checks run on each chunk while it is in cache: the importances (finite, >= 0) before they are used, and
    each result right after its cast, by one sum into a per-tensor row (a NaN or Inf anywhere makes it
    non-finite; only a tensor whose sums are not all finite is looked at again, element by element). The
    squared norms are two dot products per chunk on the chunk in cache (:func:`_weighted_chunks`).

    ``empty(shape, dtype)`` allocates the results (e.g. ``BufferPool.empty``; default ``torch.empty``).
    """
    import torch

    if empty is None:
        empty = lambda shape, dtype: torch.empty(shape, dtype=dtype)  # noqa: E731

    flat = theta.reshape(-1)
    outs = [empty(tuple(flat.shape), flat.dtype) for _ in alphas]
    size = min(CHUNK_ELEMENTS, flat.numel())
    # a bf16/fp16 theta's chunk is cast to fp32 once, into a reused buffer: an add of it and the fp32 delta would
    # cast it into a fresh temporary inside every call. The cast is exact and the add the same fp32 add on the
    # same values, so the same bits; with one alpha it subtracts in place. Other dtypes are added as they are
    # (an fp64 theta is added in fp64, as before)
    cast = flat.dtype in (torch.bfloat16, torch.float16)
    base32 = torch.empty(size, dtype=torch.float32) if cast else None
    work = base32 if base32 is not None and len(alphas) == 1 else torch.empty(size, dtype=torch.float32)
    # one sum per chunk and alpha, in the result's dtype (fp16 in fp32, where a sum of finite values cannot
    # overflow); a sum that overflows anyway only sends the tensor to the element-wise look below
    sum_dtype = torch.float32 if flat.dtype == torch.float16 else flat.dtype
    sums = torch.empty((len(alphas), -(-flat.numel() // CHUNK_ELEMENTS)), dtype=sum_dtype)  # every entry set
    norms = _chunk_norms(flat.numel())
    importances_ok = True
    for k, (start, stop, d, valid) in enumerate(_weighted_chunks(delta, combination, norms)):
        importances_ok = importances_ok and valid
        t, w = flat[start:stop], work[: stop - start]
        if base32 is not None:
            t = base32[: stop - start].copy_(t)
        for row, (alpha, out) in enumerate(zip(alphas, outs, strict=True)):
            torch.add(t, d, alpha=-alpha, out=w)  # in place (w is t) with one alpha and a bf16/fp16 theta
            chunk = out[start:stop]
            chunk.copy_(w)
            # after the cast: an fp16/bf16 overflow is inf here; a NaN/Inf in d makes every alpha's result
            # NaN/Inf too (even alpha = 0: 0 * inf = NaN), so this one check covers w ⊙ delta as well
            torch.sum(chunk, 0, dtype=sum_dtype, out=sums[row, k])
    finite = importances_ok and (bool(torch.isfinite(sums).all())
                                 or all(bool(torch.isfinite(out).all()) for out in outs))
    return [o.reshape(theta.shape) for o in outs], finite, _summed(norms)
