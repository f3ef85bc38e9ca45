"""torch's strong-Wolfe line search (``torch/optim/lbfgs.py``, a port of Lua's ``lswolfe``).

torch runs this search on a mix of Python ``float`` (IEEE double) and 0-dim tensors: losses are
``float(closure())``, directional derivatives are tensors, and a step ``t`` is a Python float or a
tensor depending on the path taken (``min(max(min_pos, lo), hi)`` returns whichever object wins).
Python's arithmetic on two floats is double; as soon as a tensor is involved the Python operand is
rounded to the tensor's dtype and the operation runs in that dtype; ``float / tensor`` is
``tensor.reciprocal() * float`` (``Tensor.__rtruediv__``); comparisons with a tensor happen in the
tensor's dtype. :class:`Num` carries a value together with that "is a tensor" flag and
:class:`TorchArith` applies these rules, so that float32 params see torch's float32 roundings and
float64 params torch's ``reciprocal``-then-multiply.

Which of torch's scalars are which (``_strong_wolfe``, ``_cubic_interpolate`` and ``LBFGS.step``):

* Python doubles: ``lr``; the losses ``f``, ``f_new``, ``f_prev``, ``bracket_f`` (``float`` of a
  tensor: exact in the params' dtype); ``t`` while it is ``lr`` or a sum/product of Python values
  (``t_prev``, ``min_step = t + 0.01 * (t - t_prev)``, ``max_step = t * 10``, the bracket ends,
  ``eps = 0.1 * (max(bracket) - min(bracket))``, ``max(bracket) - eps``, the midpoint
  ``(xmin_bound + xmax_bound) / 2.0``); in ``_cubic_interpolate`` ``3 * (f1 - f2) / (x1 - x2)``
  when the ``x`` are Python floats; ``c1 * t``; the stop test ``abs(loss - prev_loss)``.
* Tensors (the params' dtype): ``gtd``, ``gtd_new``, ``d_norm``, ``ys``, ``H_diag``, ``ro``; so
  ``d1``, ``d2_square``, ``d2`` and ``min_pos`` of the cubic; the first step
  ``min(1.0, 1.0 / |g|_1) * lr`` when the ``min`` picks the tensor; and whatever a tensor meets.

The Python doubles are held in float64 when x64 is enabled. With x64 off (float32 params) they
are double-single pairs (:class:`~jaxopt_lab.optim.double.DoubleSingle`: ``hi + lo``, ~48
significant bits; ``hi`` is the value torch's kernels see, the double rounded to float32), and two
of them compare exactly as the pairs do. The pair's float32 rounding and its comparisons equal the
double's unless two doubles (or a double and a float32 rounding boundary) lie within ~2**-44
relative of each other (``tests/test_lbfgs.py`` checks long runs bit for bit).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim.double import DoubleSingle, Pair
from jaxopt_lab.optim.kernels import opaque_zero


class Num(NamedTuple):
    """A torch-side scalar: its value (wide dtype), the low part of a double-single Python float
    (x64 off; zero otherwise) and whether torch holds it as a tensor."""

    v: jax.Array
    lo: jax.Array
    tensor: jax.Array


Operand = Num | jax.Array | float | int

# The arithmetic of two Python floats: wide-dtype arrays (``z`` is an opaque -0.0 that keeps a
# product from being contracted into a following addition) or double-single pairs.
_WIDE_OPS: dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "add": lambda x, y, z: x + y,
    "sub": lambda x, y, z: x - y,
    "mul": lambda x, y, z: x * y + z,
    "div": lambda x, y, z: x / y,
}
_PAIR_OPS: dict[str, Callable[[DoubleSingle, DoubleSingle], DoubleSingle]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


class TorchArith:
    """Scalar arithmetic with torch's Python-float / 0-dim-tensor promotion rules.

    ``P`` is the tensors' dtype (the params'), ``W`` the dtype standing in for Python doubles:
    float64, or float32 for double-single pairs (``pairs``). Products get an opaque ``-0.0``
    added so that XLA never contracts them into a following addition (torch rounds every Python
    and tensor operation on its own).
    """

    def __init__(self, tensor_dtype: Any, wide_dtype: Any, anchor: jax.Array) -> None:
        self.P = jnp.dtype(tensor_dtype)
        self.W = jnp.dtype(wide_dtype)
        self.pairs = self.W == jnp.dtype(jnp.float32)
        self.zp = opaque_zero(anchor, self.P)
        self.zw = opaque_zero(anchor, self.W)

    # -- construction -----------------------------------------------------------------------

    def py(self, x: Any) -> Num:
        """A Python float (a constant, the lr, a loss); a :class:`Pair` is an exact double."""
        no = jnp.asarray(False)
        if not self.pairs:
            if isinstance(x, Pair):
                x = jnp.asarray(x.hi, self.W) + jnp.asarray(x.lo, self.W)
            return Num(jnp.asarray(x, self.W), jnp.zeros((), self.W), no)
        if isinstance(x, (int, float, np.integer, np.floating)):
            hi = np.float32(x)
            lo = np.float32(float(x) - float(hi)) if np.isfinite(hi) else np.float32(0.0)
            return Num(self._constant(hi), self._constant(lo), no)
        if isinstance(x, Pair):
            return Num(jnp.asarray(x.hi, self.W) + self.zw, jnp.asarray(x.lo, self.W) + self.zw, no)
        return Num(jnp.asarray(x).astype(self.W) + self.zw, jnp.zeros((), self.W) + self.zw, no)

    def _constant(self, x: np.float32) -> jax.Array:
        """A float32 constant the compiler cannot reassociate (see ``DoubleSingle``); a zero
        stays a plain ``0.0``: XLA folds ``0.0 + z`` into ``z``, which is ``-0.0``."""
        return jnp.asarray(x) + self.zw if x != 0 else jnp.asarray(x)

    def ten(self, x: jax.Array) -> Num:
        """A 0-dim tensor of the params' dtype."""
        return Num(jnp.asarray(x, self.P).astype(self.W), jnp.zeros((), self.W), jnp.asarray(True))

    def lift(self, x: Operand) -> Num:
        if isinstance(x, Num):
            return x
        if isinstance(x, (int, float, Pair)):
            return self.py(x)
        return self.ten(x)

    def p(self, x: Operand) -> jax.Array:
        """The value as the tensor dtype (how torch hands a Python scalar to a kernel): a
        double-single pair's ``hi``, the double rounded to float32."""
        return self.lift(x).v.astype(self.P)

    def _pair(self, a: Num) -> DoubleSingle:
        return DoubleSingle(a.v, a.lo, self.zw)

    # -- arithmetic -------------------------------------------------------------------------

    def _python(self, a: Num, b: Num, op: str) -> tuple[jax.Array, jax.Array]:
        """``a op b`` for two Python floats: (value, low part)."""
        if self.pairs:
            out = _PAIR_OPS[op](self._pair(a), self._pair(b))
            return out.hi, out.lo
        return _WIDE_OPS[op](a.v, b.v, self.zw), jnp.zeros((), self.W)

    def _binary(self, a: Operand, b: Operand, op: str) -> Num:
        a, b = self.lift(a), self.lift(b)
        is_tensor = a.tensor | b.tensor
        pa, pb = a.v.astype(self.P), b.v.astype(self.P)
        if op == "div":  # a Python float over a tensor: b.reciprocal() * a
            as_tensor = jnp.where(
                b.tensor & ~a.tensor, (1 / pb + self.zp) * pa + self.zp, pa / pb
            ).astype(self.W)
        else:
            as_tensor = _WIDE_OPS[op](pa, pb, self.zp).astype(self.W)
        v, lo = self._python(a, b, op)
        zero = jnp.zeros((), self.W)
        return Num(jnp.where(is_tensor, as_tensor, v), jnp.where(is_tensor, zero, lo), is_tensor)

    def add(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, "add")

    def sub(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, "sub")

    def mul(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, "mul")

    def div(self, a: Operand, b: Operand) -> Num:
        """``a / b``; a Python ``a`` over a tensor ``b`` is ``b.reciprocal() * a``."""
        return self._binary(a, b, "div")

    def neg(self, a: Operand) -> Num:
        a = self.lift(a)
        return Num(-a.v, -a.lo, a.tensor)

    def abs(self, a: Operand) -> Num:
        a = self.lift(a)
        if not self.pairs:
            return Num(jnp.abs(a.v), a.lo, a.tensor)
        negative = (a.v < 0) | ((a.v == 0) & (a.lo < 0))
        return select(negative, self.neg(a), a)

    # -- comparisons (in the tensor dtype when a tensor is involved) ------------------------

    def _compare(self, a: Operand, b: Operand, op: Callable[..., jax.Array]) -> jax.Array:
        a, b = self.lift(a), self.lift(b)
        as_tensor = op(a.v.astype(self.P), b.v.astype(self.P))
        as_python = op(a.v, b.v)
        if self.pairs:  # normalized pairs compare as (hi, lo) (an infinite hi has no low part)
            lo_a = jnp.where(jnp.isfinite(a.v), a.lo, 0)
            lo_b = jnp.where(jnp.isfinite(b.v), b.lo, 0)
            as_python = jnp.where(a.v == b.v, op(lo_a, lo_b), as_python)
        return jnp.where(a.tensor | b.tensor, as_tensor, as_python)

    def lt(self, a: Operand, b: Operand) -> jax.Array:
        return self._compare(a, b, jnp.less)

    def le(self, a: Operand, b: Operand) -> jax.Array:
        return self._compare(a, b, jnp.less_equal)

    def gt(self, a: Operand, b: Operand) -> jax.Array:
        return self._compare(a, b, jnp.greater)

    def ge(self, a: Operand, b: Operand) -> jax.Array:
        return self._compare(a, b, jnp.greater_equal)

    # -- Python's builtins ------------------------------------------------------------------

    def max(self, a: Operand, b: Operand) -> Num:
        """``max(a, b)``: ``b`` if ``b > a`` else ``a`` (the object itself, type included)."""
        a, b = self.lift(a), self.lift(b)
        return select(self.gt(b, a), b, a)

    def min(self, a: Operand, b: Operand) -> Num:
        """``min(a, b)``: ``b`` if ``b < a`` else ``a``."""
        a, b = self.lift(a), self.lift(b)
        return select(self.lt(b, a), b, a)


def select(pred: jax.Array, a: Num, b: Num) -> Num:
    """``a if pred else b``."""
    return Num(*(jnp.where(pred, x, y) for x, y in zip(a, b, strict=True)))


def cubic_interpolate(
    A: TorchArith,
    x1: Num,
    f1: Num,
    g1: Num,
    x2: Num,
    f2: Num,
    g2: Num,
    bounds: tuple[Num, Num] | None = None,
) -> Num:
    """torch's ``_cubic_interpolate`` (the minimiser of the cubic through two points)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        x1_first = A.le(x1, x2)
        xmin_bound, xmax_bound = select(x1_first, x1, x2), select(x1_first, x2, x1)
    # d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d1 = A.sub(A.add(g1, g2), A.div(A.mul(3, A.sub(f1, f2)), A.sub(x1, x2)))
    # d2_square = d1**2 - g1 * g2   (d1**2 is d1 * d1, rounded on its own)
    d2_square = A.sub(A.mul(d1, d1), A.mul(g1, g2))
    # d2 = d2_square.sqrt(); only used where d2_square >= 0 (a tensor: float32 sqrt in float32)
    d2 = A.ten(jnp.sqrt(jnp.maximum(A.p(d2_square), 0)))
    x1_first = A.le(x1, x2)
    # x1 <= x2: x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)), else mirrored
    xa, xb = select(x1_first, x2, x1), select(x1_first, x1, x2)
    ga, gb = select(x1_first, g2, g1), select(x1_first, g1, g2)
    ratio = A.div(A.sub(A.add(ga, d2), d1), A.add(A.sub(ga, gb), A.mul(2, d2)))
    min_pos = A.sub(xa, A.mul(A.sub(xa, xb), ratio))
    clamped = A.min(A.max(min_pos, xmin_bound), xmax_bound)
    midpoint = A.div(A.add(xmin_bound, xmax_bound), 2.0)
    return select(A.ge(d2_square, 0), clamped, midpoint)


# torch's constants: _strong_wolfe(..., c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25). The
# L-BFGS step passes only max_ls (= max_eval - evaluations so far), so the user's tolerance_change
# never reaches the search: it keeps 1e-9.
C1 = 1e-4
C2 = 0.9
TOLERANCE_CHANGE = 1e-9

_BRACKET, _ZOOM, _FINISHED = 0, 1, 2


class _Search(NamedTuple):
    t: Num  # the next trial step
    phase: jax.Array  # _BRACKET, _ZOOM or _FINISHED
    ls_iter: jax.Array
    evals: jax.Array
    bt: Num  # bracket steps, shape (2,); in the bracketing phase slot 0 is (t_prev, f_prev, ...)
    bf: jax.Array  # bracket losses (wide)
    bg: jax.Array  # bracket gradients, (2, n)
    bgtd: jax.Array  # bracket directional derivatives (tensor dtype)
    low: jax.Array  # low_pos (high_pos = 1 - low_pos)
    done: jax.Array
    insuf_progress: jax.Array


def _slot(b: Num, i: jax.Array) -> Num:
    return Num(*(x[i] for x in b))


def _pair(a: Num, b: Num) -> Num:
    return Num(*(jnp.stack([x, y]) for x, y in zip(a, b, strict=True)))


Evaluate = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def strong_wolfe(
    A: TorchArith,
    evaluate: Evaluate,
    x: jax.Array,
    t: Num,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: jax.Array,
) -> tuple[jax.Array, jax.Array, Num, jax.Array]:
    """torch's ``_strong_wolfe(obj_func, x, t, d, f, g, gtd, max_ls=max_ls)``.

    ``evaluate(x_new) -> (loss as wide, flat grad)``; the trial point is ``x + t * d`` with
    torch's ``p.add_(d, alpha=t)`` rounding (one fused multiply-add). Returns ``(f_new, g_new, t,
    ls_func_evals)``. The bracketing and zoom loops of torch are one ``while_loop`` here with one
    evaluation per trip (so the objective is traced once).
    """
    P = A.P
    d_norm = jnp.max(jnp.abs(d))
    fN = A.py(f)
    gtdN = A.ten(gtd)
    # f + c1 * t * gtd, and -c2 * gtd: the Armijo bound and the curvature bound.

    def armijo_bound(t_: Num) -> Num:
        return A.add(fN, A.mul(A.mul(C1, t_), gtdN))

    curvature_bound = A.mul(-C2, gtdN)

    def bracket_phase(s: _Search, t_: Num, f_new, g_new, gtd_new) -> _Search:
        exhausted = s.ls_iter >= max_ls  # torch leaves its while loop: bracket = [0, t]
        f_prev = s.bf[0]
        cond1 = A.gt(A.py(f_new), armijo_bound(t_)) | ((s.ls_iter > 1) & (f_new >= f_prev))
        cond2 = A.le(A.abs(A.ten(gtd_new)), curvature_bound)
        cond3 = gtd_new >= 0
        two = ~exhausted & (cond1 | (~cond2 & cond3))  # bracket = [t_prev, t]
        one = ~exhausted & ~cond1 & cond2  # bracket = [t], done
        go_on = ~exhausted & ~two & ~one
        # interpolate (used when go_on)
        t_prev = _slot(s.bt, 0)
        min_step = A.add(t_, A.mul(0.01, A.sub(t_, t_prev)))
        max_step = A.mul(t_, 10)
        t_next = cubic_interpolate(
            A,
            t_prev,
            A.py(f_prev),
            A.ten(s.bgtd[0]),
            t_,
            A.py(f_new),
            A.ten(gtd_new),
            bounds=(min_step, max_step),
        )
        zero = A.py(0)
        slot0_t = select(exhausted, zero, select(two, t_prev, t_))
        slot1_t = t_
        bt = _pair(slot0_t, slot1_t)
        bf0 = jnp.where(exhausted, f, jnp.where(two, f_prev, f_new))
        bf = jnp.stack([bf0, f_new])
        bg0 = jnp.where(exhausted, g, jnp.where(two, s.bg[0], g_new))
        bg = jnp.stack([bg0, g_new])
        bgtd0 = jnp.where(exhausted, s.bgtd[0], jnp.where(two, s.bgtd[0], gtd_new))
        bgtd = jnp.stack([bgtd0, gtd_new])
        low = jnp.where(bf[0] <= bf[1], 0, 1).astype(jnp.int32)
        return s._replace(
            t=select(go_on, t_next, t_),
            phase=jnp.where(go_on, _BRACKET, _ZOOM).astype(jnp.int32),
            bt=bt,
            bf=bf,
            bg=bg,
            bgtd=bgtd,
            low=low,
            done=one,
        )

    def zoom_phase(s: _Search, t_: Num, f_new, g_new, gtd_new) -> _Search:
        low, high = s.low, 1 - s.low
        new = (t_, f_new, g_new, gtd_new.astype(s.bgtd.dtype))
        to_high = A.gt(A.py(f_new), armijo_bound(t_)) | (f_new >= s.bf[low])
        wolfe = A.le(A.abs(A.ten(gtd_new)), curvature_bound)
        flip = A.ge(A.mul(A.ten(gtd_new), A.sub(_slot(s.bt, high), _slot(s.bt, low))), 0)
        old_low = (_slot(s.bt, low), s.bf[low], s.bg[low], s.bgtd[low])
        old_high = (_slot(s.bt, high), s.bf[high], s.bg[high], s.bgtd[high])
        # Armijo fails or no lower: the new point replaces high. Else it becomes low, and high
        # becomes the old low if the derivative points past it (unless Wolfe holds).
        high_val = _choose(to_high, new, _choose(~wolfe & flip, old_low, old_high))
        low_val = _choose(to_high, old_low, new)
        slots = _place(low, low_val, high_val)
        bt = _pair(slots[0][0], slots[1][0])
        bf = jnp.stack([slots[0][1], slots[1][1]])
        bg = jnp.stack([slots[0][2], slots[1][2]])
        bgtd = jnp.stack([slots[0][3], slots[1][3]])
        new_low = jnp.where(to_high, jnp.where(bf[0] <= bf[1], 0, 1), low).astype(jnp.int32)
        return s._replace(bt=bt, bf=bf, bg=bg, bgtd=bgtd, low=new_low, done=~to_high & wolfe)

    def next_trial(s: _Search) -> _Search:
        """The top of torch's zoom loop: stop, or the next trial step."""
        b0, b1 = _slot(s.bt, 0), _slot(s.bt, 1)
        small = A.lt(A.mul(A.abs(A.sub(b1, b0)), A.ten(d_norm)), TOLERANCE_CHANGE)
        stop = s.done | ~(s.ls_iter < max_ls) | small
        t_ = cubic_interpolate(
            A, b0, A.py(s.bf[0]), A.ten(s.bgtd[0]), b1, A.py(s.bf[1]), A.ten(s.bgtd[1])
        )
        # insufficient progress: move t to 0.1 * len(bracket) from the nearest end
        bmax, bmin = A.max(b0, b1), A.min(b0, b1)
        eps = A.mul(0.1, A.sub(bmax, bmin))
        close = A.lt(A.min(A.sub(bmax, t_), A.sub(t_, bmin)), eps)
        at_end = A.ge(t_, bmax) | A.le(t_, bmin)
        move = close & (s.insuf_progress | at_end)
        toward_max = A.lt(A.abs(A.sub(t_, bmax)), A.abs(A.sub(t_, bmin)))
        moved = select(toward_max, A.sub(bmax, eps), A.add(bmin, eps))
        return s._replace(
            t=select(move, moved, t_),
            phase=jnp.where(stop, _FINISHED, _ZOOM).astype(jnp.int32),
            insuf_progress=jnp.where(stop, s.insuf_progress, close & ~move),
        )

    def body(s: _Search) -> _Search:
        f_new, g_new = evaluate(x + A.p(s.t) * d)  # p.add_(d, alpha=t): one FMA
        gtd_new = dot(g_new, d)
        ls_iter = jnp.where(s.evals == 0, s.ls_iter, s.ls_iter + 1)
        s = s._replace(evals=s.evals + 1, ls_iter=ls_iter)
        t_ = s.t
        s = jax.lax.cond(
            s.phase == _BRACKET, bracket_phase, zoom_phase, s, t_, f_new, g_new, gtd_new
        )
        return jax.lax.cond(s.phase == _ZOOM, next_trial, lambda s_: s_, s)

    zero_i = jnp.zeros((), jnp.int32)
    init = _Search(
        t=t,
        phase=zero_i + _BRACKET,
        ls_iter=zero_i,
        evals=zero_i,
        bt=_pair(A.py(0), A.py(0)),
        bf=jnp.stack([f, f]),
        bg=jnp.stack([g, g]),
        bgtd=jnp.stack([gtd, gtd]).astype(P),
        low=zero_i,
        done=jnp.asarray(False),
        insuf_progress=jnp.asarray(False),
    )
    s = jax.lax.while_loop(lambda s: s.phase != _FINISHED, body, init)
    return s.bf[s.low], s.bg[s.low], _slot(s.bt, s.low), s.evals


def _choose(pred: jax.Array, a: tuple, b: tuple) -> tuple:
    """Element-wise ``a if pred else b`` over a (t, f, g, gtd) point."""
    rest = (jnp.where(pred, x, y) for x, y in zip(a[1:], b[1:], strict=True))
    return (select(pred, a[0], b[0]), *rest)


def _place(low: jax.Array, low_val: tuple, high_val: tuple) -> list[tuple]:
    """Slots ``[0, 1]`` holding ``low_val`` at index ``low`` and ``high_val`` at the other."""
    at0 = low == 0
    return [_choose(at0, low_val, high_val), _choose(at0, high_val, low_val)]


_SEQUENTIAL = [False]


@contextlib.contextmanager
def sequential_reductions() -> Iterator[None]:
    """Trace :func:`dot` and :func:`total` as plain left-to-right loops (for tests only).

    torch's ``dot`` (MKL) and ``sum`` and XLA's reductions add in different, context-dependent
    orders, the one difference left between torch's L-BFGS and this one. The parity tests run
    both sides with sequential reductions (torch's patched to the same loop) to check everything
    else bit for bit; it is far too slow for real use.
    """
    _SEQUENTIAL[0] = True
    try:
        yield
    finally:
        _SEQUENTIAL[0] = False


def _sequential_sum(x: jax.Array) -> jax.Array:
    """``x[0] + x[1] + ...`` left to right (NumPy's ``cumsum(x)[-1]``)."""
    return jax.lax.fori_loop(1, x.shape[0], lambda i, acc: acc + x[i], x[0])


def dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a.dot(b)``: torch uses BLAS; the summation order differs (see the module docstring)."""
    if _SEQUENTIAL[0]:
        zero = opaque_zero(jnp.zeros((), jnp.int32) + a.shape[0], a.dtype)
        return _sequential_sum(a * b + zero)  # each product rounded, then summed in order
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)


def total(x: jax.Array) -> jax.Array:
    """``x.sum()``."""
    return _sequential_sum(x) if _SEQUENTIAL[0] else jnp.sum(x)
