"""Hyper-parameter scalars with Python-double semantics, without ``jax_enable_x64``.

torch computes the per-step scalars of its optimizers (``1 - beta1**step``,
``lr / bias_correction1``, ``bias_correction2**0.5``, ``lr / (1 + (step - 1) * lr_decay)``,
...) in Python ``float`` (IEEE double) and rounds each to the tensor's math type (float32 for
float32/bfloat16/float16 tensors) exactly once, when it is handed to a kernel. To reproduce
that bit for bit inside ``jax.jit`` on float32 -- where float64 may be disabled -- we evaluate
those formulas in *double-single* arithmetic: a value is an unevaluated sum ``hi + lo`` of
two float32 numbers (~48 significant bits), built from error-free transformations:

* ``two_sum(a, b)`` (Knuth): ``s + e == a + b`` exactly;
* ``two_prod(a, b)``: ``p + e == a * b`` exactly, using a 12/12-bit split of each factor done with
  integer masking, so every partial product is exact in float32. That keeps the transformation
  correct whether or not XLA contracts a multiply and an add into an FMA (it may on CPU).

Two XLA behaviours would silently erase the error terms: its algebraic simplifier reassociates
float expressions that involve constants (``(1 + b) - 1`` became ``b``), and fusion duplicates a
rounded product ``p = a * b`` into a consumer where LLVM contracts ``x - p`` into an FMA that skips
the rounding of ``p``. (``lax.optimization_barrier`` does not survive fusion.) Every constant and
every rounded product or sum here therefore gets a runtime ``-0.0`` added (see
:class:`DoubleSingle`): values are unchanged, the rewrites no longer apply.

Rounding ``hi + lo`` to float32 gives ``hi`` (the pair is kept normalized), which equals the
float32 rounding of the exact double result except when that result lies within ~2**-44 relative
of a float32 rounding boundary. ``tests/test_double.py`` measures this against Python floats.

For float64 params the same formulas run on float64 arrays (needs x64, as float64 params do).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._kernels import opaque_zero

_F32 = jnp.float32


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a == hi + lo`` with at most 12 significant bits in each (exact, by bit masking)."""
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), _F32)
    return hi, a - hi


def _two_sum(a: jax.Array, b: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = (a + b) + z
    bb = (s - a) + z
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: jax.Array, b: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Requires ``|a| >= |b|`` (or a == 0)."""
    s = (a + b) + z
    return s, b - (s - a)


def _two_prod(a: jax.Array, b: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    p = a * b + z  # an FMA with a -0.0 addend: exactly RN(a*b), and never contracted again
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _zero(anchor: jax.Array) -> jax.Array:
    return opaque_zero(anchor, _F32)


class DoubleSingle(NamedTuple):
    """A float32 pair ``hi + lo`` standing in for a Python double inside a trace.

    ``z`` is a runtime ``-0.0`` added to constants and to the rounded products and sums of the
    error-free transformations. It changes no value, but XLA can no longer treat those values as
    constants to reassociate, nor re-fuse a product into an FMA that skips its rounding.
    """

    hi: jax.Array
    lo: jax.Array
    z: jax.Array

    def lift(self, x: Any) -> DoubleSingle:
        """``x`` as a DoubleSingle sharing this one's ``z`` (~48 bits of a Python double)."""
        if isinstance(x, DoubleSingle):
            return x
        if isinstance(x, (int, float, np.floating, np.integer)):
            hi = np.float32(x)
            lo = np.float32(float(x) - float(hi))
            return DoubleSingle(jnp.asarray(hi) + self.z, jnp.asarray(lo) + self.z, self.z)
        x = jnp.asarray(x)
        if x.dtype == jnp.float64:
            hi = x.astype(_F32)
            return DoubleSingle(hi, (x - hi.astype(jnp.float64)).astype(_F32), self.z)
        return DoubleSingle(x.astype(_F32), jnp.zeros((), _F32) + self.z, self.z)

    def __add__(self, other: Any) -> DoubleSingle:
        o = self.lift(other)
        s, e = _two_sum(self.hi, o.hi, self.z)
        return DoubleSingle(*_fast_two_sum(s, e + (self.lo + o.lo), self.z), self.z)

    __radd__ = __add__

    def __neg__(self) -> DoubleSingle:
        return DoubleSingle(-self.hi, -self.lo, self.z)

    def __sub__(self, other: Any) -> DoubleSingle:
        return self + (-self.lift(other))

    def __rsub__(self, other: Any) -> DoubleSingle:
        return self.lift(other) + (-self)

    def __mul__(self, other: Any) -> DoubleSingle:
        o = self.lift(other)
        p, e = _two_prod(self.hi, o.hi, self.z)
        cross = (self.hi * o.lo + self.z) + (self.lo * o.hi + self.z)
        return DoubleSingle(*_fast_two_sum(p, e + cross, self.z), self.z)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> DoubleSingle:
        o = self.lift(other)
        q1 = self.hi / o.hi + self.z
        r = self - o * q1
        q2 = r.hi / o.hi + self.z
        r = r - o * q2
        q3 = r.hi / o.hi + self.z
        return DoubleSingle(*_fast_two_sum(q1, q2, self.z), self.z) + q3

    def __rtruediv__(self, other: Any) -> DoubleSingle:
        return self.lift(other) / self

    def sqrt(self) -> DoubleSingle:
        s = jnp.sqrt(self.hi) + self.z
        r = (self - DoubleSingle(*_two_prod(s, s, self.z), self.z)).hi
        safe = jnp.where(s > 0, s, jnp.ones_like(s))
        corr = jnp.where(s > 0, r / (2 * safe) + self.z, jnp.zeros_like(s))
        return DoubleSingle(*_fast_two_sum(s, corr, self.z), self.z)

    def round_to(self, dtype: Any) -> jax.Array:
        # The pair is normalized (hi == fl(hi + lo)), so hi is the nearest float32.
        return self.hi.astype(dtype)


Real = DoubleSingle | jax.Array | float


def lift(x: Any, wide: bool, anchor: jax.Array) -> Real:
    """A hyper-parameter in the scalar arithmetic for float32 (or, if ``wide``, float64).

    ``anchor`` is any runtime int32 scalar (the step count); see :class:`DoubleSingle`.
    """
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)  # Python doubles stay Python doubles: exactly torch's arithmetic.
    if wide:
        return jnp.asarray(x).astype(jnp.float64)
    zero = _zero(anchor)
    return DoubleSingle(zero, zero, zero).lift(x)


def sqrt(x: Real) -> Real:
    if isinstance(x, DoubleSingle):
        return x.sqrt()
    if isinstance(x, float):
        return x**0.5
    return jnp.sqrt(x)


def ipow(base: Real, n: jax.Array, wide: bool) -> Real:
    """``base ** n`` for a traced non-negative int32 ``n`` (binary exponentiation)."""
    n = jnp.asarray(n, jnp.int32)
    if wide:
        acc: Real = jnp.ones((), jnp.float64)
        b: Real = jnp.asarray(base, jnp.float64)
    else:
        if not isinstance(base, DoubleSingle):
            zero = _zero(n)
            base = DoubleSingle(zero, zero, zero).lift(base)
        b, acc = base, base.lift(1.0)
    for bit in range(31):
        take = ((n >> bit) & 1) == 1
        prod = acc * b
        if wide:
            acc = jnp.where(take, prod, acc)
        else:
            acc = DoubleSingle(
                jnp.where(take, prod.hi, acc.hi), jnp.where(take, prod.lo, acc.lo), acc.z
            )
        b = b * b
    return acc


def round_to(x: Real, dtype: Any) -> jax.Array:
    """The value rounded once to ``dtype`` (the kernel math type), like torch's scalar cast."""
    if isinstance(x, DoubleSingle):
        return x.round_to(dtype)
    if isinstance(x, float):
        return jnp.asarray(np.asarray(x, dtype=np.float64).astype(dtype))
    return jnp.asarray(x).astype(dtype)
