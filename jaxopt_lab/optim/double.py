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
of a float32 rounding boundary. ``tests/test_double.py`` measures this against Python floats
(``test_float32_rounding_of_exp_log_pow_agrees_with_python``,
``test_optimizer_scalars_round_like_python``), as does
``tests/test_dtypes_grad.py::test_double_single_scalars_round_like_python`` for Adam's and
Adagrad's scalars.

For float64 params the same formulas run on float64 arrays (needs x64, as float64 params do).

Besides the arithmetic (``lift``, ``sqrt``, ``ipow``, ``exp``/``log``/``pow``, ``maximum``/
``minimum``, ``where``, ``round_to``): ``table_pow`` (``beta ** step`` from host doubles),
``greater_than`` (a comparison with a float32 constant) and ``mul_gradual_underflow`` (a float32
product that keeps subnormal results, for NAdam's ``mu_product``; XLA:CPU flushes them).
"""

from __future__ import annotations

import decimal
import functools
import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim.kernels import opaque_zero

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


class Pair(NamedTuple):
    """A Python double carried through a trace as two float32 scalars, ``hi + lo`` exactly.

    ``hi`` is the double rounded to float32 and ``lo`` the float32 rounding of the rest, so
    ``hi + lo`` holds ~48 significant bits of the double (see :class:`DoubleSingle`). Schedules
    hand their values to the optimizers in this form when float64 is unavailable (x64 off), so
    that ``lr / bias_correction1`` is computed from torch's double ``lr``, not from its float32
    rounding.
    """

    hi: jax.Array
    lo: jax.Array

    @classmethod
    def of(cls, x: float) -> Pair:
        """The pair of a Python double (host side)."""
        hi = np.float32(x)
        with np.errstate(over="ignore", invalid="ignore"):
            lo = np.float32(float(x) - float(hi)) if np.isfinite(hi) else np.float32(0.0)
        return cls(jnp.asarray(hi), jnp.asarray(lo))


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
        if isinstance(x, Pair):
            hi, lo = jnp.asarray(x.hi, _F32), jnp.asarray(x.lo, _F32)
            return DoubleSingle(hi + self.z, lo + self.z, self.z)
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
        if isinstance(x, Pair):
            return jnp.asarray(x.hi, jnp.float64) + jnp.asarray(x.lo, jnp.float64)
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


_POW_DIGITS = (10, 10, 11)
"""``table_pow``'s digits of an int32 exponent, low to high: ``n = c + 2**10 b + 2**20 a``."""


@functools.lru_cache(maxsize=64)
def _pow_tables(base: float) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per digit, ``base ** (d * 2**shift)`` for every digit value ``d``: Python doubles (libm's
    ``pow``, as torch's ``beta ** step``) split into float32 pairs."""
    tables, shift = [], 0
    for bits in _POW_DIGITS:
        values = []
        for d in range(2**bits):
            try:
                values.append(base ** (d << shift))
            except OverflowError:
                values.append(math.inf)
        hi = np.asarray(values, np.float64).astype(np.float32)
        with np.errstate(invalid="ignore"):
            lo = np.where(np.isfinite(hi), np.asarray(values) - hi.astype(np.float64), 0.0)
        tables.append((hi, lo.astype(np.float32)))
        shift += bits
    return tuple(tables)


def table_pow(base: float, n: jax.Array) -> DoubleSingle:
    """``base ** n`` for a Python double ``base`` and a traced int32 ``n >= 0``, x64 off.

    The product of three host-computed doubles, looked up by the digits of ``n``
    (:data:`_POW_DIGITS`): ``base ** c * base ** (2**10 b) * base ** (2**20 a)``. Each factor is
    a correctly rounded-or-nearly double (libm) cut to a pair (<= 1.1 U, ``U = 2**-48``), and
    two pair products add 3.5 U each: within 11 U of the exact power for every ``n``, where
    :func:`ipow`'s repeated squaring reaches ~``n`` U; and two multiplies where ``ipow`` traces
    62 (the step's scalars were most of Adam's update program).
    """
    n = jnp.asarray(n, jnp.int32)
    zero = _zero(n)
    acc: DoubleSingle | None = None
    shift = 0
    for bits, (hi, lo) in zip(_POW_DIGITS, _pow_tables(float(base)), strict=True):
        digit = (n >> shift) & (2**bits - 1)
        factor = DoubleSingle(jnp.asarray(hi)[digit] + zero, jnp.asarray(lo)[digit] + zero, zero)
        acc = factor if acc is None else acc * factor
        shift += bits
    assert acc is not None
    return acc


def greater_than(x: Real, c: float) -> jax.Array:
    """``x > c`` for a double value ``x`` and a float32-exact constant ``c``.

    A normalized double-single ``hi + lo`` has ``hi`` = its float32 rounding, so it exceeds
    ``c`` iff ``hi > c``, or ``hi == c`` and ``lo > 0``. (:func:`maximum` and :func:`minimum`
    compare two double values through their difference instead.)
    """
    if isinstance(x, DoubleSingle):
        return (x.hi > c) | ((x.hi == c) & (x.lo > 0))
    return jnp.asarray(x > c)


def leading_float(x: Real) -> jax.Array | float:
    """The leading float of a value: a double-single's ``hi``; anything else as it is."""
    return x.hi if isinstance(x, DoubleSingle) else x


def round_to(x: Real, dtype: Any) -> jax.Array:
    """The value rounded once to ``dtype`` (the kernel math type), like torch's scalar cast."""
    if isinstance(x, DoubleSingle):
        return x.round_to(dtype)
    if isinstance(x, float):
        return jnp.asarray(np.asarray(x, dtype=np.float64).astype(dtype))
    return jnp.asarray(x).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Non-integer powers: exp, log, pow -- and Python's max/min -- on the values above.
#
# torch computes some per-step scalars with non-integer exponents in Python doubles (NAdam's
# ``0.96 ** (step * momentum_decay)``, ASGD's ``(1 + lambd * lr * step) ** alpha``, Adafactor's
# ``step ** beta2_decay``). On a DoubleSingle they are evaluated as follows (each value an
# unevaluated float32 pair, every constant exact to >= 48 bits):
#
# * ``exp(x)``: ``k = round(x / ln 2)``, ``r = x - k ln 2`` with ln 2 split Cody-Waite style into
#   two 12-bit parts (``k * part`` is exact for ``|k| < 2**12``) and a pair holding the next 48
#   bits, so ``|r| <= 0.35`` carries the absolute error of ``x`` and ~2**-48 |r| more; then the
#   Taylor polynomial of degree 12 (truncation < 0.35**13 / 13! < 2**-52) by Horner, and an
#   exact scaling by ``2**k``.
# * ``log(x)``: ``x = 2**e m`` with ``m`` in [sqrt(1/2), sqrt(2)) (exact), ``s = (m-1)/(m+1)``,
#   ``|s| <= 0.172``, ``log m = 2 atanh(s) = 2 s sum_k s**2k / (2k+1)`` to ``k = 10``
#   (truncation < 0.0295**11 / 23 < 2**-60), plus ``e ln 2``.
# * ``pow(b, y) = exp(y log b)``; a Python-float base takes ``math.log(b)`` (a double).
#
# Error bounds, in U = 2**-48 relative, from the primitives' (mul 3.5 U, div 4 U, add 2 U of
# their exact results) and Horner's damping of early errors by ``|r|`` (or ``s**2``) per step:
# ``exp`` 11 U of the exp of the pair it is given, ``log`` 20 U, ``pow(b, y)``
# ``(11 + 24 |y log b|)`` U (derived in ``tests/test_double.py``, which measures a fifth to a
# tenth of that against exact decimal arithmetic, and checks that the float32 rounding equals
# the float32 rounding of Python's double result). Valid while every low part is a normal
# float (values above ~2**-78): XLA:CPU flushes float32 subnormals to zero.


def _split_ln2() -> tuple[float, float, float, float]:
    """ln 2 as ``c1 + c2 + c3 + c4`` (float32 each; c1, c2 with 12 significant bits)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        rest = Fraction(decimal.Decimal(2).ln())
    parts = []
    for bits in (12, 12, 24, 24):
        mask = np.uint32((0xFFFFFFFF << (24 - bits)) & 0xFFFFFFFF)
        part = (np.float32(float(rest)).view(np.uint32) & mask).view(np.float32)
        parts.append(float(part))
        rest -= Fraction(parts[-1])
    return tuple(parts)  # type: ignore[return-value]


_LN2_PARTS = _split_ln2()
_EXP_DEGREE = 12
_ATANH_TERMS = 11  # s * (1 + s**2/3 + ... + s**20/21)
_TWO_POW_MAX = 127


def _pow2(k: jax.Array) -> jax.Array:
    """``2.0**k`` as float32, exact, for an int32 ``k`` in [-126, 127]."""
    return jax.lax.bitcast_convert_type((k + 127) << 23, _F32)


def _scale(x: DoubleSingle, k: jax.Array) -> DoubleSingle:
    """``x * 2**k`` for an int32 ``k`` in [-252, 254] (two exact power-of-two factors)."""
    k1 = k // 2
    s1, s2 = _pow2(k1), _pow2(k - k1)
    return DoubleSingle((x.hi * s1) * s2, (x.lo * s1) * s2, x.z)


def _add_exact(a: DoubleSingle, b: DoubleSingle) -> DoubleSingle:
    """``a + b`` with both low parts summed error-free too (QD's accurate addition): within
    ~2**-48 of the result even under cancellation, where ``__add__`` is within ~2**-48 of
    ``|a| + |b|``."""
    z = a.z
    s, e = _two_sum(a.hi, b.hi, z)
    t, f = _two_sum(a.lo, b.lo, z)
    s, e = _fast_two_sum(s, e + t + z, z)
    return DoubleSingle(*_fast_two_sum(s, e + f + z, z), z)


def _minus_k_ln2(x: DoubleSingle, k: jax.Array) -> DoubleSingle:
    """``x - k ln 2`` for an integer-valued float32 ``k`` with ``|k| < 2**12``, to ~2**-48 of
    the result: the two 12-bit parts of ln 2 give exact products, subtracted one at a time."""
    c1, c2, c3, c4 = _LN2_PARTS
    z = x.z
    for c in (c1, c2):
        x = _add_exact(x, DoubleSingle(-(k * c) + z, z, z))
    tail = DoubleSingle(jnp.asarray(c3, _F32) + z, jnp.asarray(c4, _F32) + z, z)
    return _add_exact(x, -(tail * DoubleSingle(k, z, z)))


def _select(pred: jax.Array, a: DoubleSingle, b: DoubleSingle) -> DoubleSingle:
    return DoubleSingle(jnp.where(pred, a.hi, b.hi), jnp.where(pred, a.lo, b.lo), a.z)


def _ds_exp(x: DoubleSingle) -> DoubleSingle:
    k = jnp.round(x.hi * np.float32(1 / math.log(2)))
    finite = jnp.abs(k) < 1024
    k = jnp.where(finite, k, jnp.zeros_like(k))
    r = _minus_k_ln2(x, k)
    p = x.lift(1.0 / math.factorial(_EXP_DEGREE))
    for n in range(_EXP_DEGREE - 1, -1, -1):
        p = p * r + 1.0 / math.factorial(n)
    ki = k.astype(jnp.int32)
    out = _scale(p, jnp.clip(ki, -252, 254))
    big, small = x.hi > 0, x.hi < 0
    overflow = (ki > 254) | (~finite & big)
    underflow = (ki < -252) | (~finite & small)
    hi = jnp.where(overflow, jnp.inf, jnp.where(underflow, 0.0, out.hi))
    lo = jnp.where(overflow | underflow, 0.0, out.lo)
    hi = jnp.where(jnp.isnan(x.hi), x.hi, hi)
    return DoubleSingle(hi.astype(_F32), lo.astype(_F32), x.z)


def _ds_log(x: DoubleSingle) -> DoubleSingle:
    # (A subnormal x reads as 0 here: XLA:CPU flushes float32 subnormals, so log gives -inf.)
    bits = jax.lax.bitcast_convert_type(x.hi, jnp.int32)
    e = ((bits >> 23) & 0xFF) - 127
    mantissa = jax.lax.bitcast_convert_type((bits & 0x7FFFFF) | (127 << 23), _F32)  # in [1, 2)
    e = e + (mantissa > math.sqrt(2)).astype(jnp.int32)
    e = jnp.clip(e, -126, _TWO_POW_MAX)
    m = _scale(x, -e)  # exact: x = 2**e * m, m in [sqrt(1/2), sqrt(2))
    s = (m - 1.0) / (m + 1.0)
    t = s * s
    q = x.lift(1.0 / (2 * _ATANH_TERMS - 1))
    for k in range(_ATANH_TERMS - 2, -1, -1):
        q = q * t + 1.0 / (2 * k + 1)
    log_m = (s + s) * q
    out = _minus_k_ln2(log_m, -e.astype(_F32))  # log m + e ln 2
    hi = jnp.where(x.hi > 0, out.hi, jnp.where(x.hi == 0, -jnp.inf, jnp.nan))
    hi = jnp.where(jnp.isposinf(x.hi), jnp.inf, hi)
    hi = jnp.where(jnp.isnan(x.hi), x.hi, hi)
    lo = jnp.where(jnp.isfinite(hi), out.lo, 0.0)
    return DoubleSingle(hi.astype(_F32), lo.astype(_F32), x.z)


def exp(x: Real) -> Real:
    """``math.exp(x)``: Python floats stay floats, float64 arrays use ``jnp.exp``."""
    if isinstance(x, float):
        return math.exp(x)
    if isinstance(x, DoubleSingle):
        return _ds_exp(x)
    return jnp.exp(x)


def log(x: Real) -> Real:
    """``math.log(x)`` (``-inf`` at 0, NaN below, where Python would raise)."""
    if isinstance(x, float):
        return math.log(x)
    if isinstance(x, DoubleSingle):
        return _ds_log(x)
    return jnp.log(x)


def pow(base: Real, exponent: Real, wide: bool) -> Real:
    """Python's ``base ** exponent`` for a real (non-integer) exponent, in double precision.

    Two Python floats give Python's own result; with ``wide`` the float64 ``jnp.power``; else
    the double-single ``exp(exponent * log(base))`` (a Python-float base uses the double
    ``math.log(base)``). A negative base gives NaN (Python gives a complex number), a zero base
    0, 1 or inf by the sign of the exponent.
    """
    if isinstance(base, float) and isinstance(exponent, float):
        return base**exponent
    if wide:
        return jnp.power(jnp.asarray(base, jnp.float64), jnp.asarray(exponent, jnp.float64))
    like = base if isinstance(base, DoubleSingle) else exponent
    if not isinstance(like, DoubleSingle):
        raise TypeError("pow without wide needs a DoubleSingle operand (use lift)")
    y = like.lift(exponent)
    if isinstance(base, float):
        if base <= 0.0:
            zero_base = 0.0 if base == 0.0 else math.nan
            return _pow_special(like.lift(zero_base), y)
        return exp(y * math.log(base))
    b = like.lift(base)
    return _pow_special(b, y, exp(y * log(b)))


def _pow_special(b: DoubleSingle, y: DoubleSingle, general: DoubleSingle | None = None) -> Real:
    """``b ** y`` where ``b <= 0`` (or NaN), else ``general``."""
    zero_pow = jnp.where(y.hi > 0, 0.0, jnp.where(y.hi == 0, 1.0, jnp.inf)).astype(_F32)
    special = jnp.where(b.hi == 0, zero_pow, jnp.nan).astype(_F32)
    if general is None:
        return DoubleSingle(special, jnp.zeros_like(special) + b.z, b.z)
    positive = b.hi > 0
    hi = jnp.where(positive, general.hi, special)
    return DoubleSingle(hi, jnp.where(positive, general.lo, jnp.zeros_like(hi)), b.z)


def _greater(a: Real, b: Real) -> Any:
    """``a > b`` in double precision (False when either is NaN, as in Python)."""
    if isinstance(a, DoubleSingle) or isinstance(b, DoubleSingle):
        like = a if isinstance(a, DoubleSingle) else b
        d = like.lift(a) - like.lift(b)
        return (d.hi > 0) | ((d.hi == 0) & (d.lo > 0))
    return jnp.asarray(a) > jnp.asarray(b)


def where(pred: Any, a: Real, b: Real) -> Real:
    """``a if pred else b`` for double values (Python floats, double-single, float64)."""
    if isinstance(a, DoubleSingle) or isinstance(b, DoubleSingle):
        like = a if isinstance(a, DoubleSingle) else b
        return _select(pred, like.lift(a), like.lift(b))
    return jnp.where(pred, a, b)


def maximum(a: Real, b: Real) -> Real:
    """Python's ``max(a, b)``: ``b`` if ``b > a`` else ``a`` (so ``max(1.0, nan)`` is 1.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return max(a, b)
    return where(_greater(b, a), b, a)


def minimum(a: Real, b: Real) -> Real:
    """Python's ``min(a, b)``: ``b`` if ``b < a`` else ``a``."""
    if isinstance(a, float) and isinstance(b, float):
        return min(a, b)
    return where(_greater(a, b), b, a)


def lift_array(values: Any, wide: bool, anchor: jax.Array) -> Real:
    """Host doubles (a NumPy float64 array, one value per leaf, say) as one array ``Real``."""
    values = np.asarray(values, np.float64)
    if wide:
        return jnp.asarray(values, jnp.float64)
    hi = values.astype(np.float32)
    with np.errstate(invalid="ignore"):
        lo = np.where(np.isfinite(hi), values - hi.astype(np.float64), 0.0).astype(np.float32)
    zero = _zero(anchor)
    return DoubleSingle(jnp.asarray(hi) + zero, jnp.asarray(lo) + zero, zero)


# ---------------------------------------------------------------------------------------------
# float32 products with gradual underflow (NAdam's float32 ``mu_product`` reaches subnormals).


def _bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _float(bits: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _decompose(magnitude_bits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``|x| = m * 2**e`` with ``m`` in [1, 2), from the bits of ``|x| > 0`` (subnormals too)."""
    subnormal = (magnitude_bits >> 23) == 0
    # a subnormal's significand as an exact (normal) float32 integer
    y = jnp.where(subnormal, magnitude_bits.astype(jnp.float32), _float(magnitude_bits))
    y_bits = _bits(y)
    m = _float((y_bits & 0x7FFFFF) | 0x3F800000)
    return m, (y_bits >> 23) - 127 - jnp.where(subnormal, 149, 0)


def mul_gradual_underflow(a: jax.Array, b: jax.Array, zero: jax.Array) -> jax.Array:
    """float32 ``a * b`` rounded as IEEE 754 (and torch) do, subnormal results included.

    XLA:CPU runs with subnormals flushed to zero, inputs and results (so even ``a == 0`` is true
    for a subnormal ``a``); this reads the operands from their bits, multiplies the significands
    exactly (``two_prod``) and writes a subnormal result's bits itself, rounding to nearest even
    at 2**-149. For finite operands; ``zero`` is an opaque float32 ``-0.0`` (see
    :class:`DoubleSingle`).
    """
    a_bits, b_bits = _bits(a), _bits(b)
    a_mag, b_mag = a_bits & 0x7FFFFFFF, b_bits & 0x7FFFFFFF
    ma, ea = _decompose(a_mag)
    mb, eb = _decompose(b_mag)
    hi, lo = _two_prod(ma, mb, zero)  # ma * mb == hi + lo exactly, hi in [1, 4]
    e = ea + eb  # |a * b| = (hi + lo) * 2**e
    normal = e + (hi >= 2).astype(jnp.int32) >= -126
    e_big = jnp.clip(e, -252, 254)
    big = (hi * _pow2(e_big // 2)) * _pow2(e_big - e_big // 2)  # exact, or inf
    s = jnp.clip(e + 149, -30, 22)  # the result in units of 2**-149 is (hi + lo) * 2**s < 2**23
    x, xl = hi * _pow2(s), lo * _pow2(s)
    f = jnp.floor(x)
    d = (x - f) - 0.5  # exact; |d| >= ulp(x) > |xl| unless d == 0
    odd = (f.astype(jnp.int32) & 1) == 1
    up = (d > 0) | ((d == 0) & ((xl > 0) | ((xl == 0) & odd)))
    tiny_bits = f.astype(jnp.int32) + up.astype(jnp.int32)  # 2**23 is the least normal: right
    magnitude = jnp.where(normal, _bits(big), tiny_bits)
    magnitude = jnp.where((a_mag == 0) | (b_mag == 0), 0, magnitude)
    sign = (a_bits ^ b_bits) & jnp.int32(-(2**31))
    return _float(magnitude | sign)
