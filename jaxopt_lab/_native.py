"""One-pass CPU kernels for the float32 leaves of Adam, AdamW, AMSGrad and momentum SGD.

XLA:CPU compiles an Adam step into three loops over memory (new ``m``, new ``v``, new ``p``),
~40 bytes per float32 parameter where one pass moves 28; a momentum step into two; and it runs
one set of loops per leaf. The C++ handlers in ``csrc/native.cc`` (XLA FFI custom calls, built
with the package by ``setup.py``) update all of an optimizer's float32 leaves in one call and one
pass, with torch's single-tensor arithmetic in the same order and roundings as the pure rules:
the results are bitwise equal to the pure-JAX path (``tests/test_native.py``), hence to torch
(``test_parity.py``'s kernel rows). Large leaves are shared out over XLA's CPU thread pool.

Which leaves take the kernel is decided when the update is traced:

* ``JAXOPT_LAB_NATIVE`` unset or ``auto``: float32 leaves of at least :data:`MIN_SIZE` elements
  (per kernel: 4,096 for Adam, 65,536 for momentum SGD), if the extension is built;
* ``JAXOPT_LAB_NATIVE=always``: every float32 leaf; ``=off``: none (XLA's loops only).

The kernels run on CPU only: lowered for another backend (GPU, TPU) the same call is the pure
rule (``jax.lax.platform_dependent``). Derivatives (``jax.grad``/``jvp`` through an update)
always come from the pure rule (``jax.custom_jvp``), so the update stays differentiable; ``vmap``
runs the kernel once per batch entry. The kernels update in place: results alias the params and
state buffers, so with ``donate_argnums`` nothing is copied; without donation XLA copies the
inputs first. ``jax.export`` of an update that contains a kernel needs
``DisabledSafetyCheck.custom_call`` for its targets (or ``JAXOPT_LAB_NATIVE=off``).
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

MIN_SIZE = {
    "jaxopt_lab_adam_f32": 4096,
    "jaxopt_lab_amsgrad_f32": 4096,
    "jaxopt_lab_sgd_momentum_f32": 65536,
}
"""Per kernel, the smallest leaf (in elements) it takes under ``JAXOPT_LAB_NATIVE=auto``.

Measured by ``experiments/bench_update.py --sizes 1000x1k,4k,16k,64k,256k,1m --impls
jol_xla,jol_kernel --optimizers momentum,adam,amsgrad --no-rss --out bench_update_threshold``
(``results/bench_update_threshold.md``): Adam's kernel ties XLA's three loops at 4k elements and
wins from 16k on (0.054 vs 0.078 ms); momentum SGD's two XLA loops are cheap, so its kernel
loses at 16k (0.055 vs 0.042 ms) and wins from 64k (0.079 vs 0.117 ms). Below ~16k a step is
dispatch-bound either way.
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


def use_for(p: jax.Array, target: str) -> bool:
    """Whether the leaf ``p`` goes through the kernel ``target`` (see the module docstring)."""
    m = mode()
    if m == "off" or jnp.dtype(p.dtype) != jnp.float32 or not available():
        return False
    return m == "always" or p.size >= MIN_SIZE[target]


def pack(scalars: Mapping[str, jax.Array], names: Sequence[str]) -> jax.Array:
    """The step scalars (already rounded to float32) as one float32 vector, in ``names`` order."""
    return jnp.stack([jnp.asarray(scalars[k], jnp.float32) for k in names])


def unpack(packed: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
    """:func:`pack`'s inverse, for the pure rule: ``{name: scalar}``."""
    return dict(zip(names, packed, strict=True))


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
    target: str,
) -> tuple[list[jax.Array], list[tuple[Any, ...]]]:
    """Leaves for which ``use_for(p, target)`` holds go to ``kernel`` together, the rest to
    ``update_leaf`` one by one; results come back in the leaves' order."""
    picked = []
    new_ps: list[Any] = [None] * len(ps)
    new_bufs: list[Any] = [None] * len(ps)
    for i, p in enumerate(ps):
        if use_for(p, target):
            picked.append(i)
        else:
            new_ps[i], new_bufs[i] = update_leaf(p, gs[i], bufs[i], ctx)
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
