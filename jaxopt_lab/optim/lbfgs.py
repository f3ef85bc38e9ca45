r"""L-BFGS, as ``torch.optim.LBFGS``: one ``step(params, state, closure)`` runs torch's whole loop.

torch's L-BFGS is not an update rule but a small solver: each ``step(closure)`` re-evaluates the
objective up to ``max_eval`` times over up to ``max_iter`` iterations. :func:`lbfgs` reproduces
that loop inside ``jax.jit`` (``lax.while_loop`` over iterations and line-search trials, fixed-size
history buffers), with torch's order of operations and roundings:

.. math::

    y &= g_k - g_{k-1}, \quad s = t_{k-1} d_{k-1}, \quad
      \text{store } (y, s, \rho = 1/y^\top s) \text{ only if } y^\top s > 10^{-10}
      \text{ (the oldest pair dropped past history\_size)} \\
    H_{\text{diag}} &= y^\top s / y^\top y \quad \text{(of the newest stored pair)} \\
    q &= -g_k; \quad \text{for } i = \text{newest} \ldots \text{oldest}:
      \alpha_i = \rho_i\, s_i^\top q,\; q \mathrel{+}= -\alpha_i y_i \\
    r &= H_{\text{diag}}\, q; \quad \text{for } i = \text{oldest} \ldots \text{newest}:
      \beta_i = \rho_i\, y_i^\top r,\; r \mathrel{+}= (\alpha_i - \beta_i) s_i; \quad d_k = r \\
    t_k &= \min(1, 1/\lVert g_1 \rVert_1)\, \mathrm{lr} \text{ on the very first iteration, else lr}
      \text{ (or the strong-Wolfe step)}; \quad x_{k+1} = x_k + t_k d_k

(on the very first iteration :math:`d = -g`). The iterations of one step stop when
:math:`\max|g| \le` ``tolerance_grad``, :math:`g^\top d > -` ``tolerance_change``, after
``max_iter`` iterations or ``max_eval`` evaluations, when :math:`\max|t d| \le`
``tolerance_change`` or when the loss changed by less than ``tolerance_change``.

Example, the shape of torch's closure loop (``loss = optimizer.step(closure)``)::

    import jax, jaxopt_lab as jol

    opt = jol.lbfgs(lr=1, history_size=10, line_search_fn="strong_wolfe")
    state = opt.init(params)

    @jax.jit
    def train_step(params, state, batch):
        def closure(p):                      # torch: zero_grad(); loss = f(); loss.backward()
            return jax.value_and_grad(loss_fn)(p, batch)
        return opt.step(params, state, closure)   # -> (params, state, loss at the start)

    for batch in batches:
        params, state, loss = train_step(params, state, batch)

Differences from torch.optim:
  * The params may be any pytree; they are flattened in leaf order (torch's parameter order)
    into one vector, as ``_gather_flat_grad`` does. All leaves must share one dtype (float32 or
    float64). The closure returns ``(loss, grads)`` instead of filling ``.grad``.
  * The history lives in two ``(history_size, n)`` ring buffers allocated up front (torch grows
    lists up to that size): ``2 * history_size * n`` elements from the first step. The two-loop
    recursion visits the pairs in torch's order; :func:`lbfgs_state_to_torch` undoes the ring.
  * torch's dot products and sums come from MKL, ours from XLA: same maths, another summation
    order, so results agree to a few ULPs per reduction rather than bit for bit. With both sides
    summing left to right (``tests/test_lbfgs.py``) they are equal bit for bit: params, loss,
    every state key and the counters, float64 and float32, over whole multi-step runs.
  * torch's line search mixes Python doubles and tensors;
    :mod:`jaxopt_lab.optim.line_search` follows its promotion rules (float32 tensor arithmetic,
    ``float / tensor`` as a reciprocal times the float) and holds the doubles (``lr``, losses,
    Python-float steps and the bounds computed from them) in float64, or with x64 off in
    double-single pairs: 100-step strong-Wolfe runs equal torch's bit for bit in float64 and
    in float32 with x64 on and off (``tests/test_lbfgs.py``).
  * torch raises ``RuntimeError("only 'strong_wolfe' is supported")`` at the first step; here the
    same message is a ``ValueError`` from the constructor. ``history_size`` must be a positive
    int and ``max_iter``/``max_eval`` ints (torch does not check; ``history_size=0`` crashes it).
    Where torch's search crashes (``IndexError`` when a NaN loss meets the curvature condition),
    this one returns that point. A tensor ``lr`` is used as a Python float.
  * NaN/Inf losses and gradients propagate as in torch (neither checks); use
    :func:`~jaxopt_lab.check_finite` on the returned loss to stop on them.

Differences from optax.lbfgs (each row is a test in ``tests/test_lbfgs.py``):

=================  ======================================  ====================================
                   torch / :func:`lbfgs`                   ``optax.lbfgs``
=================  ======================================  ====================================
work per call      up to ``max_iter`` (20) iterations and  one iteration per ``update``
                   ``max_eval`` evaluations per ``step``
first step         ``min(1, 1/||g||_1) * lr``              ``min(1, 1/||g||_2)``
curvature pairs    kept only if ``y.s > 1e-10``            always kept (``rho = 0`` if
                   (``H_diag`` from the newest kept)       ``y.s == 0``)
line search        none (fixed ``lr``) or Lua's lswolfe:   zoom line search (20 trials) by
                   cubic interpolation, trials up to the   default
                   step's ``max_eval``
stopping           ``tolerance_grad``,                     none (the caller's loop)
                   ``tolerance_change``
history            ``history_size=100``                    ``memory_size=10``
=================  ======================================  ====================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab.optim.base import ClosureOptimizer, Params, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    check_grads,
    check_number,
    check_params,
    check_range,
    is_schedule,
    require,
)
from jaxopt_lab.optim.line_search import Num, TorchArith, select, strong_wolfe, total
from jaxopt_lab.optim.line_search import dot as _dot


class LBFGSState(NamedTuple):
    """torch's L-BFGS state (its keys), plus ``count`` and the ring buffer's bookkeeping.

    ``old_dirs``/``old_stps``/``ro`` are ring buffers of ``history_size`` rows: logical entry ``i``
    (0 = oldest, as in torch's lists) is row ``(start + i) % history_size``, ``num_old`` rows are
    in use. ``t`` and ``prev_loss`` are Python floats in torch: float64 with x64 on, else float32
    (a float32 loss is exact; ``t``'s double rounded once, all the next step uses: ``d.mul(t)``).
    """

    count: jax.Array  # int32: step() calls made (what schedules see)
    func_evals: jax.Array  # int32
    n_iter: jax.Array  # int32
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    H_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array
    start: jax.Array  # int32
    num_old: jax.Array  # int32


Closure = Callable[[Params], tuple[jax.Array, Params]]


class _Iter(NamedTuple):
    """The carry of torch's ``while n_iter < max_iter`` loop."""

    x: jax.Array
    g: jax.Array  # flat_grad
    loss: jax.Array  # wide
    d: jax.Array
    t: Num
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    start: jax.Array
    num_old: jax.Array
    H_diag: jax.Array
    prev_g: jax.Array
    prev_loss: jax.Array
    state_n_iter: jax.Array
    n_iter: jax.Array
    current_evals: jax.Array
    func_evals: jax.Array
    opt_cond: jax.Array
    done: jax.Array


def _wide_dtype() -> Any:
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _check_lbfgs_params(params: Params) -> tuple[list[jax.Array], Any, Any]:
    masked = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    require(
        not any(isinstance(x, optax.MaskedNode) for x in masked),
        "LBFGS doesn't support per-parameter options (parameter groups)",
    )
    check_params(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    dtypes = sorted({str(jnp.dtype(x.dtype)) for x in leaves})
    require(
        len(dtypes) == 1,
        f"lbfgs needs all params of one dtype (torch concatenates them into one flat vector), "
        f"got {', '.join(dtypes)}",
        TypeError,
    )
    dtype = jnp.dtype(leaves[0].dtype)
    require(
        dtype in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)),
        f"lbfgs supports float32 and float64 params, got {dtype}",
        TypeError,
    )
    return leaves, treedef, dtype


def _flatten(leaves: list[jax.Array], dtype: Any) -> jax.Array:
    return jnp.concatenate([jnp.ravel(jnp.asarray(x, dtype)) for x in leaves])


def _unflatten(flat: jax.Array, treedef: Any, like: list[jax.Array]) -> Params:
    out, offset = [], 0
    for leaf in like:
        size = int(np.prod(np.shape(leaf), dtype=np.int64))
        out.append(flat[offset : offset + size].reshape(np.shape(leaf)))
        offset += size
    return jax.tree_util.tree_unflatten(treedef, out)


def _check_closure_result(result: Any, params: Params) -> tuple[jax.Array, Params]:
    require(
        isinstance(result, (tuple, list)) and len(result) == 2,
        "the lbfgs closure must return (loss, grads), as jax.value_and_grad(f) does; got "
        f"{type(result).__name__}",
        TypeError,
    )
    loss, grads = result
    require(
        np.shape(loss) == () and jnp.issubdtype(jnp.result_type(loss), jnp.floating),
        "the lbfgs closure's loss must be a real floating-point scalar, got shape "
        f"{np.shape(loss)} and dtype {jnp.result_type(loss)}",
        TypeError,
    )
    check_grads(params, grads)
    return loss, grads


def _two_loop(
    g: jax.Array,
    old_dirs: jax.Array,
    old_stps: jax.Array,
    ro: jax.Array,
    start: jax.Array,
    num_old: jax.Array,
    H_diag: jax.Array,
    zero: jax.Array,
) -> jax.Array:
    """torch's two-loop recursion, newest pair first, then oldest first."""
    m = ro.shape[0]

    def backward(k, carry):
        q, al = carry
        i = num_old - 1 - k
        j = (start + i) % m
        a = _dot(old_stps[j], q) * ro[j] + zero  # al[i] = old_stps[i].dot(q) * ro[i]
        return q + (-a) * old_dirs[j], al.at[i].set(a)  # q.add_(old_dirs[i], alpha=-al[i])

    q, al = jax.lax.fori_loop(0, num_old, backward, (-g, jnp.zeros_like(ro)))
    r = q * H_diag + zero  # d = r = torch.mul(q, H_diag)

    def forward(i, r):
        j = (start + i) % m
        be = _dot(old_dirs[j], r) * ro[j] + zero  # be_i = old_dirs[i].dot(r) * ro[i]
        return r + (al[i] - be) * old_stps[j]  # r.add_(old_stps[i], alpha=al[i] - be_i)

    return jax.lax.fori_loop(0, num_old, forward, r)


def _push(c: _Iter, y: jax.Array, s: jax.Array, ys: jax.Array) -> _Iter:
    """Append (y, s, 1/ys); when full, overwrite the oldest (torch pops index 0)."""
    m = c.ro.shape[0]
    full = c.num_old == m
    row = jnp.where(full, c.start, (c.start + c.num_old) % m)
    return c._replace(
        old_dirs=jax.lax.dynamic_update_index_in_dim(c.old_dirs, y, row, 0),
        old_stps=jax.lax.dynamic_update_index_in_dim(c.old_stps, s, row, 0),
        ro=c.ro.at[row].set(1 / ys),  # 1.0 / ys == ys.reciprocal() * 1.0
        start=jnp.where(full, (c.start + 1) % m, c.start),
        num_old=jnp.minimum(c.num_old + 1, m),
    )


def lbfgs(
    lr: ScalarOrSchedule = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> ClosureOptimizer:
    """L-BFGS with torch's semantics: ``params, state, loss = opt.step(params, state, closure)``.

    Args:
      lr: learning rate (number or schedule ``count -> value``, ``count`` = steps taken).
      max_iter: maximal number of iterations per ``step``.
      max_eval: maximal number of closure evaluations per ``step`` (default
        ``max_iter * 5 // 4``; so ``max_iter=1`` allows one evaluation, and a strong-Wolfe
        search then returns ``t = 0`` if its first trial fails, as torch's does).
      tolerance_grad: stop when ``max|g| <= tolerance_grad``.
      tolerance_change: stop on a change in loss or a step ``max|t d|`` below it; also the bound
        on ``g . d``. The strong-Wolfe search keeps torch's own ``1e-9``.
      history_size: number of curvature pairs kept.
      line_search_fn: ``None`` (fixed step ``lr``) or ``"strong_wolfe"``.

    Returns:
      A :class:`~jaxopt_lab.ClosureOptimizer` with :class:`LBFGSState`: ``init(params)`` and
      ``step(params, state, closure) -> (params, state, loss)``, where ``closure(params)``
      returns ``(loss, grads)`` (e.g. ``jax.value_and_grad(f)``) and ``loss`` is the closure's
      first value, as torch's ``step`` returns. ``update`` raises: L-BFGS needs a closure.
    """
    if isinstance(lr, (jax.Array, np.ndarray)) and np.size(lr) != 1:
        raise ValueError("Tensor lr must be 1-element")
    check_number(lr, "lr")
    check_range(lr, lambda v: v >= 0.0, f"Invalid learning rate: {lr}")
    for name, value in (("max_iter", max_iter), ("history_size", history_size)):
        require(
            isinstance(value, (int, np.integer)) and not isinstance(value, bool),
            f"{name} must be an int, got {value!r}",
            TypeError,
        )
    require(history_size >= 1, f"history_size must be at least 1, got {history_size}")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    require(
        isinstance(max_eval, (int, np.integer)) and not isinstance(max_eval, bool),
        f"max_eval must be an int or None, got {max_eval!r}",
        TypeError,
    )
    check_number(tolerance_grad, "tolerance_grad")
    check_number(tolerance_change, "tolerance_change")
    require(line_search_fn in (None, "strong_wolfe"), "only 'strong_wolfe' is supported")
    max_iter, max_eval, history_size = int(max_iter), int(max_eval), int(history_size)

    def init(params: Params) -> LBFGSState:
        leaves, _, dtype = _check_lbfgs_params(params)
        n = sum(int(np.size(x)) for x in leaves)
        wide = _wide_dtype()
        zero_i = jnp.zeros((), jnp.int32)
        return LBFGSState(
            count=zero_i,
            func_evals=zero_i,
            n_iter=zero_i,
            d=jnp.zeros((n,), dtype),
            t=jnp.zeros((), wide),
            old_dirs=jnp.zeros((history_size, n), dtype),
            old_stps=jnp.zeros((history_size, n), dtype),
            ro=jnp.zeros((history_size,), dtype),
            H_diag=jnp.ones((), dtype),
            prev_flat_grad=jnp.zeros((n,), dtype),
            prev_loss=jnp.zeros((), wide),
            start=zero_i,
            num_old=zero_i,
        )

    def step(
        params: Params, state: LBFGSState, closure: Closure
    ) -> tuple[Params, LBFGSState, jax.Array]:
        require(
            isinstance(state, LBFGSState),
            f"lbfgs.step got a {type(state).__name__} state; it needs the LBFGSState made by "
            "lbfgs(...).init(params)",
            TypeError,
        )
        require(callable(closure), "lbfgs.step needs a closure params -> (loss, grads)", TypeError)
        leaves, treedef, P = _check_lbfgs_params(params)
        n = sum(int(np.size(x)) for x in leaves)
        require(
            state.d.shape == (n,)
            and state.old_dirs.shape == (history_size, n)
            and state.d.dtype == P,
            f"lbfgs state was made for {state.d.shape[0]} {state.d.dtype} params with "
            f"history_size={state.old_dirs.shape[0]}; these params have {n} {P} elements and "
            f"history_size={history_size}",
        )
        W = state.t.dtype
        A = TorchArith(P, W, state.count)
        zero = A.zp

        def evaluate(x: jax.Array) -> tuple[jax.Array, jax.Array]:
            loss, grads = _check_closure_result(closure(_unflatten(x, treedef, leaves)), params)
            return jnp.asarray(loss).astype(W), _flatten(jax.tree_util.tree_leaves(grads), P)

        def optimal(g: jax.Array) -> jax.Array:
            return jnp.max(jnp.abs(g)) <= A.p(tolerance_grad)

        lrN = A.py(_lr_value(lr, state.count, A.pairs))

        # evaluate initial f(x) and df/dx
        orig_loss, grads = _check_closure_result(closure(params), params)
        x0 = _flatten(leaves, P)
        g0 = _flatten(jax.tree_util.tree_leaves(grads), P)
        zero_i = jnp.zeros((), jnp.int32)
        opt_cond = optimal(g0)

        def body(c: _Iter) -> _Iter:
            n_iter = c.n_iter + 1
            state_n_iter = c.state_n_iter + 1
            first = state_n_iter == 1
            # -- direction: update the memory, then the two-loop recursion --------------------
            y = c.g - c.prev_g  # flat_grad.sub(prev_flat_grad)
            s = c.d * A.p(c.t) + zero  # d.mul(t)
            ys = _dot(y, s)
            push = ~first & (ys > A.p(1e-10))
            c = c._replace(
                start=jnp.where(first, 0, c.start), num_old=jnp.where(first, 0, c.num_old)
            )
            c = jax.lax.cond(push, _push, lambda c_, *_: c_, c, y, s, ys)
            H_diag = jnp.where(first, jnp.ones((), P), jnp.where(push, ys / _dot(y, y), c.H_diag))
            d = _two_loop(c.g, c.old_dirs, c.old_stps, c.ro, c.start, c.num_old, H_diag, zero)
            # -- step length ----------------------------------------------------------------
            # first ever iteration: min(1.0, 1.0 / flat_grad.abs().sum()) * lr; then lr
            scale = A.min(1.0, A.div(1.0, A.ten(total(jnp.abs(c.g)))))
            t = select(first, A.mul(scale, lrN), lrN)
            gtd = _dot(c.g, d)
            c = c._replace(
                d=d,
                t=t,
                H_diag=H_diag,
                prev_g=c.g,
                prev_loss=c.loss,
                n_iter=n_iter,
                state_n_iter=state_n_iter,
            )
            stalled = A.gt(A.ten(gtd), -tolerance_change)  # directional derivative too small
            return jax.lax.cond(
                stalled, lambda c_, _: c_._replace(done=jnp.asarray(True)), advance, c, gtd
            )

        def advance(c: _Iter, gtd: jax.Array) -> _Iter:
            if line_search_fn == "strong_wolfe":
                loss, g, t, ls_evals = strong_wolfe(
                    A, evaluate, c.x, c.t, c.d, c.loss, c.g, gtd, max_eval - c.current_evals
                )
                x = c.x + A.p(t) * c.d  # self._add_grad(t, d): one FMA
                opt_cond = optimal(g)
            else:
                t = c.t
                x = c.x + A.p(t) * c.d
                # re-evaluate only if not in the last iteration

                def reevaluate() -> tuple[jax.Array, ...]:
                    loss_, g_ = evaluate(x)
                    return loss_, g_, optimal(g_), jnp.ones((), jnp.int32)

                loss, g, opt_cond, ls_evals = jax.lax.cond(
                    c.n_iter != max_iter, reevaluate, lambda: (c.loss, c.g, c.opt_cond, zero_i)
                )
            current_evals = c.current_evals + ls_evals
            # -- check conditions -------------------------------------------------------------
            step_small = jnp.max(jnp.abs(c.d * A.p(t) + zero)) <= A.p(tolerance_change)
            done = (
                (c.n_iter == max_iter)
                | (current_evals >= max_eval)
                | opt_cond
                | step_small
                | A.lt(A.abs(A.sub(A.py(loss), A.py(c.prev_loss))), tolerance_change)
            )
            return c._replace(
                x=x,
                g=g,
                loss=loss,
                t=t,
                current_evals=current_evals,
                func_evals=c.func_evals + ls_evals,
                opt_cond=opt_cond,
                done=done,
            )

        init_carry = _Iter(
            x=x0,
            g=g0,
            loss=jnp.asarray(orig_loss).astype(W),
            d=state.d,
            t=A.py(state.t),  # only its rounding to the params' dtype is used (d.mul(t))
            old_dirs=state.old_dirs,
            old_stps=state.old_stps,
            ro=state.ro,
            start=state.start,
            num_old=state.num_old,
            H_diag=state.H_diag,
            prev_g=state.prev_flat_grad,
            prev_loss=state.prev_loss,
            state_n_iter=state.n_iter,
            n_iter=zero_i,
            current_evals=jnp.ones((), jnp.int32),
            func_evals=state.func_evals + 1,
            opt_cond=opt_cond,
            done=opt_cond,
        )
        c = jax.lax.while_loop(lambda c: ~c.done & (c.n_iter < max_iter), body, init_carry)
        new_state = LBFGSState(
            count=state.count + 1,
            func_evals=c.func_evals,
            n_iter=c.state_n_iter,
            d=c.d,
            t=c.t.v,
            old_dirs=c.old_dirs,
            old_stps=c.old_stps,
            ro=c.ro,
            H_diag=c.H_diag,
            prev_flat_grad=c.prev_g,
            prev_loss=c.prev_loss,
            start=c.start,
            num_old=c.num_old,
        )
        return _unflatten(c.x, treedef, leaves), new_state, orig_loss

    return ClosureOptimizer(init, step, "lbfgs")


def _lr_value(lr: ScalarOrSchedule, count: jax.Array, pairs: bool) -> Any:
    """``lr`` now: a float, or a schedule's value (its exact ``double_value`` if held in pairs)."""
    if not is_schedule(lr):
        return float(lr)
    return lr.double_value(count) if pairs and hasattr(lr, "double_value") else lr(count)


# ---------------------------------------------------------------------------------------------
# Hand-off to and from torch's state (``opt.state[params[0]]`` / ``state_dict()["state"][0]``)


def lbfgs_state_to_torch(state: LBFGSState) -> dict[str, Any]:
    """torch's LBFGS state entry for this state (load with ``{"state": {0: entry}, ...}``).

    An optimizer that never iterated has only ``func_evals``/``n_iter`` (none at all before its
    first step), as in torch. ``t`` and ``prev_loss`` come back as Python floats, ``H_diag`` and
    ``ro`` as 0-dim tensors, the history as lists oldest first; torch's scratch list ``al`` is
    left out (torch recreates it).
    """
    import torch

    count, n_iter = int(state.count), int(state.n_iter)
    if count == 0 and n_iter == 0 and int(state.func_evals) == 0:
        return {}
    entry: dict[str, Any] = {"func_evals": int(state.func_evals), "n_iter": n_iter}
    if n_iter == 0:
        return entry
    m = state.ro.shape[0]
    rows = [(int(state.start) + i) % m for i in range(int(state.num_old))]

    def tensor(x: Any) -> Any:
        return torch.from_numpy(np.array(x))

    entry.update(
        d=tensor(state.d),
        t=float(state.t),
        old_dirs=[tensor(state.old_dirs[j]) for j in rows],
        old_stps=[tensor(state.old_stps[j]) for j in rows],
        ro=[tensor(state.ro[j]) for j in rows],
        H_diag=tensor(state.H_diag),
        prev_flat_grad=tensor(state.prev_flat_grad),
        prev_loss=float(state.prev_loss),
    )
    return entry


def lbfgs_state_from_torch(
    source: Any, params: Params, history_size: int = 100, count: int | None = None
) -> LBFGSState:
    """An :class:`LBFGSState` from a torch ``LBFGS``, its ``state_dict()`` or its state entry.

    ``params`` gives the layout (as for :func:`lbfgs`'s ``init``); ``history_size`` must be the
    optimizer's. torch keeps no count of ``step`` calls: ``count`` defaults to 0 (pass it when
    ``lr`` is a schedule).
    """
    import torch

    if hasattr(source, "state_dict") and hasattr(source, "param_groups"):
        source = source.state_dict()
    if isinstance(source, Mapping) and "state" in source and "param_groups" in source:
        states = source["state"]
        source = states[min(states)] if states else {}
    require(isinstance(source, Mapping), f"expected torch's LBFGS state, got {type(source)}")
    template = lbfgs(history_size=history_size).init(params)
    P, W = template.d.dtype, template.t.dtype

    def array(x: Any, dtype: Any) -> jax.Array:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return jnp.asarray(np.asarray(x), dtype)

    count_ = jnp.asarray(count if count is not None else 0, jnp.int32)
    func_evals = jnp.asarray(source.get("func_evals", 0), jnp.int32)
    n_iter = jnp.asarray(source.get("n_iter", 0), jnp.int32)
    if "d" not in source or int(n_iter) == 0:
        return template._replace(count=count_, func_evals=func_evals, n_iter=n_iter)
    old_dirs, old_stps, ro = source["old_dirs"], source["old_stps"], source["ro"]
    k = len(old_dirs)
    require(
        k <= history_size,
        f"torch's LBFGS state holds {k} curvature pairs, more than history_size={history_size}",
    )
    n = template.d.shape[0]
    dirs = np.zeros((history_size, n), P)
    stps = np.zeros((history_size, n), P)
    ros = np.zeros((history_size,), P)
    for i in range(k):
        dirs[i], stps[i], ros[i] = array(old_dirs[i], P), array(old_stps[i], P), array(ro[i], P)
    d = array(source["d"], P)
    require(d.shape == (n,), f"torch's LBFGS state has d of shape {d.shape}; params have {n}")
    return LBFGSState(
        count=count_,
        func_evals=func_evals,
        n_iter=n_iter,
        d=d,
        t=array(source["t"], W),
        old_dirs=jnp.asarray(dirs),
        old_stps=jnp.asarray(stps),
        ro=jnp.asarray(ros),
        H_diag=array(source["H_diag"], P),
        prev_flat_grad=array(source["prev_flat_grad"], P),
        prev_loss=array(source["prev_loss"], W),
        start=jnp.zeros((), jnp.int32),
        num_old=jnp.asarray(k, jnp.int32),
    )


__all__ = ["LBFGSState", "lbfgs", "lbfgs_state_from_torch", "lbfgs_state_to_torch"]
