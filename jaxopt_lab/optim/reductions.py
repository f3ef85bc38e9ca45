"""torch's CPU reductions (``linalg.vector_norm``, ``sum``/``mean``) in torch's summation order.

XLA sums in an order of its own (it splits long reductions into trees), so a float32 sum here
would differ from torch's in the last bits. These functions reproduce ATen's kernels
(``ReduceOpsKernel.cpp``, ``SumKernel.cpp``; measured on torch 2.13 CPU, x86-64, where the
reductions run their AVX2 build -- 8 float32 or 4 float64 lanes -- also on AVX-512 hosts):

* ``vector_norm`` (``ord=2``): over a single element (every reduced dim of size 1), ``|x|``.
  Over a contiguous last dim of a float32/float64/bfloat16 tensor (its *last-dim* path): lane
  ``j`` of an 8-lane float32 (4-lane float64) accumulator sums the squares of elements ``j``,
  ``j + W``, ... of the whole blocks of ``W`` (8, 4; 16 for bfloat16, whose blocks are two
  float32 halves), each square rounded and then added; the lanes are added in order, then the
  remaining elements (float32: by fours, rounded squares added in order -- the compiler's
  vectorization of that loop --, the last ``rest % 4`` one fused multiply-add each; float64:
  all by FMA; the FMA emulated exactly, see :func:`fma`); ``sqrt``, rounded. Otherwise
  (reduced dim not contiguous, or float16): a sequential sum ``acc + x*x`` (no FMA) in
  float32 (float64 for float64), ``sqrt``, rounded.
* ``sum`` (and ``mean = sum / n``, bfloat16/float16 summed in float32): ATen's cascade sum,
  four partial sums (``ilp``) over rows of 4 elements (or of 4 vectors of 8 lanes when the
  dim is contiguous and at least 8 long), each a multi-level sum that adds blocks of
  ``2**max(4, ceil(log2 n) / 4)`` rows one level up.

Sequential sums are ``lax.scan`` loops (unrolled when short): exact order, but a full-tensor
norm of ``n`` elements is ``n / 8`` dependent steps, as in torch's own single-threaded loop.

Beyond what is reproduced: a reduction that torch splits across threads (one output from at
least 32,768 elements, in the generic and sum paths) adds the threads' partial sums in an
order that depends on the thread count.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim import double as _double

LANES = {jnp.dtype(jnp.float32): 8, jnp.dtype(jnp.float64): 4}  # AVX2 Vectorized<T>::size()
_UNROLL = 32


def _acc_dtype(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def seq_sum(terms: jax.Array, zero: jax.Array) -> jax.Array:
    """``((0 + t[0]) + t[1]) + ...`` over axis 0, in that order."""
    acc = jnp.zeros(terms.shape[1:], terms.dtype) - zero  # a +0.0 XLA cannot fold away
    if terms.shape[0] <= _UNROLL:
        for t in terms:
            acc = acc + t
        return acc
    return jax.lax.scan(lambda a, t: (a + t, None), acc, terms, unroll=8)[0]


def fma(a: jax.Array, b: jax.Array, c: jax.Array, zero: jax.Array) -> jax.Array:
    """``fma(a, b, c)``: ``a * b + c`` rounded once, without relying on XLA to contract it.

    The product is split exactly (``two_prod``) and the three-term sum correctly rounded by
    Boldo and Melquiond's algorithm (2008): ``th + tl = c + p`` exactly, ``v`` the sum of the two
    small terms rounded to odd, ``RN(th + v)``. float32 (float64: see ``_two_prod``).
    """
    p, e = _two_prod(a, b, zero)
    th, tl = _double._two_sum(c, p, zero)
    v, err = _double._two_sum(tl, e, zero)
    # round to odd: an inexact even result moves one ulp toward the exact sum
    int_type = jnp.int64 if v.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(v, int_type)
    inexact_even = (err != 0) & ((bits & 1) == 0) & (v != 0)
    step = jnp.where((err > 0) == (v > 0), 1, -1).astype(int_type)
    v = jax.lax.bitcast_convert_type(jnp.where(inexact_even, bits + step, bits), v.dtype)
    exact = (th + v) + zero
    naive = a * b + c  # where the error terms are not finite (inf or NaN operands): its value
    return jnp.where(jnp.isfinite(naive), exact, naive)


def _two_prod(a: jax.Array, b: jax.Array, zero: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``p + e == a * b``: exactly for float32 (``_double``'s); for float64 a mask split leaves
    27 bits in the low parts, so ``lo * lo`` may round: within 2**-105 of the product."""
    if a.dtype == jnp.float32:
        return _double._two_prod(a, b, zero)

    def split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint64)
        hi = jax.lax.bitcast_convert_type(bits & jnp.uint64(0xFFFFFFFFF8000000), jnp.float64)
        return hi, x - hi

    p = a * b + zero
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _squares(x: jax.Array, zero: jax.Array) -> jax.Array:
    """Each square rounded on its own (``+ zero`` keeps it out of a later fused add)."""
    xf = x.astype(zero.dtype)
    return xf * xf + zero


def _lastdim_norm(rows: jax.Array, zero: jax.Array) -> jax.Array:
    """torch's vectorized last-dim 2-norm of each row of a ``(B, n)`` array, ``n >= 2``."""
    acc_dtype = _acc_dtype(rows.dtype)
    lanes = LANES[acc_dtype]
    block = 2 * lanes if rows.dtype == jnp.bfloat16 else lanes
    b, n = rows.shape
    whole = n - n % block
    acc = jnp.zeros((b, lanes), acc_dtype) - zero
    if whole:
        sq = _squares(rows[:, :whole], zero).reshape(b, whole // lanes, lanes)
        acc = seq_sum(jnp.moveaxis(sq, 1, 0), zero)  # bfloat16: each block's two halves in order
    total = acc[:, 0]
    for j in range(1, lanes):
        total = total + acc[:, j]
    # The remaining elements: ATen's loop ``buffer[0] += x * x`` as compiled: by fours, each
    # square rounded and added in order, then one fused multiply-add each.
    tail = rows[:, whole:].astype(acc_dtype)
    by_fours = (n - whole) // 4 * 4 if acc_dtype == jnp.float32 else 0
    squares = _squares(tail[:, :by_fours], zero)
    for k in range(by_fours):
        total = total + squares[:, k]
    for k in range(by_fours, n - whole):
        total = fma(tail[:, k], tail[:, k], total, zero)
    return jnp.sqrt(total).astype(rows.dtype)


def _generic_norm(rows: jax.Array, zero: jax.Array) -> jax.Array:
    """torch's generic 2-norm reduction of each row of a ``(B, n)`` array: ``acc + x*x``."""
    squares = jnp.moveaxis(_squares(rows, zero), 1, 0)
    return jnp.sqrt(seq_sum(squares, zero)).astype(rows.dtype)


def vector_norm(x: jax.Array, dim: int | None, zero: jax.Array) -> jax.Array:
    """``torch.linalg.vector_norm(x, 2, dim, keepdim=True)`` (``dim=None``: all, a 0-d result)
    for ``dim`` in ``None, -1, -2``, with torch's CPU rounding (see the module docstring).

    ``zero``: an opaque ``-0.0`` of the accumulation dtype (float64 for float64 ``x``, else
    float32), e.g. ``ctx.zero``; it keeps XLA from folding or fusing the rounded steps.
    """
    if dim is None:
        rows, out_shape, contiguous = x.reshape(1, -1), (), True
    else:
        axis = x.ndim + dim
        moved = jnp.moveaxis(x, axis, -1)
        rows = moved.reshape(math.prod(moved.shape[:-1]), x.shape[axis])
        out_shape = (*x.shape[:axis], 1, *x.shape[axis + 1 :])
        contiguous = math.prod(x.shape[axis + 1 :]) == 1
    n = rows.shape[1]
    if n == 1:  # torch: a reduction over one element is abs()
        return jnp.abs(x).reshape(out_shape)
    lastdim = contiguous and x.dtype in (jnp.float32, jnp.float64, jnp.bfloat16)
    out = _lastdim_norm(rows, zero) if lastdim else _generic_norm(rows, zero)
    return out.reshape(out_shape)


def _multi_row_sum(rows: jax.Array, zero: jax.Array) -> jax.Array:
    """ATen's ``multi_row_sum`` over axis 0 of ``rows`` (any trailing shape)."""
    size = rows.shape[0]
    levels = 4
    power = max(4, (math.ceil(math.log2(size)) if size > 1 else 0) // levels)
    step = 1 << power
    full = size // step
    # level 0: each whole block of `step` rows, summed from zero; the rest after the loop
    blocks = rows[: full * step].reshape(full, step, *rows.shape[1:])
    blocks = seq_sum(jnp.moveaxis(blocks, 1, 0), zero)
    tail = seq_sum(rows[full * step :], zero)
    # levels 1, 2: groups of `step` lower sums flushed one level up; level 3 keeps everything
    acc = []
    lower = blocks
    for _ in range(levels - 2):
        groups = lower.shape[0] // step
        acc.append(
            seq_sum(lower[groups * step :], zero)
        )  # what is left in this level's accumulator
        grouped = lower[: groups * step].reshape(groups, step, *lower.shape[1:])
        lower = seq_sum(jnp.moveaxis(grouped, 1, 0), zero)
    acc.append(seq_sum(lower, zero))
    out = tail
    for a in acc:
        out = out + a
    return out


def _row_sum(x: jax.Array, zero: jax.Array) -> jax.Array:
    """ATen's ``row_sum`` (four partial sums) over axis 0 of ``x`` (any trailing shape)."""
    n = x.shape[0]
    rows = n // 4
    partial = _multi_row_sum(x[: rows * 4].reshape(rows, 4, *x.shape[1:]), zero)
    first = partial[0]
    for i in range(rows * 4, n):
        first = first + x[i]
    for k in range(1, 4):
        first = first + partial[k]
    return first


def sum_last(rows: jax.Array, zero: jax.Array) -> jax.Array:
    """``rows.sum(-1)`` of a contiguous ``(B, n)`` float32/float64 array, in ATen's order."""
    lanes = LANES[jnp.dtype(rows.dtype)]
    b, n = rows.shape
    if n < lanes:  # scalar_inner_sum
        return (jnp.zeros((b,), rows.dtype) - zero) + _row_sum(rows.T, zero)
    whole = n - n % lanes  # vectorized_inner_sum: row_sum over vectors, then the scalar rest
    vectors = jnp.moveaxis(rows[:, :whole].reshape(b, whole // lanes, lanes), 1, 0)
    lane_sums = _row_sum(vectors, zero)  # (b, lanes)
    final = seq_sum(rows[:, whole:].T, zero)
    for j in range(lanes):
        final = final + lane_sums[:, j]
    return (jnp.zeros((b,), rows.dtype) - zero) + final  # the output starts at 0, += final


def mean(x: jax.Array, dim: int, zero: jax.Array) -> jax.Array:
    """``x.mean(dim, keepdim=True)`` over a contiguous ``dim`` (the trailing dims have size 1):
    torch's CPU ``sum(dim) / size`` (bfloat16/float16 summed and divided in float32)."""
    axis = x.ndim + dim
    if math.prod(x.shape[axis + 1 :]) != 1:
        raise ValueError("mean: only a contiguous reduced dim is supported")
    acc = zero.dtype
    moved = jnp.moveaxis(x, axis, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), x.shape[axis]).astype(acc)
    size = x.shape[axis]
    # a true division, as torch's div_(dim_prod): XLA would multiply by 1/size, so the divisor
    # is selected per element through a predicate the compiler cannot evaluate (as K.div)
    total = sum_last(rows, zero)
    out = total / jnp.where(zero > 0, total, np.asarray(size, acc))
    return out.astype(x.dtype).reshape((*x.shape[:axis], 1, *x.shape[axis + 1 :]))
