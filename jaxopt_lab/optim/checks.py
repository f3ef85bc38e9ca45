"""Input validation with torch's messages, run at trace time so users never see an XLA trace."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def is_schedule(value: Any) -> bool:
    """True when a hyper-parameter is given as a schedule ``count -> value``."""
    return callable(value)


def is_traced(value: Any) -> bool:
    """True for a hyper-parameter that is a JAX tracer (``optax.inject_hyperparams``, ``vmap``)."""
    return isinstance(value, jax.core.Tracer)


def is_dynamic(value: Any) -> bool:
    """True when a hyper-parameter's value is only known at run time: a schedule or a tracer."""
    return is_schedule(value) or is_traced(value)


def may_be_nonzero(value: Any) -> bool:
    """Whether a hyper-parameter can be non-zero at some step.

    torch decides per step, in Python, whether a term or a state buffer exists
    (``if momentum != 0``, ``if weight_decay != 0``). Here that decision fixes the state's
    structure, so it is taken once: a number decides it by its value; a schedule or a traced
    value (``optax.inject_hyperparams`` passes tracers) may be non-zero, so the buffer is kept
    and the optimizer selects torch's zero-value arithmetic at run time where that matters.
    """
    return is_dynamic(value) or bool(value != 0)


def require(ok: bool, message: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` unless ``ok``."""
    if not ok:
        raise error(message)


def check_number(value: Any, name: str) -> None:
    """A hyper-parameter must be a real Python/NumPy number or a schedule."""
    if is_schedule(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        # 0-d arrays; complex only when traced (inject_hyperparams with complex params)
        if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
            if is_traced(value) or not np.iscomplexobj(value):
                return
        raise TypeError(f"{name} must be a number or a schedule count -> value, got {value!r}")


def check_range(value: Any, ok: Callable[[float], bool], message: str) -> None:
    """torch-style range check (skipped for schedules and tracers); NaN always fails."""
    check_joint_range((value,), ok, message)


def check_joint_range(values: Sequence[Any], ok: Callable[..., bool], message: str) -> None:
    """:func:`check_range` on values tested together (Rprop's ``0 < etaminus < 1 < etaplus``):
    skipped if any is dynamic; a NaN among them always fails."""
    if any(is_dynamic(value) for value in values):
        return
    floats = [float(value) for value in values]
    if any(math.isnan(v) for v in floats) or not ok(*floats):
        raise ValueError(message)


def check_ignored_flags(foreach: Any, fused: Any, capturable: Any, differentiable: Any) -> None:
    """torch's implementation switches are accepted; they only need to be of the right type."""
    for name, flag in (("foreach", foreach), ("fused", fused)):
        require(flag is None or isinstance(flag, bool), f"{name} must be None or a bool", TypeError)
    for name, flag in (("capturable", capturable), ("differentiable", differentiable)):
        require(isinstance(flag, bool), f"{name} must be a bool", TypeError)


# --- Constructor checks: each factory lists its hyper-parameters once, in torch's order. ---


class Bound(NamedTuple):
    """One hyper-parameter of a constructor, as :func:`check_hyperparams` checks it.

    ``name`` names it in the ``TypeError`` for a non-number (``"betas[0]"``); ``ok`` is torch's
    range test and ``message`` torch's ``ValueError`` text; ``ok=None`` checks the type only.
    """

    name: str
    value: Any
    ok: Callable[[float], bool] | None = None
    message: str = ""


def _nonnegative(v: float) -> bool:
    return 0.0 <= v


def _positive(v: float) -> bool:
    return 0.0 < v


def learning_rate(lr: Any, strict: bool = False) -> Bound:
    """torch's ``0.0 <= lr`` (``0.0 < lr`` if ``strict``): ``Invalid learning rate: {lr}``."""
    return Bound("lr", lr, _positive if strict else _nonnegative, f"Invalid learning rate: {lr}")


def epsilon(eps: Any, strict: bool = False) -> Bound:
    """torch's ``0.0 <= eps`` (``0.0 < eps`` if ``strict``): ``Invalid epsilon value: {eps}``."""
    return Bound("eps", eps, _positive if strict else _nonnegative, f"Invalid epsilon value: {eps}")


def nonnegative(name: str, value: Any) -> Bound:
    """torch's ``0.0 <= value``: ``Invalid {name} value: {value}``."""
    return Bound(name, value, _nonnegative, f"Invalid {name} value: {value}")


def at_least(name: str, value: Any, floor: int, label: str | None = None) -> Bound:
    """The wording of torch's newer optimizers (Adafactor, Muon): ``floor <= value``, else
    ``{label} should be >= {floor} but is: {value}`` (``label`` defaults to ``name``)."""
    message = f"{label or name} should be >= {floor} but is: {value}"
    return Bound(name, value, lambda v: floor <= v, message)


def at_most(name: str, value: Any, ceiling: int) -> Bound:
    """Adafactor's ``value <= ceiling``, else ``{name} should be <= {ceiling} but is: {value}``."""
    return Bound(
        name, value, lambda v: ceiling >= v, f"{name} should be <= {ceiling} but is: {value}"
    )


def betas_in_unit_interval(beta1: Any, beta2: Any) -> tuple[Bound, Bound]:
    """torch's ``0.0 <= beta < 1.0`` per index: ``Invalid beta parameter at index i: {beta}``."""
    return tuple(
        Bound(
            f"betas[{i}]", b, lambda v: 0.0 <= v < 1.0, f"Invalid beta parameter at index {i}: {b}"
        )
        for i, b in enumerate((beta1, beta2))
    )


def check_hyperparams(*bounds: Bound) -> None:
    """Every value a number or a schedule (``TypeError``), then torch's range checks in order
    (``ValueError`` with torch's message; skipped for schedules and tracers, NaN always fails)."""
    for bound in bounds:
        check_number(bound.value, bound.name)
    for bound in bounds:
        if bound.ok is not None:
            check_range(bound.value, bound.ok, bound.message)


def check_pair(value: Any, name: str, what: str) -> tuple[Any, Any]:
    """A pair argument (``betas``, ``etas``, ...) unpacked; else ``TypeError`` naming ``what``."""
    require(
        isinstance(value, (tuple, list)) and len(value) == 2,
        f"{name} must be a pair ({what}), got {value!r}",
        TypeError,
    )
    first, second = value
    return first, second


def check_adam_family(
    lr: Any, betas: Any, eps: Any, weight_decay: Any, *more: Bound
) -> tuple[Any, Any]:
    """The constructor checks torch's Adam, AdamW, NAdam, RAdam and Adamax share (same messages,
    same order), then ``more`` (NAdam's ``momentum_decay``); returns ``(beta1, beta2)``."""
    beta1, beta2 = check_pair(betas, "betas", "beta1, beta2")
    check_hyperparams(
        learning_rate(lr),
        epsilon(eps),
        *betas_in_unit_interval(beta1, beta2),
        nonnegative("weight_decay", weight_decay),
        *more,
    )
    return beta1, beta2


def _path(path: tuple) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_params(params: Any) -> None:
    """Every leaf must be a real or complex floating-point array (torch: only those can require
    grad), and there must be one (torch's constructor: "optimizer got an empty parameter list";
    :func:`~jaxopt_lab.as_optax` accepts empty trees, as optax transformations do)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    require(len(leaves) > 0, "optimizer got an empty parameter list")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"params leaf {_path(path)} has dtype {dtype}; only floating-point params (real "
                "or complex) can be optimized (cast it, or keep it out of the optimized pytree)"
            )


def check_real(params: Any, name: str) -> None:
    """For the optimizers torch rejects complex params for (Adafactor, Muon, SparseAdam)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise TypeError(
                f"{name} does not support complex parameters (params leaf {_path(path)} has "
                f"dtype {leaf.dtype}), as torch's"
            )


def check_grads(params: Any, grads: Any) -> None:
    """Grads must mirror params: same tree structure, and per leaf the same shape and dtype."""
    p_def = jax.tree_util.tree_structure(params)
    g_def = jax.tree_util.tree_structure(grads)
    if p_def != g_def:
        raise ValueError(f"grads tree structure {g_def} does not match params structure {p_def}")
    p_leaves = jax.tree_util.tree_leaves_with_path(params)
    for (path, p), g in zip(p_leaves, jax.tree_util.tree_leaves(grads), strict=True):
        if np.shape(g) != np.shape(p):
            raise ValueError(
                f"grads leaf {_path(path)} has shape {np.shape(g)}, params leaf has {np.shape(p)}"
            )
        if getattr(g, "dtype", None) != p.dtype:
            raise TypeError(
                f"grads leaf {_path(path)} has dtype {getattr(g, 'dtype', type(g))}, "
                f"params leaf has {p.dtype}"
            )


def check_state(state: Any, state_type: type, name: str) -> None:
    """The state must come from this kind of optimizer's ``init``."""
    if not isinstance(state, state_type):
        made_by = type(state).__name__
        raise TypeError(
            f"{name}.update got a {made_by} state; it needs the {state_type.__name__} made by "
            f"{name}(...).init(params) (was the state made by another optimizer?)"
        )


def check_buffers(params: Any, buffers: Any, field: str) -> None:
    """A state buffer tree must mirror params (catches states built for other params)."""
    try:
        check_grads(params, buffers)
    except (ValueError, TypeError) as err:
        raise ValueError(f"optimizer state field {field!r} does not match params: {err}") from None
