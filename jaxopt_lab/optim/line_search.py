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

The Python doubles are held in the *wide* dtype: float64 when x64 is enabled, else float32 (then
the double-only steps of the search round to float32, a documented difference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_lab.optim.kernels import opaque_zero


class Num(NamedTuple):
    """A torch-side scalar: its value (wide dtype) and whether torch holds it as a tensor."""

    v: jax.Array
    tensor: jax.Array


Operand = Num | jax.Array | float | int


class TorchArith:
    """Scalar arithmetic with torch's Python-float / 0-dim-tensor promotion rules.

    ``P`` is the tensors' dtype (the params'), ``W`` the dtype standing in for Python doubles.
    Products get an opaque ``-0.0`` added so that XLA never contracts them into a following
    addition (torch rounds every Python and tensor operation on its own).
    """

    def __init__(self, tensor_dtype: Any, wide_dtype: Any, anchor: jax.Array) -> None:
        self.P = jnp.dtype(tensor_dtype)
        self.W = jnp.dtype(wide_dtype)
        self.zp = opaque_zero(anchor, self.P)
        self.zw = opaque_zero(anchor, self.W)

    # -- construction -----------------------------------------------------------------------

    def py(self, x: Any) -> Num:
        """A Python float (a constant, the lr, a loss)."""
        return Num(jnp.asarray(x, self.W), jnp.asarray(False))

    def ten(self, x: jax.Array) -> Num:
        """A 0-dim tensor of the params' dtype."""
        return Num(jnp.asarray(x, self.P).astype(self.W), jnp.asarray(True))

    def lift(self, x: Operand) -> Num:
        if isinstance(x, Num):
            return x
        if isinstance(x, (int, float)):
            return self.py(x)
        return self.ten(x)

    def p(self, x: Operand) -> jax.Array:
        """The value as the tensor dtype (how torch hands a Python scalar to a kernel)."""
        return self.lift(x).v.astype(self.P)

    # -- arithmetic -------------------------------------------------------------------------

    def _binary(
        self, a: Operand, b: Operand, op: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    ) -> Num:
        a, b = self.lift(a), self.lift(b)
        is_tensor = a.tensor | b.tensor
        as_tensor = op(a.v.astype(self.P), b.v.astype(self.P), self.zp).astype(self.W)
        as_python = op(a.v, b.v, self.zw)
        return Num(jnp.where(is_tensor, as_tensor, as_python), is_tensor)

    def add(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, lambda x, y, z: x + y)

    def sub(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, lambda x, y, z: x - y)

    def mul(self, a: Operand, b: Operand) -> Num:
        return self._binary(a, b, lambda x, y, z: x * y + z)

    def div(self, a: Operand, b: Operand) -> Num:
        """``a / b``; a Python ``a`` over a tensor ``b`` is ``b.reciprocal() * a``."""
        a, b = self.lift(a), self.lift(b)
        out = self._binary(a, b, lambda x, y, z: x / y)
        pa, pb = a.v.astype(self.P), b.v.astype(self.P)
        rdiv = ((1 / pb + self.zp) * pa + self.zp).astype(self.W)
        return Num(jnp.where(b.tensor & ~a.tensor, rdiv, out.v), out.tensor)

    def neg(self, a: Operand) -> Num:
        a = self.lift(a)
        return Num(-a.v, a.tensor)

    def abs(self, a: Operand) -> Num:
        a = self.lift(a)
        return Num(jnp.abs(a.v), a.tensor)

    # -- comparisons (in the tensor dtype when a tensor is involved) ------------------------

    def _compare(self, a: Operand, b: Operand, op: Callable[..., jax.Array]) -> jax.Array:
        a, b = self.lift(a), self.lift(b)
        as_tensor = op(a.v.astype(self.P), b.v.astype(self.P))
        return jnp.where(a.tensor | b.tensor, as_tensor, op(a.v, b.v))

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
    return Num(jnp.where(pred, a.v, b.v), jnp.where(pred, a.tensor, b.tensor))


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
    return Num(b.v[i], b.tensor[i])


def _pair(a: Num, b: Num) -> Num:
    return Num(jnp.stack([a.v, b.v]), jnp.stack([a.tensor, b.tensor]))


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
