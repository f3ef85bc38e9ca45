"""``torch.optim.swa_utils`` as pure JAX functions: weight averaging, SWALR and ``update_bn``.

=================================================  ==============================================
torch.optim.swa_utils                              jaxopt_lab.optim.swa_utils
=================================================  ==============================================
``AveragedModel(model, device=None, avg_fn=None,   ``swa = averaged_model(avg_fn=None,
multi_avg_fn=None, use_buffers=False)``            multi_avg_fn=None, use_buffers=False)``
  (a deep copy of ``model``, ``n_averaged = 0``)   ``state = swa.init(params, buffers=None)``
``swa_model.update_parameters(model)``             ``state = swa.update(state, params, buffers)``
``swa_model.n_averaged`` (int64 buffer)            ``state.n_averaged`` (int32 scalar)
``swa_model.module.parameters()``, ``.buffers()``  ``state.params``, ``state.buffers``
``get_swa_avg_fn()``, ``get_ema_avg_fn(decay)``    same names: per-leaf ``avg_fn``
``get_swa_multi_avg_fn()``,                        same names: ``multi_avg_fn`` over a list of
``get_ema_multi_avg_fn(decay)``                    leaves, *returning* the new list
``SWALR(optimizer, swa_lr, anneal_epochs=10,       ``swalr(lr, swa_lr, anneal_epochs=10,
anneal_strategy="cos", last_epoch=-1)``            anneal_strategy="cos")``, an ``LRSchedule``
``update_bn(loader, model, device=None)``          ``update_bn(loader, model, variables,
                                                   **apply_kwargs)`` for a Flax linen model
=================================================  ==============================================

For a Flax model, ``params`` is ``variables["params"]`` and ``buffers`` is
``variables["batch_stats"]`` (torch's BatchNorm running statistics are buffers)::

    swa = jol.swa_utils.averaged_model()
    state = swa.init(variables["params"], variables["batch_stats"])
    update = jax.jit(swa.update)
    ...  # train; then once per epoch after swa_start:
    state = update(state, variables["params"], variables["batch_stats"])
    averaged = {"params": state.params, "batch_stats": state.buffers}
    averaged = jol.swa_utils.update_bn(loader, model, averaged, train=True)

Every update is torch's CPU arithmetic, op for op with its roundings
(:mod:`jaxopt_lab.optim.kernels`): float32 results equal torch's bit for bit.

Length: one module for one torch module, imported by path (``jol.swa_utils``, like
``torch.optim.swa_utils``); its three parts -- averaging (the functions and ``AveragedModel``),
``swalr`` and ``update_bn`` -- are each under 300 lines and share the table above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.optim import kernels as K
from jaxopt_lab.schedules.core import DEFAULT_HORIZON, LRSchedule, format_call
from jaxopt_lab.schedules.replay import as_float, recursive

__all__ = [
    "AveragedModel",
    "AveragedModelState",
    "averaged_model",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "swalr",
    "update_bn",
]

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``avg_fn(averaged_leaf, model_leaf, n_averaged) -> new averaged leaf``."""

MultiAvgFn = Callable[[list[jax.Array], list[jax.Array], jax.Array], Sequence[jax.Array]]
"""``multi_avg_fn(averaged_leaves, model_leaves, n_averaged) -> new averaged leaves`` (one dtype).

torch's multi_avg_fn updates its first list in place and returns None; a JAX one returns it."""


# --------------------------------------------------------------------------------------------
# Averaging functions. Float leaves follow torch's float ops kernel by kernel; integer leaves
# (buffers such as a step counter, averaged with use_buffers=True) compute in float32 -- torch's
# default dtype, which int64 tensors promote to -- and are truncated back, as ``copy_`` does.


def _is_float(x: jax.Array) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


def _zero(n: jax.Array, x: jax.Array) -> jax.Array:
    """The runtime ``-0.0`` (see ``_kernels.opaque_zero``) in ``x``'s math dtype."""
    return K.opaque_zero(n, K.math_dtype(x.dtype))


def _to_int(x: jax.Array, like: jax.Array) -> jax.Array:
    """``int_tensor.copy_(float_tensor)``: truncation toward zero."""
    return jnp.trunc(x).astype(like.dtype)


def _check_decay(decay: float) -> None:
    # torch's check, verbatim (a NaN decay passes it, as in torch)
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def get_swa_avg_fn() -> AvgFn:
    """Equal averaging of one leaf: ``averaged + (current - averaged) / (n_averaged + 1)``.

    torch's ``AveragedModel`` uses this per tensor on CPU when no averaging function is given
    (on CUDA it takes :func:`get_swa_multi_avg_fn`). Each of the three ops rounds on its own:
    ``sub``, a true division by the float ``n_averaged + 1``, ``add``.
    """

    def swa_update(averaged: jax.Array, current: jax.Array, num_averaged: jax.Array) -> jax.Array:
        if not _is_float(averaged):
            # int64 - int64, then a true division (float32 result), then int + float32.
            diff = (current - averaged).astype(jnp.float32)
            zero = K.opaque_zero(num_averaged, jnp.float32)
            step = K.div(diff, (num_averaged + 1).astype(jnp.float32), zero)
            return _to_int(averaged.astype(jnp.float32) + step, averaged)
        math_dtype = K.math_dtype(averaged.dtype)
        # torch: current_param - averaged_param (one rounding, stored in the leaf dtype)
        diff = K.add(current, averaged, jnp.asarray(-1.0, math_dtype))
        # torch: ... / (num_averaged + 1), an int64 0-dim divisor: a true division
        step = K.div(diff, (num_averaged + 1).astype(math_dtype), _zero(num_averaged, averaged))
        # torch: averaged_param + ...
        return K.add(averaged, step, jnp.asarray(1.0, math_dtype))

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """Exponential moving average of one leaf: ``decay * ema + (1 - decay) * current``.

    torch rounds both products and the sum separately (three kernels, no fused multiply-add),
    with ``decay`` and ``1 - decay`` (a Python double) rounded to the leaf's math dtype.
    """
    _check_decay(decay)

    def ema_update(ema: jax.Array, current: jax.Array, num_averaged: jax.Array) -> jax.Array:
        if not _is_float(ema):
            # int64 * python float -> float32 (torch's default dtype), then truncated back.
            zero = K.opaque_zero(num_averaged, jnp.float32)
            a = K.mul(ema.astype(jnp.float32), jnp.float32(decay), zero)
            b = K.mul(current.astype(jnp.float32), jnp.float32(1 - decay), zero)
            return _to_int(a + b, ema)
        math_dtype = K.math_dtype(ema.dtype)
        zero = _zero(num_averaged, ema)
        a = K.mul(ema, jnp.asarray(decay, math_dtype), zero)  # torch: decay * ema_param
        b = K.mul(current, jnp.asarray(1 - decay, math_dtype), zero)  # (1 - decay) * current
        return K.add(a, b, jnp.asarray(1.0, math_dtype))  # torch: ... + ...

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """Equal averaging as torch's foreach path: ``lerp(averaged, current, 1 / (n + 1))``.

    torch computes the weight as ``1 / (n_averaged + 1)`` on its int64 tensor, i.e. a float32
    reciprocal (torch's default dtype), and passes it to ``_foreach_lerp_``: the weight is
    float32-rounded for *every* leaf dtype, float64 included (float64 results are then up to
    ~1e-8 relative away from the exact mean; reproduced here). Integer leaves raise torch's
    error (its integer branch calls ``addcdiv``, which refuses integers).
    """

    def swa_update(
        averaged: list[jax.Array], current: list[jax.Array], num_averaged: jax.Array
    ) -> list[jax.Array]:
        if not _is_float(averaged[0]):
            raise RuntimeError(
                "Integer division with addcdiv is no longer supported, and in a future  release "
                "addcdiv will perform a true division of tensor1 and tensor2. (torch's "
                "get_swa_multi_avg_fn on integer tensors)"
            )
        one = jnp.float32(1.0)
        weight = one / (num_averaged + 1).astype(jnp.float32)  # torch: 1 / (n + 1), float32
        return [
            K.lerp(a, c, weight.astype(K.math_dtype(a.dtype)))
            for a, c in zip(averaged, current, strict=True)
        ]

    return swa_update


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """Exponential moving average as torch's foreach path: ``lerp(ema, current, 1 - decay)``.

    The weight ``1 - decay`` is a Python double rounded to the leaf's math dtype; ``lerp`` has
    ATen's two branches (exact at both ends). Integer leaves: ``ema * decay + current *
    (1 - decay)`` in float32, truncated back (torch's fallback).
    """
    _check_decay(decay)
    int_update = get_ema_avg_fn(decay)

    def ema_update(
        ema: list[jax.Array], current: list[jax.Array], num_averaged: jax.Array
    ) -> list[jax.Array]:
        if not _is_float(ema[0]):
            return [int_update(e, c, num_averaged) for e, c in zip(ema, current, strict=True)]
        return [K.lerp(e, c, 1 - decay) for e, c in zip(ema, current, strict=True)]

    return ema_update


# --------------------------------------------------------------------------------------------
# AveragedModel.


class AveragedModelState(NamedTuple):
    """torch's ``AveragedModel`` buffers and module tensors.

    Attributes:
        n_averaged: number of models averaged so far, an int32 scalar (torch: an int64 buffer;
            int32 overflows after 2**31 - 1 updates).
        params: the averaged params (torch: ``swa_model.module.parameters()``).
        buffers: the averaged (``use_buffers=True``) or copied (``False``) buffers, e.g. Flax
            ``batch_stats`` (torch: ``swa_model.module.buffers()``); ``None`` without buffers.
    """

    n_averaged: jax.Array
    params: Any
    buffers: Any


class AveragedModel(NamedTuple):
    """``init(params, buffers=None) -> state``; ``update(state, params, buffers=None) -> state``.

    Both pure and jittable (``update`` is torch's ``update_parameters(model)``).
    """

    init: Callable[..., AveragedModelState]
    update: Callable[..., AveragedModelState]


def _check_leaves(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not (
            jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
        ):
            raise TypeError(
                f"{what} leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                "averaged_model averages real floating-point or integer arrays"
            )


def _check_like(tree: Any, like: Any, what: str) -> None:
    """``tree`` (the model's) must mirror ``like`` (the averaged copy): structure, shape, dtype."""
    t_def, l_def = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(like)
    if t_def != l_def:
        raise ValueError(
            f"{what} tree structure {t_def} does not match the averaged {what} structure {l_def}"
        )
    for (path, leaf), ref in zip(
        jax.tree_util.tree_leaves_with_path(tree), jax.tree_util.tree_leaves(like), strict=True
    ):
        name = jax.tree_util.keystr(path) or "<root>"
        if np.shape(leaf) != np.shape(ref):
            raise ValueError(
                f"{what} leaf {name} has shape {np.shape(leaf)}, the averaged leaf has "
                f"{np.shape(ref)}"
            )
        if jnp.result_type(leaf) != jnp.result_type(ref):
            raise TypeError(
                f"{what} leaf {name} has dtype {jnp.result_type(leaf)}, the averaged leaf has "
                f"{jnp.result_type(ref)}"
            )


def _by_dtype(
    averaged: list[jax.Array], current: list[jax.Array], n: jax.Array, fn: MultiAvgFn
) -> list[jax.Array]:
    """Call ``fn`` once per dtype group (torch groups by device and dtype), in leaf order."""
    groups: dict[Any, list[int]] = {}
    for i, leaf in enumerate(averaged):
        groups.setdefault(jnp.result_type(leaf), []).append(i)
    out: list[Any] = [None] * len(averaged)
    for idx in groups.values():
        new = list(fn([averaged[i] for i in idx], [current[i] for i in idx], n))
        if len(new) != len(idx):
            raise ValueError(f"multi_avg_fn returned {len(new)} arrays for {len(idx)} leaves")
        for i, leaf in zip(idx, new, strict=True):
            out[i] = leaf
    return out


def averaged_model(
    avg_fn: AvgFn | None = None,
    multi_avg_fn: MultiAvgFn | None = None,
    use_buffers: bool = False,
) -> AveragedModel:
    r"""Running averages of params (and buffers): torch's ``AveragedModel`` as pure functions.

    With :math:`n` = ``n_averaged`` before the update, :math:`\bar\theta` the averaged and
    :math:`\theta` the model's params:

    .. math::

        \bar\theta \leftarrow \theta \text{ if } n = 0, \text{ else }
            \text{avg\_fn}(\bar\theta, \theta, n); \qquad n \leftarrow n + 1

    The default (both functions ``None``) is the equal-weight SWA average
    :math:`\bar\theta + (\theta - \bar\theta)/(n + 1)`, computed per leaf as torch does on CPU
    (:func:`get_swa_avg_fn`). EMA: ``multi_avg_fn=get_ema_multi_avg_fn(decay)``.

    Args:
      avg_fn: ``avg_fn(averaged_leaf, model_leaf, n_averaged) -> leaf``, applied to every leaf
        (``n_averaged`` is the int32 scalar; the result is cast to the leaf dtype, as
        torch's ``copy_`` does).
      multi_avg_fn: ``multi_avg_fn(averaged_leaves, model_leaves, n_averaged) -> leaves``,
        called once per leaf dtype with the leaves of that dtype (params first, then
        buffers, in tree order), returning the new leaves.
      use_buffers: average the buffers too; if ``False`` they are copied from the model at
        every update (torch: "keep the buffers in sync with the source model").

    Returns:
      An :class:`AveragedModel` ``(init, update)``:
      ``init(params, buffers=None)`` copies them with ``n_averaged = 0``;
      ``update(state, params, buffers=None)`` is ``update_parameters(model)``. ``buffers``
      must be given to ``update`` exactly when it was given to ``init``.

    Differences from torch.optim.swa_utils:
      * no module, no ``device``; ``n_averaged`` is int32 (torch: int64).
      * the default average is torch's CPU path; on CUDA torch uses
        :func:`get_swa_multi_avg_fn` (a float32-rounded lerp weight): pass it to get that.
      * a custom ``multi_avg_fn`` returns the new leaves (JAX arrays are immutable).
      * params/buffers whose structure, shapes or dtypes differ from the averaged copy raise
        (torch zips them without checks).
    """
    if avg_fn is not None and multi_avg_fn is not None:
        raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")

    def average(averaged: list[jax.Array], current: list[jax.Array], n: jax.Array) -> list[Any]:
        if multi_avg_fn is not None:
            new = _by_dtype(averaged, current, n, multi_avg_fn)
        elif avg_fn is not None:
            new = [avg_fn(a, c, n) for a, c in zip(averaged, current, strict=True)]
        else:
            swa = get_swa_avg_fn()
            new = [swa(a, c, n) for a, c in zip(averaged, current, strict=True)]
        out = []
        for a, leaf in zip(averaged, new, strict=True):
            leaf = jnp.asarray(leaf)
            if leaf.shape != a.shape:
                raise ValueError(
                    f"the averaging function returned shape {leaf.shape} for a leaf of shape "
                    f"{a.shape}"
                )
            out.append(leaf if leaf.dtype == a.dtype else _cast(leaf, a))
        return out

    def init(params: Any, buffers: Any = None) -> AveragedModelState:
        _check_leaves(params, "params")
        _check_leaves(buffers, "buffers")
        copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731 -- torch: deepcopy(model)
        return AveragedModelState(jnp.zeros((), jnp.int32), copy(params), copy(buffers))

    def update(state: AveragedModelState, params: Any, buffers: Any = None) -> AveragedModelState:
        if not isinstance(state, AveragedModelState):
            raise TypeError(f"update needs an AveragedModelState, got {type(state).__name__}")
        if (buffers is None) != (state.buffers is None):
            raise ValueError(
                "buffers must be given to update exactly when they were given to init "
                f"(init: {state.buffers is not None}, update: {buffers is not None})"
            )
        _check_like(params, state.params, "params")
        _check_like(buffers, state.buffers, "buffers")
        n = jnp.asarray(state.n_averaged, jnp.int32)
        p_avg, p_def = jax.tree.flatten(state.params)
        b_avg, b_def = jax.tree.flatten(state.buffers)
        p_cur, b_cur = jax.tree.leaves(params), jax.tree.leaves(buffers)
        avg = p_avg + b_avg if use_buffers else p_avg
        cur = p_cur + b_cur if use_buffers else p_cur
        # torch: copy the model's tensors when n_averaged == 0, else average them.
        new = jax.lax.cond(n == 0, lambda: list(cur), lambda: average(avg, cur, n))
        new_params = jax.tree.unflatten(p_def, new[: len(p_avg)])
        # use_buffers=False: torch copies the buffers from the model after averaging.
        new_buffers = jax.tree.unflatten(b_def, new[len(p_avg) :] if use_buffers else b_cur)
        return AveragedModelState(n + 1, new_params, new_buffers)

    return AveragedModel(init, update)


def _cast(leaf: jax.Array, like: jax.Array) -> jax.Array:
    """``like.copy_(leaf)``: floats round to ``like``'s dtype, integers truncate toward zero."""
    if jnp.issubdtype(like.dtype, jnp.integer) and jnp.issubdtype(leaf.dtype, jnp.floating):
        return _to_int(leaf, like)
    return leaf.astype(like.dtype)


# --------------------------------------------------------------------------------------------
# SWALR.


def swalr(
    lr: float,
    swa_lr: float | Sequence[float],
    anneal_epochs: int = 10,
    anneal_strategy: str = "cos",
    *,
    horizon: int = DEFAULT_HORIZON,
) -> LRSchedule:
    r"""Anneal the lr from ``lr`` to ``swa_lr`` in ``anneal_epochs`` counts, then hold it (SWALR).

    torch's ``SWALR`` reads the optimizer's *current* lr at every step and rescales it
    (recursive, in Python doubles); ``lr`` is the lr it finds when it is built. With
    :math:`A` = ``anneal_epochs``, :math:`s = k` (:math:`\max(1, k)` if :math:`A = 0`),
    :math:`a(t)` = ``(1 - cos(pi t)) / 2`` (``'cos'``) or ``t`` (``'linear'``),
    :math:`\alpha_k = a(\min(1, \max(0, s / \max(1, A))))`::

        lr_prev = swa_lr if alpha_{k-1} == 1
                  else (lr_{k-1} - alpha_{k-1} * swa_lr) / (1 - alpha_{k-1})
        lr_k    = swa_lr * alpha_k + lr_prev * (1 - alpha_k)

    which is the closed form ``lr + (swa_lr - lr) * alpha_k`` up to rounding, and ``swa_lr``
    from count ``A`` on. The table holds torch's replayed doubles (``schedules`` module).

    Composing it as torch users do (``first`` another schedule, ``m`` a count):

    * SWALR built up front, stepped instead of ``first`` from optimizer step ``m`` on (torch's
      docs' loop): ``sequential_lr([first, swalr(float(first(m)), swa_lr)], [m])``;
    * ``SequentialLR([first, SWALR], milestones=[m])``: torch starts SWALR from the lr it finds
      at the milestone, ``first``'s value at ``m - 1``:
      ``sequential_lr([first, swalr(float(first(m - 1)), swa_lr)], [m])``.

    (evaluate ``first`` under x64 for the exact double). Both are tested against torch.

    Args:
      lr: the optimizer's lr when SWALR is constructed (torch reads ``group["lr"]``).
      swa_lr: the lr to anneal to (or a one-element list: torch's per-group list for a
        single group).
      anneal_epochs: counts of the annealing phase (an int >= 0).
      anneal_strategy: ``"cos"`` or ``"linear"``.
      horizon: counts below this are a table lookup (see the ``schedules`` module).

    Returns:
      An ``LRSchedule`` (``count -> lr``).

    Differences from torch:
      one group per schedule (build one per group); no ``last_epoch`` (torch's SWALR ignores
      it except for requiring ``initial_lr`` in the groups).
    """
    # torch's checks, in torch's order (swa_lr via _format_param for one param group).
    if isinstance(swa_lr, (list, tuple)):
        if len(swa_lr) != 1:
            raise ValueError(
                "swa_lr must have the same length as optimizer.param_groups. "
                f"swa_lr has {len(swa_lr)} values, param_groups has 1."
            )
        (swa_lr,) = swa_lr
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(
            f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
        )
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
    for name, value in (("lr", lr), ("swa_lr", swa_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {value!r}")
    lr, swa_lr, epochs = float(lr), float(swa_lr), anneal_epochs
    cosine = anneal_strategy == "cos"

    def host_anneal(t: Any) -> Any:  # torch's _cosine_anneal / _linear_anneal
        return (1 - math.cos(math.pi * t)) / 2 if cosine else t

    def host_initial(cur: float, alpha: Any) -> float:  # torch's _get_initial_lr
        if alpha == 1:
            return swa_lr
        return (cur - alpha * swa_lr) / (1 - alpha)

    def host(k: int, cur: float) -> float:  # torch's get_lr(), line by line
        step = k
        if epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, epochs)))
        prev_lr = host_initial(cur, host_anneal(prev_t))
        t = max(0, min(1, step / max(1, epochs)))
        alpha = host_anneal(t)
        return swa_lr * alpha + prev_lr * (1 - alpha)

    def graph(k: jax.Array, cur: jax.Array) -> jax.Array:  # the same in the graph
        step = jnp.maximum(k, 1) if epochs == 0 else k

        def alpha_at(s: jax.Array) -> jax.Array:
            t = jnp.clip(as_float(s) / float(max(1, epochs)), 0.0, 1.0)
            return (1 - jnp.cos(math.pi * t)) / 2 if cosine else t

        prev_alpha, alpha = alpha_at(step - 1), alpha_at(step)
        prev_lr = jnp.where(prev_alpha == 1, swa_lr, (cur - prev_alpha * swa_lr) / (1 - prev_alpha))
        return swa_lr * alpha + prev_lr * (1 - alpha)

    def step(k: Any, cur: Any) -> Any:
        return host(k, cur) if isinstance(k, int) else graph(k, cur)

    # From count A + 1 on both alphas are 1: the value is swa_lr * 1 + swa_lr * 0 for any lr.
    return recursive(
        format_call(
            "swalr", lr, swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy
        ),
        lr,
        step,
        settles_at=epochs + 1,
        horizon=horizon,
    )


# --------------------------------------------------------------------------------------------
# update_bn.


def _batch_norm_stats(x: jax.Array, axis: Any) -> tuple[jax.Array, jax.Array]:
    """torch's training-mode batch statistics: the mean and the *unbiased* variance.

    torch (``batch_norm_cpu_collect_stats``): ``mean = sum(x) / N``, ``var_sum = sum((x -
    mean)^2)`` with the rounded mean, ``unbiased = var_sum / (N - 1)``; it accumulates float32
    in double, XLA in float32 in its own order (the difference is measured in the tests).
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    features = {a % x.ndim for a in axes}
    reduce = tuple(i for i in range(x.ndim) if i not in features)
    count = math.prod(x.shape[i] for i in reduce)
    if count <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
        )
    x = x.astype(K.math_dtype(x.dtype))  # float32 at least, as Flax and torch's opmath
    mean = jnp.sum(x, axis=reduce, keepdims=True) / count
    var_sum = jnp.sum(jnp.square(x - mean), axis=reduce)
    return jnp.squeeze(mean, reduce), var_sum / (count - 1)


def _cumulative(
    running: dict[str, jax.Array], mean: jax.Array, var: jax.Array, k: jax.Array
) -> dict[str, jax.Array]:
    """torch's running-stat update with ``momentum=None``: the factor is ``1 / k`` at call k.

    ``running = factor * batch + (1 - factor) * running``, both products rounded (float32
    torch adds the variance terms in double; here everything is in the stats' dtype).
    """
    out = {}
    for name, batch in (("mean", mean), ("var", var)):
        old = running[name]
        dtype = K.math_dtype(old.dtype)
        factor = (1.0 / k.astype(jnp.float64 if dtype == jnp.float64 else jnp.float32)).astype(
            dtype
        )
        zero = K.opaque_zero(k, dtype)
        new = K.mul(batch.astype(old.dtype), factor, zero)
        out[name] = K.add(new, K.mul(old, 1 - factor, zero), jnp.asarray(1.0, dtype))
    return out


def _is_stats(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"mean", "var"}


def _reset(tree: Any) -> Any:
    """``reset_running_stats()``: mean 0, var 1 for every Flax BatchNorm in ``batch_stats``."""
    if _is_stats(tree):
        return {"mean": jnp.zeros_like(tree["mean"]), "var": jnp.ones_like(tree["var"])}
    if isinstance(tree, dict):
        return {name: _reset(sub) for name, sub in tree.items()}
    return tree


def update_bn(loader: Iterable[Any], model: Any, variables: Any, **apply_kwargs: Any) -> Any:
    """Recompute every BatchNorm's running statistics over ``loader`` (torch's ``update_bn``).

    torch resets each BatchNorm (mean 0, var 1), sets ``momentum=None`` -- a cumulative moving
    average: at the k-th batch a layer sees, ``running = batch / k + (1 - 1 / k) * running`` --
    and runs the model in train mode over the batches. Here the model runs as
    ``model.apply(variables, x, mutable=["batch_stats"], **apply_kwargs)`` (jitted, once per
    input shape); each ``flax.linen.BatchNorm`` call is intercepted to read its input, from
    which torch's statistics (mean, *unbiased* variance) are computed and averaged as torch
    does. Flax's own momentum update is discarded.

    Args:
      loader: an iterable of batches; a batch is an array or a list/tuple whose first
        element is the input (as torch).
      model: a ``flax.linen.Module`` whose BatchNorm layers run in train mode
        (``use_running_average=False``) with ``apply_kwargs``.
      variables: the model's variables (``{"params": ..., "batch_stats": ...}``).
      **apply_kwargs: passed to every ``model.apply`` (e.g. ``train=True``, ``rngs=...``).

    Returns:
      ``variables`` with new ``batch_stats``; the same object if there are none (torch:
      "if not momenta: return").

    Differences from torch:
      * torch's ``model.train()`` is ``apply_kwargs`` here; a BatchNorm that runs with
        ``use_running_average=True`` raises ``ValueError``.
      * BatchNorm layers are the ``{"mean", "var"}`` entries of ``batch_stats`` (Flax's
        layout); all are reset, as torch resets every ``_BatchNorm``.
      * float32 statistics accumulate in float32 in XLA's order (torch: in double,
        sequentially): the tests measure and bound the difference.
      * ``axis_name`` (cross-device) and ``mask`` are not supported.
    """
    stats = variables.get("batch_stats") if hasattr(variables, "get") else None
    if not stats:
        return variables
    import flax.linen as nn  # only here: the module itself does not need flax

    def forward(v: Any, x: jax.Array) -> dict[tuple[str, ...], list[tuple[jax.Array, ...]]]:
        calls: dict[tuple[str, ...], list[tuple[jax.Array, ...]]] = {}

        def intercept(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
            bn = context.module
            if not isinstance(bn, nn.BatchNorm) or context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            flag = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
            flag = bn.use_running_average if flag is None else flag
            path = "/".join(bn.path) or "<root>"
            if flag:
                raise ValueError(
                    f"update_bn: BatchNorm {path} ran with use_running_average=True; pass the "
                    "arguments that put the model in train mode (torch's model.train()), "
                    "e.g. update_bn(loader, model, variables, train=True)"
                )
            if kwargs.get("mask") is not None or bn.axis_name is not None:
                raise ValueError(f"update_bn: BatchNorm {path}: mask/axis_name not supported")
            calls.setdefault(tuple(bn.path), []).append(_batch_norm_stats(args[0], bn.axis))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(intercept):
            model.apply(v, x, mutable=["batch_stats"], **apply_kwargs)
        return calls

    run = jax.jit(forward)
    fresh = _reset(stats)
    running = fresh
    seen: dict[tuple[str, ...], int] = {}
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        calls = run({**variables, "batch_stats": fresh}, x)
        for path, results in calls.items():
            node = running
            for name in path:
                node = node[name]
            for mean, var in results:
                seen[path] = seen.get(path, 0) + 1
                node = _cumulative_jit(node, mean, var, jnp.int32(seen[path]))
            running = _set(running, path, node)
    return {**variables, "batch_stats": running}


_cumulative_jit = jax.jit(_cumulative)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> dict:
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}
