"""One-pass CPU kernels for the float32 leaves of Adam, AdamW, AMSGrad, momentum SGD, RAdam
(RAdamW), NAdam (NAdamW), Adamax, Adadelta and Rprop.

XLA:CPU compiles an Adam step into three loops over memory (new ``m``, new ``v``, new ``p``),
~40 bytes per float32 parameter where one pass moves 28; a momentum step into two; and it runs
one set of loops per leaf. RAdam and NAdam take Adam's three loops with 2 and 3 true divisions
per element (torch's rounding; optax's formulas need 1). The C++ handlers in ``csrc/native.cc``
(XLA FFI custom calls, built with the package by ``setup.py``) update all of an optimizer's
float32 leaves in one call and one pass, with torch's single-tensor arithmetic in the same order
and roundings as the pure rules: the results are bitwise equal to the pure-JAX path
(``tests/test_native.py``), hence to torch (``test_parity.py``'s kernel rows). Large leaves are
shared out over XLA's CPU thread pool.

Which leaves take the kernel is decided when the update is traced:

* ``JAXOPT_LAB_NATIVE`` unset or ``auto``: float32 leaves of at least :data:`MIN_SIZE` elements
  (per kernel, from a measurement: 256 for Rprop, 4,096 for Adam, RAdam and Adadelta, 16,384
  for NAdam and Adamax, 65,536 for momentum SGD), if the kernels can run (below) and compute
  ``fma`` with a hardware instruction on this CPU, and with them the update's smaller float32
  leaves when there are at most :data:`JOIN_MAX` of those;
* ``JAXOPT_LAB_NATIVE=always``: every float32 leaf; ``=off``: none (XLA's loops only).

The kernels run on CPU only: lowered for another backend (GPU, TPU) the same call is the pure
rule (``jax.lax.platform_dependent``). Derivatives (``jax.grad``/``jvp`` through an update)
always come from the pure rule (``jax.custom_jvp``), so the update stays differentiable; ``vmap``
runs the kernel once per batch entry. The kernels update in place: results alias the params and
state buffers, so with ``donate_argnums`` nothing is copied; without donation XLA copies the
inputs first. ``jax.export`` of an update that contains a kernel needs
``DisabledSafetyCheck.custom_call`` for its targets (or ``JAXOPT_LAB_NATIVE=off``).

When the kernels cannot run (:func:`status`, checked once per process at the first update that
would use one): the extension was not built (no C++ compiler at install), does not load, XLA
refuses its handlers (built against newer XLA FFI headers than the running jaxlib supports: pip
builds in an isolated environment with the newest jaxlib), or a self-test run of each handler on
a few exactly computable elements fails. Under ``auto`` the optimizers then run their pure rules,
with the same results, and log ONE warning naming the cause (logger ``jaxopt_lab.optim.native``; at
INFO level where JAX's default backend is a GPU or TPU); under ``always`` the update raises a
``RuntimeError`` naming it. Kernels that compute ``fma`` by a libm call on this CPU (a clang
build; a GCC build on an x86 CPU without AVX2 + FMA, which gets the plain x86-64 clones) give
the same results but are slower than XLA's loops: ``auto`` then keeps XLA's loops, ``always``
still runs them (``Status.hardware_fma``, ``csrc/native.cc``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

MIN_SIZE = {
    "jaxopt_lab_adam_f32": 4096,
    "jaxopt_lab_amsgrad_f32": 4096,
    "jaxopt_lab_sgd_momentum_f32": 65536,
    "jaxopt_lab_radam_f32": 4096,
    "jaxopt_lab_nadam_f32": 16384,
    "jaxopt_lab_adamax_f32": 16384,
    "jaxopt_lab_adadelta_f32": 4096,
    "jaxopt_lab_rprop_f32": 256,
}
"""Per kernel, the smallest leaf (in elements) it takes under ``JAXOPT_LAB_NATIVE=auto``.

Chosen from ``experiments/bench_update.py --sizes 1000x1k,4k,16k,64k,256k,1m --impls
jol_xla,jol_kernel --optimizers momentum,adam,amsgrad --no-rss --out bench_update_threshold``
(timings, machine and versions: ``experiments/results/bench_update_threshold.md``): Adam's kernel
ties XLA's three loops at 4k elements and wins from 16k on; momentum SGD's two XLA loops are
cheap, so its kernel loses at 16k and wins from 64k. Below ~16k a step is dispatch-bound either
way. RAdam and NAdam: ``--sizes 1000x1k,4k,16k,64k,256k,1m --impls jol_xla,jol_kernel
--optimizers nadam,radam --no-rss --out bench_update_rest_threshold`` (fastest runs): RAdam's
kernel ties XLA at 4k and wins from 16k (as Adam's); NAdam's ties at 4k and 16k and wins from
64k. Adamax and Adadelta: the same with ``--optimizers adamax,adadelta --out
bench_update_rest_threshold2``: Adamax's kernel ties at 4k and 16k and wins from 64k (0.80x of
XLA's fastest run there, 0.59x at 256k); Adadelta's (two square roots and a division in XLA's
loops too) wins from 4k (0.54x) on. Rprop: ``--optimizers rprop --sizes
256,1k,4k,16k,64k,256k,1m --impls jol_xla,jol_kernel --no-rss --out
bench_update_rest_threshold3`` (idle, medians): its kernel ties XLA at 256 and 1k
elements (0.99x, 1.03x) and wins from 4k on (0.19x, 0.33x at 16k, 0.78x at 1m). The threshold
is 256, not 4,096, for models like the CIFAR CNN whose leaves of 456-2,400 elements would
otherwise run as a second group of XLA loops beside the kernel call (a helper's timing of 20
donated steps per round, not a repo command: the bench's CNN 0.80x of XLA with 256, 1.18x with
4,096; with a sync after every step, as ``bench_update`` times, 1.04x vs XLA).
"""

JOIN_MAX = 16
"""Under ``auto``, float32 leaves below ``MIN_SIZE`` join a kernel call that larger leaves of
the same update make, when there are at most this many of them.

A second group of XLA loops beside the kernel call costs more than the kernel's pass over a few
small leaves: ``experiments/bench_update.py --sizes cnn,mixed --impls jol,jol_xla,jol_kernel,optax
--optimizers momentum,adam,amsgrad,radam,nadam,adamax,adadelta,rprop --no-rss --out
bench_update_join``, run before this rule existed (its ``jol`` is the routing without joining,
``jol_kernel`` every leaf in the call). On the CNN (3-9 small leaves beside 1-3 large ones) the
median per-round ratio jol_kernel/jol is 0.57-0.72 for seven of the eight, each 95% interval
below 1, and a tie for NAdam (0.83-1.01). With 200 leaves of 1k beside one of 1M (``mixed``)
joining is a tie for four, faster for RAdam and NAdam (0.89, 0.64) and slower for AMSGrad and
Adamax (1.28 each): there the kernel's per-leaf cost is the larger.
16 is a choice between those two measurements (a model's biases and norms beside a few
weights), not a measured crossover."""

RADAM_SCALARS = (
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "eps",
    "weight_decay",
    "decay",
    "lr",
    "bias_correction1",
    "bias_correction2_sqrt",
    "rect",
    "rectify",
)
"""The RAdam step scalars, in the order of ``RadamScalars`` in ``csrc/native.cc`` (``rectify``:
1 where torch's ``rho_t > 5``, else 0)."""

NADAM_SCALARS = (
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "eps",
    "weight_decay",
    "decay",
    "bias_correction2",
)
"""The NAdam step scalars, in the order of ``NadamScalars`` in ``csrc/native.cc``; its two
``addcdiv`` values are per leaf (torch's ``mu_product`` is per parameter): two more operands."""

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

ADAMAX_SCALARS = ("one_minus_beta1", "beta2", "eps", "weight_decay", "neg_clr")
"""The Adamax step scalars, in the order of ``AdamaxScalars`` in ``csrc/native.cc``."""

ADADELTA_SCALARS = ("neg_lr", "rho", "one_minus_rho", "eps", "weight_decay")
"""The Adadelta step scalars, in the order of ``AdadeltaScalars`` in ``csrc/native.cc``."""

RPROP_SCALARS = ("etaminus", "etaplus", "step_size_min", "step_size_max", "minus_one")
"""The Rprop step scalars, in the order of ``RpropScalars`` in ``csrc/native.cc``."""


def decay_mode(use_decay: bool, decoupled: bool, dynamic: bool = False) -> int:
    """The Adam-family kernels' ``decay`` attribute: 0 none, 1 L2 (``grad.add(param, alpha=wd)``),
    2 decoupled (``param.mul_(1 - lr * wd)``), 3 L2 on the steps whose rounded ``weight_decay``
    is non-zero (a scheduled or traced one: :func:`jaxopt_lab.optim.leafwise.l2_weight_decay`)."""
    if not use_decay:
        return 0
    if decoupled:
        return 2
    return 3 if dynamic else 1


MODES = ("auto", "off", "always")


def mode() -> str:
    """``JAXOPT_LAB_NATIVE``: ``auto`` (default), ``off`` or ``always``; read at trace time."""
    value = os.environ.get("JAXOPT_LAB_NATIVE", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"JAXOPT_LAB_NATIVE must be one of {MODES}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Status:
    """Whether the kernels run in this process (:func:`status`).

    Attributes:
      available: the extension loaded, XLA registered its handlers and each passed a test run.
      reason: why not (with what to do about it); empty when available.
      build: the extension's ``build_info()``: the ``jaxlib`` and XLA ``ffi_api`` versions it
        was compiled against, the ``compiler``, and ``hardware_fma`` / ``fma``: whether its
        kernels compute ``fma`` with a hardware instruction on this CPU (see ``csrc/native.cc``).
      jaxlib: the jaxlib version running.
    """

    available: bool
    reason: str = ""
    build: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    jaxlib: str = ""

    @property
    def hardware_fma(self) -> bool:
        """Whether ``auto`` routes leaves to the kernels (an extension older than
        ``build_info`` reports nothing: it is taken to have hardware FMA, as before)."""
        return self.available and bool(self.build.get("hardware_fma", True))


_STATUS: Status | None = None
_WARNED = False
_LOCK = threading.Lock()


def status() -> Status:
    """Loads the extension, registers its handlers with XLA and test-runs each, once per process.

    Never raises: what went wrong is in ``Status.reason``.
    """
    global _STATUS
    with _LOCK:
        if _STATUS is None:
            _STATUS = _load()
        return _STATUS


def available() -> bool:
    """Whether the one-pass kernels can run in this process (:func:`status`)."""
    return status().available


def _running_jaxlib() -> str:
    try:
        from jaxlib import version

        return str(version.__version__)
    except ImportError:  # pragma: no cover - jax always brings jaxlib
        return "unknown"


REBUILD_HINT = (
    "`pip install --no-build-isolation --no-deps --force-reinstall jaxopt_lab` (with g++) "
    "builds them against the jaxlib installed here"
)


def _load() -> Status:
    jaxlib = _running_jaxlib()
    name = f"{__package__}._native_ext"  # built by setup.py, if a C++ compiler was there
    try:
        missing = importlib.util.find_spec(name) is None
    except ValueError:  # already in sys.modules without a spec: a stand-in, leave it to import
        missing = False
    if missing:
        why = (
            "the C++ extension jaxopt_lab.optim._native_ext was not built when jaxopt_lab was "
            "installed (it needs a C++17 compiler, g++); reinstall jaxopt_lab with one"
        )
        return Status(False, why, jaxlib=jaxlib)
    try:
        _native_ext = importlib.import_module(name)
    except ImportError as e:  # e.g. built for another Python, or an undefined symbol
        why = f"the C++ extension jaxopt_lab.optim._native_ext does not load ({e}); {REBUILD_HINT}"
        return Status(False, why, jaxlib=jaxlib)
    build = dict(_native_ext.build_info()) if hasattr(_native_ext, "build_info") else {}
    built = f" (running jaxlib {jaxlib})"
    if "jaxlib" in build:
        against = f"built against jaxlib {build['jaxlib']}, XLA FFI API {build['ffi_api']}"
        built = f" ({against}; running jaxlib {jaxlib})"
    try:
        # Initialise the CPU backend first: a handler registered before it exists is only queued,
        # and one that XLA then refuses makes the backend's initialisation fail outright.
        cpu = jax.devices("cpu")[0]
    except RuntimeError as e:
        return Status(False, f"JAX has no CPU backend in this process ({e})", build, jaxlib)
    try:
        for target, capsule in _native_ext.handlers().items():
            jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    except Exception as e:  # XLA's error type differs between jaxlib versions
        why = f"XLA refused its FFI handlers{built}: {e}; {REBUILD_HINT}"
        return Status(False, why, build, jaxlib)
    try:
        _self_test(cpu)
    except Exception as e:
        why = f"its kernels failed a test run{built}: {e}; {REBUILD_HINT}"
        return Status(False, why, build, jaxlib)
    return Status(True, "", build, jaxlib)


# Per handler: operands (a list: the packed step scalars, or NAdam's per-leaf values of its one
# leaf; an int: SGD's count; a float: a leaf of 3 equal elements), attributes, and the results,
# exact in float32. Roles as in ``one_pass``.
_ADAM_TEST = [0.5, 0.5, 0.25, 0.0, 0.0, 1.0, -0.5, 1.0]  # ADAM_SCALARS, see csrc/native.cc
_RADAM_TEST = [0.5, 0.5, 0.25, 0.0, 0.0, 1.0, 0.5, 0.5, 1.0, 0.5, 1.0]  # RADAM_SCALARS
_NADAM_TEST = [0.5, 0.5, 0.25, 0.0, 0.0, 1.0, 0.25]  # NADAM_SCALARS
_ADAMAX_TEST = [0.5, 0.5, 0.0, 0.0, -0.5]  # ADAMAX_SCALARS
_ADADELTA_TEST = [-0.5, 0.75, 0.25, 0.0, 0.0]  # ADADELTA_SCALARS
_RPROP_TEST = [0.5, 2.0, 0.0, 8.0, -1.0]  # RPROP_SCALARS
_SELF_TESTS = (
    (  # m = lerp(0, 2, 0.5) = 1, v = 0.25 * 2 * 2 = 1, p = 1 - 0.5 * 1 / (sqrt(1) / 1 + 0)
        "jaxopt_lab_adam_f32",
        (_ADAM_TEST, 1.0, 2.0, 0.0, 0.0),
        {"decay": 0, "maximize": False},
        (0.5, 1.0, 1.0),
    ),
    (  # the same with max_exp_avg_sq = 4 > v: p = 1 - 0.5 * 1 / sqrt(4)
        "jaxopt_lab_amsgrad_f32",
        (_ADAM_TEST, 1.0, 2.0, 0.0, 0.0, 4.0),
        {"decay": 0, "maximize": False},
        (0.75, 1.0, 1.0, 4.0),
    ),
    (  # second step (count 1): buf = 0.5 * 2 + 1 * 2 = 3, p = 1 - 0.5 * 3; SGD_SCALARS
        "jaxopt_lab_sgd_momentum_f32",
        ([-0.5, 0.5, 1.0, 0.0], 1, 1.0, 2.0, 2.0),
        {"decay": False, "maximize": False, "nesterov": False},
        (-0.5, 3.0),
    ),
    (  # m = 1, v = 1 as Adam's; rectified: p = 1 - (1 / 0.5 * 0.5) * (1 / (sqrt(1) + 0) * 1) * 0.5
        "jaxopt_lab_radam_f32",
        (_RADAM_TEST, 1.0, 2.0, 0.0, 0.0),
        {"decay": 0, "maximize": False},
        (0.5, 1.0, 1.0),
    ),
    (  # m = 1, v = 1, denom = sqrt(1 / 0.25) = 2: p = 1 + (-0.25 * 2) / 2 + (-0.5 * 1) / 2
        "jaxopt_lab_nadam_f32",
        (_NADAM_TEST, [-0.25], [-0.5], 1.0, 2.0, 0.0, 0.0),
        {"decay": 0, "maximize": False},
        (0.5, 1.0, 1.0),
    ),
    (  # m = lerp(0, 2, 0.5) = 1, u = max(0 * 0.5, |2| + 0) = 2: p = 1 + (-0.5 * 1) / 2
        "jaxopt_lab_adamax_f32",
        (_ADAMAX_TEST, 1.0, 2.0, 0.0, 0.0),
        {"decay": 0, "maximize": False},
        (0.75, 1.0, 2.0),
    ),
    (  # v = 0.25 * 2 * 2 = 1, delta = sqrt(4) / sqrt(1) * 2 = 4, u = 0.25 * 16 + 0.75 * 4
        "jaxopt_lab_adadelta_f32",  # p = 1 - 0.5 * 4
        (_ADADELTA_TEST, 1.0, 2.0, 0.0, 4.0),
        {"decay": 0, "maximize": False},
        (-1.0, 1.0, 7.0),
    ),
    (  # sign(2 * 1) > 0: step = clamp(0.5 * 2, 0, 8) = 1, prev = 2, p = 1 - sign(2) * 1
        "jaxopt_lab_rprop_f32",
        (_RPROP_TEST, 1.0, 2.0, 1.0, 0.5),
        {"decay": 0, "maximize": False},
        (0.0, 2.0, 1.0),
    ),
)


def _self_test(cpu: Any) -> None:
    """Runs every handler once on the CPU device; raises if one fails or computes wrongly."""

    def operand(x: Any) -> np.ndarray:
        if isinstance(x, int):
            return np.asarray(x, np.int32)
        return np.asarray(x if isinstance(x, list) else [x] * 3, np.float32)

    def run(*args: jax.Array) -> list[list[jax.Array]]:
        outs, at = [], 0
        for target, ops, attrs, expected in _SELF_TESTS:
            shapes = [jax.ShapeDtypeStruct((3,), jnp.float32)] * len(expected)
            call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")
            outs.append(list(call(*args[at : at + len(ops)], **attrs)))
            at += len(ops)
        return outs

    args = [operand(x) for _, ops, _, _ in _SELF_TESTS for x in ops]
    # NumPy arguments and a Compiled: it runs now, on the CPU, even when called while tracing.
    with jax.default_device(cpu):
        outs = jax.jit(run).lower(*args).compile()(*args)
    for (target, _, _, expected), got in zip(_SELF_TESTS, outs, strict=True):
        for want, out in zip(expected, got, strict=True):
            if not np.array_equal(np.asarray(out), operand(want)):
                raise RuntimeError(f"{target} returned {np.asarray(out)}, expected {want}")


def _unavailable(st: Status) -> None:
    """Under ``auto``: the pure rule serves; say why, once per process (a warning where JAX
    computes on the CPU by default; on a GPU/TPU machine, where the kernels would only serve
    computations placed on the CPU, at INFO level)."""
    global _WARNED
    with _LOCK:
        if _WARNED:
            return
        _WARNED = True
    level = logging.WARNING if jax.default_backend() == "cpu" else logging.INFO
    log.log(
        level,
        "jaxopt_lab: the one-pass CPU kernels are off, the optimizers run their pure-JAX rules "
        "(the same results, slower on CPU): %s. JAXOPT_LAB_NATIVE=off silences this.",
        st.reason,
    )


def use_for(p: jax.Array, target: str) -> bool:
    """Whether the leaf ``p`` goes through the kernel ``target`` (see the module docstring)."""
    m = mode()
    if m == "off" or jnp.dtype(p.dtype) != jnp.float32:
        return False
    if m == "auto" and p.size < MIN_SIZE[target]:
        return False
    st = status()
    if m == "always":
        if not st.available:
            raise RuntimeError(f"JAXOPT_LAB_NATIVE=always, but the kernels cannot run: {st.reason}")
        return True
    if not st.available:
        _unavailable(st)
        return False
    return st.hardware_fma


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
    update_rest: KernelUpdate | None = None,
) -> tuple[list[jax.Array], list[tuple[Any, ...]]]:
    """Leaves for which ``use_for(p, target)`` holds (and the few small float32 leaves that join
    them, :data:`JOIN_MAX`) go to ``kernel`` together, the rest to
    ``update_rest`` together (if given; Rprop's pure rule orders its loops over all leaves at
    once) or to ``update_leaf`` one by one; results come back in the leaves' order."""

    def each(ps, gs, bufs, ctx):
        pairs = [update_leaf(*leaf, ctx) for leaf in zip(ps, gs, bufs, strict=True)]
        return [p for p, _ in pairs], [b for _, b in pairs]

    kernel_leaves = [use_for(p, target) for p in ps]
    if any(kernel_leaves) and mode() == "auto":  # small float32 leaves may join (JOIN_MAX)
        small = [
            i
            for i, (p, k) in enumerate(zip(ps, kernel_leaves, strict=True))
            if not k and p.size and jnp.dtype(p.dtype) == jnp.float32
        ]
        if len(small) <= JOIN_MAX:
            for i in small:
                kernel_leaves[i] = True
    picked = [i for i, k in enumerate(kernel_leaves) if k]
    rest = [i for i, k in enumerate(kernel_leaves) if not k]
    new_ps: list[Any] = [None] * len(ps)
    new_bufs: list[Any] = [None] * len(ps)
    for idx, fn in ((rest, update_rest or each), (picked, kernel)):
        if idx:
            sub = [[xs[i] for i in idx] for xs in (ps, gs, bufs)]
            sub_ps, sub_bufs = fn(*sub, ctx)
            for j, i in enumerate(idx):
                new_ps[i], new_bufs[i] = sub_ps[j], sub_bufs[j]
    return new_ps, new_bufs


def leaf_updates(
    target: str,
    update_leaf: LeafUpdate,
    names: Sequence[str],
    decay: int,
    maximize: bool,
    update_rest: KernelUpdate | None = None,
) -> KernelUpdate:
    """``update_leaves`` for :func:`jaxopt_lab.optim.leafwise.leafwise`: the leaves
    :func:`route` picks go to the FFI ``target`` (attributes ``decay``, :func:`decay_mode`, and
    ``maximize``) in one call, the others to ``update_rest`` (all at once) or ``update_leaf``.

    For a rule whose step scalars are ``names`` (packed in that order from ``ctx.scalars``,
    shared by the leaves) and whose state is params-shaped buffers, each an operand and a result
    of the handler (roles: param, grad, then each buffer that is not ``None``: a ``None`` buffer,
    as Adam's ``max_exp_avg_sq`` without AMSGrad, is no role and stays ``None``).
    ``update_leaf(p, g, buffers, ctx) -> (p, buffers)`` is the pure rule; as :func:`one_pass`'s
    ``rule`` it may read only ``ctx.scalars`` (the ``names``) and ``ctx.zero``.
    """

    def kernel(ps, gs, bufs, ctx):  # the float32 leaves, in one call
        present = [k for k, b in enumerate(bufs[0]) if b is not None]

        def with_nones(arrays):  # the present buffers back in their places
            full = [None] * len(bufs[0])
            for k, x in zip(present, arrays, strict=True):
                full[k] = x
            return tuple(full)

        def rule(p, g, *rest):  # (*buffers, packed scalars, zero), as one_pass passes them
            *leaf_bufs, packed, zero = rest
            count = jnp.zeros((), jnp.int32)  # not read; the outer count is not closed over
            leaf_ctx = ctx._replace(count=count, scalars=unpack(packed, names), zero=zero)
            new_p, new_bufs = update_leaf(p, g, with_nones(leaf_bufs), leaf_ctx)
            return (new_p, *(new_bufs[k] for k in present))

        new_p, *new_bufs = one_pass(
            target,
            rule,
            [ps, gs, *([b[k] for b in bufs] for k in present)],
            outputs=(0, *range(2, 2 + len(present))),
            operands=(pack(ctx.scalars, names),),
            rule_only=(ctx.zero,),
            decay=decay,
            maximize=maximize,
        )
        return new_p, [with_nones(leaf) for leaf in zip(*new_bufs, strict=True)]

    def update_leaves(ps, gs, bufs, ctx):
        return route(ps, gs, bufs, ctx, update_leaf, kernel, target, update_rest)

    return update_leaves


def one_pass(
    target: str,
    rule: Rule,
    columns: Sequence[Sequence[jax.Array]],
    outputs: Sequence[int],
    operands: Sequence[jax.Array],
    rule_only: Sequence[jax.Array] = (),
    leaf_operands: Sequence[jax.Array] = (),
    **attrs: Any,
) -> list[list[jax.Array]]:
    """Apply a per-leaf ``rule`` to many leaves in one call of the FFI ``target``, in place.

    Args:
      target: the registered handler's name. It takes ``(*operands, *arrays)`` with the arrays
        role-major (every leaf's param, then every leaf's grad, then each state buffer) and
        ``attrs``, and returns the ``outputs`` roles, role-major, each aliasing its input.
      rule: the pure-JAX rule for one leaf,
        ``rule(*leaf_arrays, *operands, *(x[leaf] for x in leaf_operands), *rule_only)``,
        returning one array per entry of ``outputs``: bitwise what the handler writes. It serves
        other backends (``jax.lax.platform_dependent``) and all derivatives (``custom_jvp``).
      columns: per role, the leaves (all roles the same length and shapes).
      outputs: the roles the results replace, in result order.
      operands: handler operands besides the arrays (packed scalars, a step count).
      rule_only: operands only the pure rule needs.
      leaf_operands: handler operands after ``operands``, each a vector with one entry per leaf
        (NAdam's step sizes); the rule gets its leaf's entry.
      attrs: the handler's static attributes.

    Returns:
      Per entry of ``outputs``, the new leaves.
    """
    n_roles, n_leaves = len(columns), len(columns[0])
    n_scalar_ops = len(operands)
    n_ops = n_scalar_ops + len(leaf_operands)
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
        ops, by_leaf = args[:n_scalar_ops], args[n_scalar_ops:n_ops]
        flat, extra = args[n_ops:n_native], args[n_native:]
        per_leaf = [
            rule(
                *[flat[r * n_leaves + leaf] for r in range(n_roles)],
                *ops,
                *[x[leaf] for x in by_leaf],
                *extra,
            )
            for leaf in range(n_leaves)
        ]
        return [per_leaf[leaf][k] for k in range(len(outputs)) for leaf in range(n_leaves)]

    @jax.custom_jvp
    def f(*args: jax.Array) -> list[jax.Array]:
        return jax.lax.platform_dependent(*args, cpu=native, default=pure)

    f.defjvp(lambda primals, tangents: jax.jvp(pure, primals, tangents))
    flat_out = f(*operands, *leaf_operands, *arrays, *rule_only)
    return [flat_out[k * n_leaves : (k + 1) * n_leaves] for k in range(len(outputs))]
