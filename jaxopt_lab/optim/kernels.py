"""torch's CPU tensor kernels, reproduced rounding for rounding.

Each function is one in-place torch op of ``torch.optim``'s single-tensor code path. Arrays come in
and go out in their storage dtype; the arithmetic runs in torch's *math type* for that dtype
(``at::opmath_type``: float32 for bfloat16/float16, else the dtype itself) and rounds back once
per kernel, as ATen's vectorized CPU kernels do. Scalars are already rounded to the math type.

How ATen rounds (``aten/src/ATen/native/cpu``; measured on torch 2.13 CPU, see tests):

=====================================  ========================================================
torch op                               result
=====================================  ========================================================
``a.add(b, alpha=s)``                  ``fma(s, b, a)``       (``vec::fmadd``)
``a.mul(s)``                           ``a * s``
``a.lerp(e, w)``, ``|w| < 0.5``        ``fma(w, e - a, a)``
``a.lerp(e, w)``, ``|w| >= 0.5``       ``fma(w - 1, e - a, e)``
``a.addcmul(b, c, value=v)``           ``fma(v * b, c, a)``
``a.addcdiv(b, c, value=v)``           ``a + (v * b) / c``
``a.div(s)``, ``a.sqrt()``, ``a+s``    one IEEE operation each
``a * b``, ``a / b``, ``a +- b``       one IEEE operation each (two tensors)
``a.reciprocal()``                     ``1 / a``
``a.rsqrt()``                          ``1 / sqrt(a)``, two roundings (see :func:`rsqrt`)
``torch.sign``, ``a.clamp_(min=f)``    exact (NaN-, ``-0.0``-handling: see each function)
=====================================  ========================================================

On bfloat16/float16 tensors every op computes in float32 and rounds back once; the scalar stays
float32 except ``alpha`` of ``add`` and ``s`` of ``a + s``, which ATen first rounds to the
tensor's dtype (measured: ``tests/test_parity.py::test_low_precision_bitwise``).

XLA:CPU contracts ``x + y * z`` into an FMA on its own, so the FMA rows are written as plain
``a + s * b``. The opposite -- a product torch rounds *before* adding (``buf.mul_(m).add_(g)``) --
must not be contracted; :func:`mul` adds a runtime ``-0.0`` (``zero``, opaque to the compiler)
which leaves every value unchanged, ``-0.0`` included, but turns the product into an addition
that cannot absorb a later one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def math_dtype(dtype: Any) -> Any:
    """torch's ``opmath_type``: reduced-precision floats compute in float32."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def opaque_zero(count: jax.Array, dtype: Any) -> jax.Array:
    """A ``-0.0`` the compiler cannot prove is zero (it depends on the runtime step count).

    ``x + opaque_zero`` equals ``x`` for every ``x`` (``-0.0`` included); it only stops XLA
    and LLVM from rewriting the expression around it. It is a bitcast of the int32 word
    ``(count >> 31) | 0x80000000`` (the sign bit alone for any ``count >= 0``): a select between
    constants would not do, LLVM folds ``x + select(c, 1.0, -0.0)`` into ``select(c, x + 1, x)``
    and then contracts ``x`` into the next addition.
    """
    bits = (jnp.asarray(count, jnp.int32) >> 31) | jnp.int32(-(2**31))
    return jax.lax.bitcast_convert_type(bits, jnp.float32).astype(dtype)


def _up(*xs: jax.Array) -> list[jax.Array]:
    return [x.astype(math_dtype(x.dtype)) for x in xs]


def _storage_scalar(s: jax.Array, dtype: Any) -> jax.Array:
    """A scalar ATen casts to the tensor's own dtype before its float32 math (``add``'s ``alpha``
    and ``a + s`` on bfloat16/float16; every other op here keeps the float32 scalar)."""
    if jnp.dtype(dtype).itemsize < 4:
        return jnp.asarray(s).astype(dtype).astype(math_dtype(dtype))
    return s


def add(a: jax.Array, b: jax.Array, alpha: jax.Array) -> jax.Array:
    """``a.add(b, alpha=alpha)``: one fused multiply-add."""
    ua, ub = _up(a, b)
    return (ua + _storage_scalar(alpha, a.dtype) * ub).astype(a.dtype)


def mul(a: jax.Array, s: jax.Array, zero: jax.Array) -> jax.Array:
    """``a.mul(s)``, rounded on its own (never fused into a following add)."""
    (ua,) = _up(a)
    return (ua * s + zero).astype(a.dtype)


def lerp(a: jax.Array, end: jax.Array, weight: jax.Array | float) -> jax.Array:
    """``a.lerp(end, weight)`` with ATen's two branches (exact at both ends)."""
    ua, ue = _up(a, end)
    w = jnp.asarray(weight, ua.dtype)
    diff = ue - ua
    small = ua + w * diff
    large = ue + (w - 1) * diff
    if not isinstance(w, jax.core.Tracer):  # a constant weight: pick the branch at trace time
        out = small if abs(float(w)) < 0.5 else large
    else:
        out = jnp.where(jnp.abs(w) < 0.5, small, large)
    return out.astype(a.dtype)


def addcmul(a: jax.Array, b: jax.Array, c: jax.Array, value: jax.Array) -> jax.Array:
    """``a.addcmul(b, c, value=value)``: ``fma(value * b, c, a)``."""
    ua, ub, uc = _up(a, b, c)
    return (ua + (value * ub) * uc).astype(a.dtype)


def addcdiv(a: jax.Array, b: jax.Array, c: jax.Array, value: jax.Array) -> jax.Array:
    """``a.addcdiv(b, c, value=value)``: ``a + (value * b) / c``."""
    ua, ub, uc = _up(a, b, c)
    return (ua + (value * ub) / uc).astype(a.dtype)


def sqrt(a: jax.Array) -> jax.Array:
    """``a.sqrt()``, correctly rounded (see the README on torch's MKL sqrt)."""
    (ua,) = _up(a)
    return jnp.sqrt(ua).astype(a.dtype)


def div(a: jax.Array, s: jax.Array, zero: jax.Array) -> jax.Array:
    """``a / s`` for a scalar ``s`` (or an array broadcast against ``a``) in the math dtype: a
    true division, as torch's CPU ``div`` does.

    XLA rewrites a division by a broadcast scalar into a multiplication by its reciprocal
    (``a * (1/s)``, up to 1 ULP off). Selecting the divisor per element with a predicate the
    compiler cannot evaluate (``zero > 0``, false at run time) keeps a true division; the select
    costs nothing in a memory-bound loop.
    """
    (ua,) = _up(a)
    return (ua / jnp.where(zero > 0, ua, s)).astype(a.dtype)


def add_scalar(a: jax.Array, s: jax.Array) -> jax.Array:
    """``a + s`` for a scalar ``s``."""
    (ua,) = _up(a)
    return (ua + _storage_scalar(s, a.dtype)).astype(a.dtype)


def maximum(a: jax.Array, b: jax.Array) -> jax.Array:
    """``torch.maximum`` (NaN-propagating)."""
    return jnp.maximum(a, b)


def clamp_min(x: jax.Array, floor: jax.Array) -> jax.Array:
    """``x.clamp_(min=floor)``: ``std::max(x, floor)``, so NaN and ``-0.0`` (vs 0) are kept."""
    return jnp.where(x < floor, floor, x)


def sign(x: jax.Array) -> jax.Array:
    """``torch.sign``: ``(x > 0) - (x < 0)``, so ``sign(NaN) = 0`` and ``sign(-0.0) = +0.0``.

    (``jnp.sign`` keeps NaN and ``-0.0``.)
    """
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


# --- Element-wise ops of two tensors (or a tensor and a math-dtype scalar), one rounding each.


def plus(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a + b``, both operands in the math type (a scalar ``b`` is not first rounded to the
    storage dtype, unlike :func:`add_scalar`): SparseAdam's arithmetic on gathered values."""
    ua, ub = _up(a, b)
    return (ua + ub).astype(a.dtype)


def minus(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a - b``, both operands in the math type."""
    ua, ub = _up(a, b)
    return (ua - ub).astype(a.dtype)


def multiply(a: jax.Array, b: jax.Array, zero: jax.Array) -> jax.Array:
    """``a * b`` of two tensors (broadcasting), rounded on its own (the runtime ``-0.0``: see
    :func:`mul`)."""
    md = math_dtype(a.dtype)
    return (a.astype(md) * b.astype(md) + zero).astype(a.dtype)


def divide(a: jax.Array, b: jax.Array, zero: jax.Array) -> jax.Array:
    """``a / b`` of two tensors: one IEEE division in the math type.

    The runtime ``-0.0`` added to ``b`` (value unchanged) stops XLA's algebraic simplifier from
    turning ``a / sqrt(x)`` into ``a * rsqrt(x)``, which is not correctly rounded.
    """
    md = math_dtype(a.dtype)
    return (a.astype(md) / (b.astype(md) + zero)).astype(a.dtype)


def reciprocal(a: jax.Array) -> jax.Array:
    """``a.reciprocal()``: ``1 / a``, one IEEE division in the math type."""
    (ua,) = _up(a)
    return (1 / ua).astype(a.dtype)


VECTOR_BLOCK = 32
"""Elements per iteration of ATen's vectorized CPU loop for bfloat16/float16 (2 x
``Vectorized<BFloat16/Half>::size()`` on AVX2); the ``n % VECTOR_BLOCK`` last ones take its
scalar tail."""


def rsqrt(x: jax.Array, zero: jax.Array) -> jax.Array:
    """``x.rsqrt()``: ``1 / sqrt(x)`` rounded twice (XLA could otherwise use ``rsqrt``).

    ``zero`` is the opaque ``-0.0`` of the math dtype. bfloat16/float16: ATen's vectorized loop
    computes it in float32 and rounds once; its scalar tail (the last ``n % VECTOR_BLOCK``
    elements) rounds ``sqrt`` to the dtype before dividing.
    """
    ux = x.astype(zero.dtype)
    one = jnp.ones_like(ux)
    root = jnp.sqrt(ux)
    if x.dtype == zero.dtype:
        return one / jnp.where(zero > 0, one, root)
    vector = one / jnp.where(zero > 0, one, root)
    tail = one / jnp.where(zero > 0, one, root.astype(x.dtype).astype(zero.dtype))
    n = x.size
    in_vector_loop = jnp.arange(n).reshape(x.shape) < n - n % VECTOR_BLOCK
    return jnp.where(in_vector_loop, vector, tail).astype(x.dtype)
