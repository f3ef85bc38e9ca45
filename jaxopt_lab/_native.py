"""One-pass CPU kernels for the large float32 leaves of Adam, AdamW, AMSGrad and momentum SGD.

XLA:CPU compiles an Adam step into three loops over memory (new ``m``, new ``v``, new ``p``),
~40 bytes per float32 parameter where one pass moves 28; a momentum step into two. The C++
handlers in ``csrc/native.cc`` (an XLA FFI custom call, built with the package) make the single
pass, with torch's single-tensor arithmetic in the same order and roundings as the pure rules:
results are bitwise equal to the pure-JAX path (``tests/test_native.py``), hence to torch.

How a leaf is routed (decided at trace time, per leaf):

* the extension is built, the leaf is float32 and has at least :data:`MIN_SIZE` elements (the
  size where one pass starts to beat XLA's fused loops, ``experiments/bench_update.py``), and
  ``JAXOPT_LAB_NATIVE`` is unset or ``auto`` -> the kernel, on CPU;
* on any other backend (GPU, TPU) the same call lowers to the pure rule
  (``jax.lax.platform_dependent``); derivatives (``jax.grad``/``jvp`` through an update) always
  come from the pure rule (``jax.custom_jvp``), so the update stays differentiable;
* ``JAXOPT_LAB_NATIVE=off`` never uses the kernel, ``=always`` uses it for every float32 leaf.

The kernels update in place: outputs alias the params and state buffers, so with
``donate_argnums`` no copy is made; without donation XLA copies the inputs first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp

try:  # built by setup.py (an optional extension: without a compiler the pure rules serve)
    from . import _native_ext
except ImportError:  # pragma: no cover - depends on the install
    _native_ext = None

MIN_SIZE = 4096
"""Smallest leaf (in elements) routed to a kernel under ``JAXOPT_LAB_NATIVE=auto``.

Measured with ``experiments/bench_update.py --sizes 4k,16k,64k,256k,1m --impls
jol_xla,jol_kernel`` (``results/bench_update_threshold.md``): from 4,096 elements up the kernel
is as fast as XLA's loops or faster (momentum SGD 2.7x at 4k); on the 1,000 leaves of 1,000
elements a kernel call per leaf is slower for momentum SGD (17.5 vs 14.6 ms).
"""

ADAM_SCALARS = (
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "eps",
    "weight_decay",
    "decay",
    "neg_step_size",
    "bias_correction2_sqrt",
)
"""The Adam step scalars, in the order of ``AdamScalars`` in ``csrc/native.cc``."""

SGD_SCALARS = ("neg_lr", "momentum", "one_minus_dampening", "weight_decay")
"""The momentum-SGD step scalars, in the order of ``SgdScalars`` in ``csrc/native.cc``."""

MODES = ("auto", "off", "always")


def mode() -> str:
    """``JAXOPT_LAB_NATIVE``: ``auto`` (default), ``off`` or ``always``; read at trace time."""
    value = os.environ.get("JAXOPT_LAB_NATIVE", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"JAXOPT_LAB_NATIVE must be one of {MODES}, got {value!r}")
    return value


@cache
def available() -> bool:
    """Whether the extension is built; registers its handlers with XLA on first call."""
    if _native_ext is None:
        return False
    for name, capsule in _native_ext.handlers().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


def use_for(p: jax.Array) -> bool:
    """Whether the leaf ``p`` goes through a kernel (see the module docstring)."""
    m = mode()
    if m == "off" or jnp.dtype(p.dtype) != jnp.float32 or not available():
        return False
    return m == "always" or p.size >= MIN_SIZE


def pack(scalars: Mapping[str, jax.Array], names: Sequence[str]) -> jax.Array:
    """The step scalars (already rounded to float32) as one float32 vector, in ``names`` order."""
    return jnp.stack([jnp.asarray(scalars[k], jnp.float32) for k in names])


Rule = Callable[..., tuple[jax.Array, ...]]
LeafUpdate = Callable[[jax.Array, jax.Array, tuple[Any, ...], Any], tuple[jax.Array, Any]]
KernelUpdate = Callable[
    [list[jax.Array], list[jax.Array], list[tuple[Any, ...]], Any],
    tuple[list[jax.Array], list[tuple[Any, ...]]],
]


def route(
    ps: list[jax.Array],
    gs: list[jax.Array],
    bufs: list[tuple[Any, ...]],
    ctx: Any,
    update_leaf: LeafUpdate,
    kernel: KernelUpdate,
) -> tuple[list[jax.Array], list[tuple[Any, ...]]]:
    """Leaves for which :func:`use_for` holds go to ``kernel`` together, the rest to
    ``update_leaf`` one by one; results come back in the leaves' order."""
    picked = [i for i, p in enumerate(ps) if use_for(p)]
    new_ps: list[Any] = [None] * len(ps)
    new_bufs: list[Any] = [None] * len(ps)
    for i in sorted(set(range(len(ps))) - set(picked)):
        new_ps[i], new_bufs[i] = update_leaf(ps[i], gs[i], bufs[i], ctx)
    if picked:
        sub = [[xs[i] for i in picked] for xs in (ps, gs, bufs)]
        kernel_ps, kernel_bufs = kernel(*sub, ctx)
        for j, i in enumerate(picked):
            new_ps[i], new_bufs[i] = kernel_ps[j], kernel_bufs[j]
    return new_ps, new_bufs


def one_pass(
    target: str,
    rule: Rule,
    columns: Sequence[Sequence[jax.Array]],
    outputs: Sequence[int],
    operands: Sequence[jax.Array],
    rule_only: Sequence[jax.Array] = (),
    **attrs: Any,
) -> list[list[jax.Array]]:
    """Apply a per-leaf ``rule`` to many leaves in one call of the FFI ``target``, in place.

    Args:
      target: the registered handler's name. It takes ``(*operands, *arrays)`` with the arrays
        role-major (every leaf's param, then every leaf's grad, then each state buffer) and
        ``attrs``, and returns the ``outputs`` roles, role-major, each aliasing its input.
      rule: the pure-JAX rule for one leaf, ``rule(*leaf_arrays, *operands, *rule_only)``,
        returning one array per entry of ``outputs``: bitwise what the handler writes. It serves
        other backends (``jax.lax.platform_dependent``) and all derivatives (``custom_jvp``).
      columns: per role, the leaves (all roles the same length and shapes).
      outputs: the roles the results replace, in result order.
      operands: handler operands besides the arrays (packed scalars, a step count).
      rule_only: operands only the pure rule needs.
      attrs: the handler's static attributes.

    Returns:
      Per entry of ``outputs``, the new leaves.
    """
    n_roles, n_leaves = len(columns), len(columns[0])
    n_ops = len(operands)
    arrays = [x for col in columns for x in col]
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for r in outputs for x in columns[r]]
    aliases = {
        n_ops + r * n_leaves + leaf: k * n_leaves + leaf
        for k, r in enumerate(outputs)
        for leaf in range(n_leaves)
    }
    call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential", input_output_aliases=aliases)
    n_native = n_ops + len(arrays)

    def native(*args: jax.Array) -> list[jax.Array]:
        return list(call(*args[:n_native], **attrs))

    def pure(*args: jax.Array) -> list[jax.Array]:
        ops, flat, extra = args[:n_ops], args[n_ops:n_native], args[n_native:]
        per_leaf = [
            rule(*[flat[r * n_leaves + leaf] for r in range(n_roles)], *ops, *extra)
            for leaf in range(n_leaves)
        ]
        return [per_leaf[leaf][k] for k in range(len(outputs)) for leaf in range(n_leaves)]

    @jax.custom_jvp
    def f(*args: jax.Array) -> list[jax.Array]:
        return jax.lax.platform_dependent(*args, cpu=native, default=pure)

    f.defjvp(lambda primals, tangents: jax.jvp(pure, primals, tangents))
    flat_out = f(*operands, *arrays, *rule_only)
    return [flat_out[k * n_leaves : (k + 1) * n_leaves] for k in range(len(outputs))]
