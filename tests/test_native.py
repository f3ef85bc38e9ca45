"""The one-pass CPU kernels (``jaxopt_lab.optim.native``) equal the pure-JAX rules bit for bit.

Each row of ``cases.CASES`` that has a kernel (Adam, AdamW, AMSGrad, momentum SGD, RAdam,
NAdam, Adamax, Adadelta, Rprop), and the rows of ``EXTRA_CASES``, runs a few steps twice,
``JAXOPT_LAB_NATIVE=off`` (XLA) and ``=always`` (kernel), on one problem holding every kind of
leaf (``LEAVES``), with x64 on and off; params, every state buffer and the count must be
identical, signed zeros and subnormals included (NaNs: same places, see the test). torch parity
of the kernels themselves is ``test_parity.py``'s ``kernel`` rows. The rest: routing under ``auto``,
in-place updates under donation, derivatives and ``vmap`` through a kernel, and the lowering for
GPU (the pure rule, no custom call).
"""

from __future__ import annotations

import os
import re
import shutil
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import bitwise_equal, ulp_distance
from cases import CASES, Case

import jaxopt_lab as jol
from jaxopt_lab import registry
from jaxopt_lab.optim import native as _native

KERNELS = _native.status()
TARGETS = tuple(_native.MIN_SIZE)
# Scheduled weight decays that are 0 on some steps: torch's `if weight_decay != 0` is then taken
# per step (the kernels' decay mode 3), and a skipped L2 term keeps a -0.0 gradient's sign.


def _sometimes_zero(count: jax.Array) -> jax.Array:
    return jnp.where(count % 2 == 0, 0.0, 0.1)


# Rprop's factors are written one after another into the sign tensor and the gradient is zeroed
# where the result equals etaminus: scheduled etas outside 0 < etaminus < 1 < etaplus take the
# other branches (etaminus = 1: zeroed where the sign product is <= 0 or NaN; etaplus < 0, at
# count 2 after an unmasked step: the positive products get etaminus too).
def _etaminus_sometimes_one(count: jax.Array) -> jax.Array:
    return jnp.where(count % 2 == 0, 1.0, 0.5)


def _etaplus_sometimes_negative(count: jax.Array) -> jax.Array:
    return jnp.where(count % 3 == 2, -2.0, 1.2)


EXTRA_CASES = [
    Case("radam", {"lr": 1e-3, "weight_decay": _sometimes_zero}, "wd-sometimes-zero"),
    Case("nadam", {"lr": 2e-3, "weight_decay": _sometimes_zero}, "wd-sometimes-zero"),
    Case("adamax", {"lr": 2e-3, "weight_decay": _sometimes_zero}, "wd-sometimes-zero"),
    Case("adadelta", {"lr": 1.0, "weight_decay": _sometimes_zero}, "wd-sometimes-zero"),
    Case(
        "rprop",
        {"etas": (_etaminus_sometimes_one, _etaplus_sometimes_negative)},
        "etas-scheduled-out-of-range",
    ),
    # Zero step sizes against zero bounds of the other sign: the clamp's maximum (+0 against a
    # -0 lower bound) and minimum (-0 against a +0 upper bound) of signed zeros.
    Case("rprop", {"lr": 0.0, "step_sizes": (-0.0, 1.0)}, "zero-step-sizes-max"),
    Case("rprop", {"lr": -0.0, "step_sizes": (-0.0, 0.0)}, "zero-step-sizes-min"),
    # Subnormal bounds: XLA's max and min read them as zeros of their sign (DAZ).
    Case("rprop", {"lr": 1e-3, "step_sizes": (-1e-40, 1e-40)}, "subnormal-step-sizes"),
]
KERNEL_CASES = [c for c in CASES if c.has_kernel] + EXTRA_CASES
# RAdam rectifies from step 6 at the earliest (rho_t < t): 8 steps take both branches.
STEPS = {"radam": 8}
DEFAULT_STEPS = 4


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Values over 16 decades (7 in float16), with zeros of both signs and subnormals mixed in."""
    decades = 3 if np.dtype(dtype) == np.float16 else 8
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-decades, decades, shape)
    flat = x.reshape(-1)
    flat[::7] = 0.0
    flat[1::11] = -0.0
    flat[2::13] = 3e-42  # subnormal in float32
    return x.astype(dtype)


# One problem with every kind of leaf: small and odd shapes, a 0-d and an empty array, one that
# spans many of the kernel's 16 Ki blocks (the thread pool shares it out; the small leaves
# before it share one task, its last partial block shares one with the leaf after), float16 and
# float64 leaves (never a kernel: they must come out as the pure rule's), and one whose grads carry
# NaN and +-inf. One problem, not one per kind: each (case, mode) compiles once.
LEAVES = [
    ((37, 11), np.float32),
    ((), np.float32),
    ((0,), np.float32),
    ((3 * 65536 + 11,), np.float32),
    ((40,), np.float16),
    ((9,), np.float64),
    ((513,), np.float32),
]
SPECIALS = (np.nan, np.inf, -np.inf)  # written at the start of the last leaf's grads


def _problem(seed: int = 0, steps: int = DEFAULT_STEPS):
    rng = np.random.default_rng(seed)
    params = [jnp.asarray(_values(rng, s, d)) for s, d in LEAVES]
    grads = []
    for _ in range(steps):
        step = [_values(rng, s, d) for s, d in LEAVES]
        step[-1][: len(SPECIALS)] = SPECIALS
        grads.append([jnp.asarray(g) for g in step])
    return params, grads


def _trajectory(case, mode: str, monkeypatch, x64: bool = True) -> list:
    monkeypatch.setenv("JAXOPT_LAB_NATIVE", mode)  # read when the update is first traced
    with jax.enable_x64(x64):  # off: float64 leaves are float32 ones (more kernel leaves)
        opt = case.make()
        params, grads = _problem(steps=STEPS.get(case.algo, DEFAULT_STEPS))
        state = opt.init(params)
        update = jax.jit(opt.update, donate_argnums=(0, 2))
        out = []
        for g in grads:
            params, state = update(params, g, state)
            out.append(jax.tree.map(np.asarray, (params, state)))
    return out


def _same_up_to_nan_sign(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (signed zeros included) where not NaN; NaNs at the same places."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not np.issubdtype(a.dtype, np.floating):
        return bool(np.array_equal(a, b))
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and bitwise_equal(a[~nan], b[~nan]).all())


def _hlo(fn, *args) -> str:
    return jax.jit(fn, donate_argnums=(0, 2)).lower(*args).compile().as_text()


def _lowered_hlo(fn, *args) -> str:
    """The HLO of ``fn`` as traced and lowered for the CPU, before XLA's passes (no compile)."""
    return jax.jit(fn).lower(*args).compiler_ir(dialect="hlo").as_hlo_text()


def _kernel_calls(hlo: str) -> int:
    return sum(hlo.count(f'custom_call_target="{t}"') for t in TARGETS)


def test_extension_is_built():
    """The suite runs against a built extension (else every kernel row below would be moot),
    wherever a C++ compiler was there to build it."""
    if os.environ.get("JAXOPT_LAB_NATIVE", "auto") == "off":
        pytest.skip("JAXOPT_LAB_NATIVE=off: kernels disabled for this run")
    cxx = (sysconfig.get_config_var("CXX") or "g++").split()[0]
    if not KERNELS.available and shutil.which(os.environ.get("CXX", cxx)) is None:
        pytest.skip(f"no C++ compiler ({cxx}): installed without the kernels ({KERNELS.reason})")
    assert KERNELS.available, KERNELS.reason


def test_registry_names_every_kernel():
    """The registry's ``kernels`` name exactly the kernels there are (``MIN_SIZE``'s targets), and
    every case row that this file runs through a kernel is of an algorithm that names one."""
    assert {t for a in registry.ALGORITHMS for t in a.kernels} == set(_native.MIN_SIZE)
    assert all(registry.get(c.algo).kernels for c in KERNEL_CASES)


def _kernel_params():
    """Every kernel row with x64 on (the suite's mode); with x64 off too those whose step
    scalars are double-single arithmetic (RAdam's r_t, NAdam's per-leaf step sizes, Adamax's
    lr / (1 - beta1^t)), Adadelta's and Rprop's (constant scalars: one row each, for the L2
    modes and for the scheduled etas)."""
    x64_off = ("adadelta-wd-sometimes-zero", "rprop-etas-scheduled-out-of-range")
    for c in KERNEL_CASES:
        yield pytest.param(c, True, id=f"{c.id}-x64-on")
        if c.algo in ("radam", "nadam", "adamax") or c.id in x64_off:
            yield pytest.param(c, False, id=f"{c.id}-x64-off")


@pytest.mark.requires_kernels
@pytest.mark.parametrize(("case", "x64"), list(_kernel_params()))
def test_kernel_equals_pure_rule(case, x64, monkeypatch):
    """Bit for bit, except a NaN's sign and payload: IEEE 754 leaves them open, and x86 takes
    them from the first NaN operand, so an FMA whose operands LLVM orders differently (XLA vs
    g++) may give -NaN for NaN. Where the NaNs are, and every other bit, must agree."""
    pure = _trajectory(case, "off", monkeypatch, x64)
    kernel = _trajectory(case, "always", monkeypatch, x64)
    for step, (a, b) in enumerate(zip(pure, kernel, strict=True)):
        leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(leaves_a) == len(leaves_b)
        for i, (x, y) in enumerate(zip(leaves_a, leaves_b, strict=True)):
            assert _same_up_to_nan_sign(x, y), f"step {step}, leaf {i} ({x.dtype}{x.shape}) differs"


def _kernel_leaf_shapes(hlo: str) -> set[str]:
    """The shapes of the arrays the kernel calls in ``hlo`` return (one per leaf and role)."""
    shapes: set[str] = set()
    for line in hlo.splitlines():
        if any(f'custom_call_target="{t}"' in line for t in TARGETS):
            result = line.split(" custom-call(")[0].split(" = ", 1)[1]
            shapes |= set(re.findall(r"f32\[[0-9,]*\]", result))
    return shapes


@pytest.mark.requires_kernels
@pytest.mark.skipif(
    KERNELS.available and not KERNELS.hardware_fma,
    reason=f"auto keeps XLA's loops: this build has no hardware FMA here ({KERNELS.build})",
)
@pytest.mark.parametrize(
    ("make", "target"),
    [
        (lambda: jol.adam(1e-3), "jaxopt_lab_adam_f32"),
        (lambda: jol.radam(1e-3), "jaxopt_lab_radam_f32"),
        (lambda: jol.nadam(2e-3), "jaxopt_lab_nadam_f32"),
        (lambda: jol.adamax(2e-3), "jaxopt_lab_adamax_f32"),
        (lambda: jol.adadelta(1.0), "jaxopt_lab_adadelta_f32"),
        (lambda: jol.rprop(1e-2), "jaxopt_lab_rprop_f32"),
    ],
    ids=["adam", "radam", "nadam", "adamax", "adadelta", "rprop"],
)
@pytest.mark.parametrize("n_small", [1, _native.JOIN_MAX, _native.JOIN_MAX + 1])
def test_kernel_is_used_where_it_should(make, target, n_small, monkeypatch):
    """Which leaves the kernel updates, per mode: under ``auto`` float32 leaves >= MIN_SIZE, and
    the smaller float32 leaves with them when there are at most JOIN_MAX of those; small leaves
    alone make no call. (The modes ``always`` and ``off`` do not count leaves: one row each.)
    Read from the HLO before XLA's passes: routing is decided when the update is traced."""
    big, small = _native.MIN_SIZE[target], _native.MIN_SIZE[target] - 1
    params = {
        "big": jnp.zeros((big,), jnp.float32),
        "small": [jnp.zeros((small,), jnp.float32)] * n_small,
        "big16": jnp.zeros((big,), jnp.float16),
    }
    joined = {f"f32[{small}]"} if n_small <= _native.JOIN_MAX else set()
    expected = {"auto": {f"f32[{big}]", *joined}}
    if n_small == 1:
        expected |= {"always": {f"f32[{big}]", f"f32[{small}]"}, "off": set()}
    for mode, shapes in expected.items():
        monkeypatch.setenv("JAXOPT_LAB_NATIVE", mode)
        opt = make()  # a new optimizer: the mode is read when its update is traced
        hlo = _lowered_hlo(opt.update, params, params, opt.init(params))
        assert _kernel_leaf_shapes(hlo) == shapes, mode
        assert _kernel_calls(hlo) == (1 if shapes else 0), mode  # all of them in one call
    monkeypatch.setenv("JAXOPT_LAB_NATIVE", "auto")
    opt = make()
    only_small = {"small": params["small"]}
    hlo = _lowered_hlo(opt.update, only_small, only_small, opt.init(only_small))
    assert _kernel_calls(hlo) == 0


@pytest.mark.requires_kernels
def test_kernel_updates_in_place_when_donated(monkeypatch):
    """With donation the compiled step copies no parameter-sized buffer (the kernel aliases)."""
    monkeypatch.setenv("JAXOPT_LAB_NATIVE", "always")
    n = 4099
    params = [jnp.zeros((n,), jnp.float32)]
    for opt in (
        jol.adam(1e-3, amsgrad=True),
        jol.sgd(1e-2, momentum=0.9),
        jol.radam(1e-3),
        jol.nadam(2e-3),
        jol.adamax(2e-3),
        jol.adadelta(1.0),
        jol.rprop(1e-2),
    ):
        hlo = _hlo(opt.update, params, params, opt.init(params))
        assert _kernel_calls(hlo) == 1
        assert f"f32[{n}]{{0}} copy(" not in hlo


GRAD_IDS = (
    "sgd-nesterov",
    "adam-amsgrad-wd",
    "adamw-wd-maximize",
    "radam-decoupled-maximize",
    "nadam-wd",
    "nadam-wd-sometimes-zero",
    "adamax-wd-maximize",
    "adadelta-wd",
    "rprop-maximize",
)
GRAD_CASES = [c for c in KERNEL_CASES if c.id in GRAD_IDS]


@pytest.mark.requires_kernels
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_derivatives_and_vmap_through_a_kernel(case, monkeypatch):
    """``vmap``: bit for bit. ``jax.grad`` of a loss after one update: within 4 ULP.

    Derivatives come from the pure rule in both modes, but inside ``custom_jvp`` the graph XLA
    simplifies is shaped differently and its algebraic simplifier associates constant factors
    differently: ``(3 q^2) * (-lr)`` in one, ``q^2 * (-3 lr)`` in the other (read in the
    compiled HLO for momentum SGD). For the SGD rows the derivative is a product of at most four
    rounded factors (``3``, ``q^2``, ``-lr``, ``1 + momentum``); each association is within
    2 ULP of the exact product, so two associations are within 4 ULP of each other. RAdam's
    first (unrectified) step has five for the gradient (``3``, ``q^2``, ``1 - beta1``,
    ``1 / bias_correction1``, ``lr``): four roundings, each association again within 2 ULP.
    Measured here: 2 (SGD Nesterov, RAdam), 0 for the Adam, NAdam, Adamax, Adadelta and Rprop
    rows, whose graphs simplify alike.
    """
    rng = np.random.default_rng(3)
    p = {"w": jnp.asarray(rng.standard_normal((4, 33)), jnp.float32)}
    g = {"w": jnp.asarray(rng.standard_normal((4, 33)), jnp.float32)}

    def run(mode):
        monkeypatch.setenv("JAXOPT_LAB_NATIVE", mode)
        opt = case.make()

        def loss(p, g):
            q, _ = opt.update(p, g, opt.init(p))
            return jnp.sum(q["w"] ** 3)

        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, g)
        batched = jax.jit(jax.vmap(opt.update))(p, g, jax.vmap(opt.init)(p))
        return jax.tree.leaves(grads), jax.tree.leaves(batched)

    (grads_a, batched_a), (grads_b, batched_b) = run("off"), run("always")
    assert max(ulp_distance(x, y).max() for x, y in zip(grads_a, grads_b, strict=True)) <= 4
    assert all(_same_up_to_nan_sign(x, y) for x, y in zip(batched_a, batched_b, strict=True))


@pytest.mark.requires_kernels
@pytest.mark.parametrize(
    ("make", "target"),
    [
        (lambda: jol.adam(1e-3, amsgrad=True), "jaxopt_lab_amsgrad_f32"),
        (lambda: jol.radam(1e-3), "jaxopt_lab_radam_f32"),
        (lambda: jol.nadam(2e-3), "jaxopt_lab_nadam_f32"),
        (lambda: jol.adamax(2e-3, weight_decay=0.1), "jaxopt_lab_adamax_f32"),
        (lambda: jol.adadelta(1.0, maximize=True), "jaxopt_lab_adadelta_f32"),
        (lambda: jol.rprop(1e-2, maximize=True), "jaxopt_lab_rprop_f32"),
    ],
    ids=["amsgrad", "radam", "nadam", "adamax", "adadelta", "rprop"],
)
def test_gpu_lowering_uses_the_pure_rule(make, target, monkeypatch):
    """Lowered for CUDA the update calls no kernel (``platform_dependent``); for CPU it does."""
    monkeypatch.setenv("JAXOPT_LAB_NATIVE", "always")
    opt = make()
    p = {"w": jnp.ones((10,), jnp.float32)}
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in TARGETS]

    def exported(platform: str) -> str:
        exp = jax.export.export(jax.jit(opt.update), platforms=[platform], disabled_checks=checks)
        return exp(p, p, opt.init(p)).mlir_module()

    assert target not in exported("cuda")
    assert target in exported("cpu")
