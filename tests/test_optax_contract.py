"""optax's own optimizer contract, run on every jaxopt_lab optimizer wrapped by ``as_optax``.

optax ships its generic optimizer tests in the wheel (``optax/_src/alias_test.py``). Their bodies
are run here unchanged -- the undecorated test methods of its ``AliasTest``, called with our
optimizers in place of ``optax.<name>`` (its module-level ``_get_opt`` is swapped for a lookup in
``ROWS``) -- so the checks are optax's, not a re-telling of them:

* ``test_optimization``: 10,000 jitted steps on a parabola and on Rosenbrock (float32 and
  complex64) reach the optimum within 3e-2; ``optax.tree.map_params`` works on the state; the
  second step does not recompile;
* ``test_optimizers_accept_extra_args``: ``update(..., unexpected_extra_args=1)``;
* ``test_optimizers_can_be_wrapped_in_inject_hyperparams``: EVERY numeric hyper-parameter of the
  factory (torch's signature, defaults applied) becomes a traced array in the state, and the
  updates and states equal the plain optimizer's;
* ``test_preserve_dtype``: updates keep the grads' dtype (bfloat16, float32);
* ``test_state_shape_dtype_shard_stability``: state structure and dtypes are unchanged by an
  update, checked through ``lax.cond`` for float16, bfloat16, float32, float64, complex64 and
  complex128 (with x64 off for the 32-bit ones, on for the others);
* ``test_gradient_accumulation``: under ``optax.MultiSteps(every_k_schedule=4)`` the first
  update is exactly zero.

Not run: ``test_explicit_dtype`` (optax's ``accumulator_dtype``/``mu_dtype`` options; here the
state lives in the params' dtype, as torch's) and the algorithm-specific tests (LBFGS, ...).
optax's module imports scikit-learn for its logistic-regression test only; when scikit-learn is
absent an empty stand-in is put in ``sys.modules`` for the import and removed right after.

The table is built from ``jaxopt_lab.registry``: every algorithm whose factory returns an
``Optimizer`` (L-BFGS's ``ClosureOptimizer`` has no ``update`` to wrap) joins, with ``HYPER``'s
rows for it or with torch's defaults. ``SKIP`` and ``XFAIL`` mark, with the reason, what an
optimizer cannot meet.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import sys
import types
import unittest
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import bitwise_equal, correctly_rounded_torch_sqrt, grad_stream, init_params
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxopt_lab as jol
from jaxopt_lab import registry
from jaxopt_lab.optim.leafwise import vector_fields


def _import_alias_test() -> types.ModuleType:
    stand_ins = {}
    if importlib.util.find_spec("sklearn") is None:
        for name in ("sklearn", "sklearn.datasets", "sklearn.linear_model"):
            stand_ins[name] = types.ModuleType(name)
        stand_ins["sklearn"].datasets = stand_ins["sklearn.datasets"]
        stand_ins["sklearn"].linear_model = stand_ins["sklearn.linear_model"]
    sys.modules.update(stand_ins)
    try:
        from optax._src import alias_test
    finally:
        for name in stand_ins:
            del sys.modules[name]
    return alias_test


alias_test = _import_alias_test()


def _optax_test(name: str) -> Callable[..., None]:
    """The undecorated body of ``AliasTest.<name>`` (absl's parameterized copies wrap it)."""
    for attr, method in vars(alias_test.AliasTest).items():
        if attr.startswith(name) and attr[len(name) :].isdigit():
            return method.__wrapped__
    raise LookupError(f"optax's AliasTest has no {name}")


def _wraps_as_optax(algorithm: registry.Algorithm) -> bool:
    return inspect.signature(algorithm.factory).return_annotation in ("Optimizer", jol.Optimizer)


OPTIMIZERS = [a.name for a in registry.ALGORITHMS if _wraps_as_optax(a)]

# Hyper-parameters for optax's problems: its own table's learning rates where the algorithm is
# the same; one entry per row, as (desc, kwargs). Optimizers not listed run with torch's defaults.
HYPER: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "sgd": [("momentum", {"lr": 1e-3, "momentum": 0.9})],
    "adam": [("", {"lr": 1e-1})],
    # torch's default decay 1e-2 moves the complex Rosenbrock optimum (|x| = 2) by more than
    # the 3e-2 tolerance; optax's adamw default, 1e-4, does not.
    "adamw": [("", {"lr": 1e-1, "weight_decay": 1e-4})],
    "rmsprop": [("plain", {"lr": 5e-3}), ("momentum", {"lr": 5e-3, "momentum": 0.9})],
    "adagrad": [("", {"lr": 1.0})],
    "nadam": [("", {"lr": 1e-2})],
    "radam": [("", {"lr": 5e-3})],
    "adamax": [("", {"lr": 1e-1})],
    "adadelta": [("", {"lr": 0.1})],  # torch's lr=1.0 ends at (0.56, 0.41) on Rosenbrock
    "asgd": [("", {"lr": 1e-3})],  # steps as plain SGD: torch's 1e-2 diverges on Rosenbrock
    "rprop": [("", {"lr": 1e-1})],
    "adafactor": [("", {"lr": 5e-3})],
    "sparse_adam": [("", {"lr": 1e-1})],
}

_NO_COMPLEX = "torch rejects complex params for it (as this port does)"
_TWO_D = "takes 2-D params only, as torch's Muon; optax's problems are 1-D"
_SPARSE = "takes sparse (BCOO) grads only, as torch's SparseAdam; optax's problems pass dense"
_CHECKS = (
    "optimization",
    "extra_args",
    "inject",
    "preserve_dtype",
    "state_stability",
    "accumulation",
    "masked",
)
_OWN_SPECS = (
    "torch's per-param 0-d scalar state ({}) takes no spec of the param's rank: sharding code "
    "maps those fields with an f of its own (test_map_params: they are reached)"
)
_TRACED_BUFFER = (
    "inject_hyperparams traces the default momentum=0, and a traced momentum keeps its "
    "momentum_buffer (the state's structure cannot depend on a traced value), so optax's "
    "comparison with the plain momentum=0 state finds one more field. The steps are torch's "
    "momentum=0 steps bit for bit: test_traced_zero_is_torchs_zero_step"
)

# Optimizer name (or row id) -> {check: reason}; a check is a test's short name, optionally
# with its parameters' ids ("optimization-_setup_rosenbrock-complex64"), or "complex". A SKIP
# reason is a property of the algorithm or a deliberate difference; an XFAIL (strict) a known
# defect, so that the fix turns the row red until the mark goes.
SKIP: dict[str, dict[str, str]] = {
    "muon": dict.fromkeys(_CHECKS, _TWO_D),
    "sparse_adam": dict.fromkeys(_CHECKS, _SPARSE),
    "adafactor": {"complex": _NO_COMPLEX},
    "rmsprop-plain": {"inject": _TRACED_BUFFER},
    "asgd": {
        "shardings": _OWN_SPECS.format("eta, mu"),
        "optimization-_setup_rosenbrock-complex64": (
            "too slow for 10,000 steps (its steps are plain SGD's, the average is kept aside): "
            "ends at (0.970+0.970j, 0.000+1.880j); a larger lr oscillates on this problem"
        ),
    },
    "adadelta": {
        "optimization-_setup_rosenbrock-complex64": (
            "too slow for 10,000 steps: ends at (0.969+0.974j, 0.033+1.892j), 3e-2 from "
            "(1+1j, 2j); optax skips its own adadelta on complex (it ends at (0.75+0.76j, "
            "0.05+1.19j) with the same lr)"
        )
    },
}
# Optimizer name (or row id) -> {"<optax test>:<subTest message>": reason}: one subTest of
# optax's body that fails while the others must pass (see run_optax).
SUBTEST_XFAIL: dict[str, dict[str, str]] = {}

XFAIL: dict[str, dict[str, str]] = {}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kwargs: dict[str, Any]
    desc: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}-{self.desc}" if self.desc else self.name

    @property
    def key(self) -> str:
        """The name optax's test bodies see: prefixed, so none of their per-name special cases
        (``'rprop'``, ``'adadelta'``, ``'adafactor'``, ...) applies to ours by accident."""
        return f"jol.{self.id}"


ROWS = [Row(n, kw, d) for n in OPTIMIZERS for d, kw in HYPER.get(n, [("", {})])]


def as_optax_factory(name: str) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``jol.<name>`` with the same signature (``inject_hyperparams`` reads it), as optax."""
    factory = getattr(jol, name)

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
        return jol.as_optax(factory(*args, **kwargs))

    return make


@pytest.fixture
def run_optax(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``run_optax(test_name, row, *args)``: optax's test body, run as unittest runs it.

    Its ``_get_opt`` looks our rows up. Each ``subTest`` failure is recorded and the body goes
    on, as under unittest; the failures must be exactly the row's ``SUBTEST_XFAIL`` entries
    (strict: an entry that passes fails the test, so that the mark goes with the defect). A
    ``SkipTest`` from optax's body skips.
    """
    by_key = {row.key: as_optax_factory(row.name) for row in ROWS}
    monkeypatch.setattr(alias_test, "_get_opt", lambda self, opt_name: by_key[opt_name])

    def run(name: str, row: Row, *args: Any) -> None:
        body = _optax_test(name)
        case = alias_test.AliasTest()
        case.runTest = lambda: body(case, row.key, row.kwargs, *args)
        result = unittest.TestResult()
        case.run(result)
        if result.skipped:
            pytest.skip(result.skipped[0][1])
        failed = {getattr(t, "_message", name): trace for t, trace in result.errors}
        failed.update({getattr(t, "_message", name): tr for t, tr in result.failures})
        expected = {**SUBTEST_XFAIL.get(row.name, {}), **SUBTEST_XFAIL.get(row.id, {})}
        expected = {k: v for k, v in expected.items() if k.startswith(f"{name}:")}
        expected = {k.split(":", 1)[1]: v for k, v in expected.items()}
        unexpected = {k: v for k, v in failed.items() if k not in expected}
        assert not unexpected, "\n".join(f"{k}:\n{v}" for k, v in unexpected.items())
        passed = set(expected) - set(failed)
        assert not passed, f"expected to fail, passed (remove the SUBTEST_XFAIL entry): {passed}"

    return run


def _params(check: str, *axes: list[Any], complex_at: int | None = None) -> list[Any]:
    """pytest params over ``ROWS`` x ``axes``; ``complex_at``: the axis holding a dtype."""
    out = []
    for row in ROWS:
        for values in _product(axes):
            checks = [check, "-".join([check, *(_name(v) for v in values)])]
            if complex_at is not None and np.iscomplexobj(np.zeros((), values[complex_at])):
                checks.append("complex")
            marks = []
            for c in checks:
                skip = {**SKIP.get(row.name, {}), **SKIP.get(row.id, {})}
                xfail = {**XFAIL.get(row.name, {}), **XFAIL.get(row.id, {})}
                if c in skip:
                    marks.append(pytest.mark.skip(reason=skip[c]))
                if c in xfail:
                    marks.append(pytest.mark.xfail(strict=True, reason=xfail[c]))
            ids = [row.id, *(_name(v) for v in values)]
            out.append(pytest.param(row, *values, marks=marks, id="-".join(ids)))
    return out


def _product(axes: tuple[list[Any], ...]) -> list[tuple[Any, ...]]:
    combos: list[tuple[Any, ...]] = [()]
    for axis in axes:
        combos = [(*c, v) for c in combos for v in axis]
    return combos


def _name(value: Any) -> str:
    return getattr(value, "__name__", None) or jnp.dtype(value).name


_TARGETS = [alias_test._setup_parabola, alias_test._setup_rosenbrock]


@pytest.mark.parametrize(
    ("row", "target", "dtype"),
    _params("optimization", _TARGETS, [jnp.float32, jnp.complex64], complex_at=1),
)
def test_optimization(run_optax, row, target, dtype):
    run_optax("test_optimization", row, target, dtype)


@pytest.mark.parametrize("row", _params("extra_args"))
def test_optimizers_accept_extra_args(run_optax, row):
    run_optax("test_optimizers_accept_extra_args", row)


@pytest.mark.parametrize("row", _params("inject"))
def test_optimizers_can_be_wrapped_in_inject_hyperparams(run_optax, row):
    run_optax("test_optimizers_can_be_wrapped_in_inject_hyperparams", row)


@pytest.mark.parametrize(("row", "dtype"), _params("preserve_dtype", ["bfloat16", "float32"]))
def test_preserve_dtype(run_optax, row, dtype):
    run_optax("test_preserve_dtype", row, dtype)


_STABILITY_DTYPES = [
    jnp.float16,
    jnp.bfloat16,
    jnp.float32,
    jnp.float64,
    jnp.complex64,
    jnp.complex128,
]


@pytest.mark.parametrize(
    ("row", "dtype"), _params("state_stability", _STABILITY_DTYPES, complex_at=0)
)
def test_state_shape_dtype_shard_stability(run_optax, row, dtype):
    run_optax("test_state_shape_dtype_shard_stability", row, dtype)


@pytest.mark.parametrize(("row", "dtype"), _params("accumulation", ["bfloat16", "float32"]))
def test_gradient_accumulation(run_optax, row, dtype):
    with jax.numpy_dtype_promotion("standard"):  # MultiSteps mixes int32 and float32 itself
        run_optax("test_gradient_accumulation", row, dtype)


def test_every_optimizer_is_in_the_table():
    """Every registry algorithm but the closure-driven ones is in the table, and every
    HYPER/SKIP/XFAIL key names one of its optimizers or rows (a typo would drop settings)."""
    closure_driven = {a.name for a in registry.ALGORITHMS} - set(OPTIMIZERS)
    assert closure_driven == {"lbfgs"}, closure_driven
    known = set(OPTIMIZERS) | {row.id for row in ROWS}
    for table in (HYPER, SKIP, XFAIL, SUBTEST_XFAIL):
        assert set(table) <= known, table.keys()


# --- what optax's contract does not cover ------------------------------------------------------


def _tree() -> dict[str, jax.Array]:
    return {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(3, 2), "b": jnp.ones(2, jnp.float32)}


@pytest.mark.parametrize("row", _params("masked"))
def test_empty_and_masked_subtrees(row):
    """``optax.partition`` and ``optax.masked`` hand the transformation empty or fully masked
    trees (``optax.MaskedNode`` leaves); it must take them (torch's "empty parameter list" error
    belongs to ``opt.init``), and the partly masked steps must equal the plain optimizer's."""
    tx = as_optax_factory(row.name)(**row.kwargs)
    params, grads = _tree(), jax.tree.map(lambda x: x * 0.5 - 1.0, _tree())
    with jax.numpy_dtype_promotion("standard"):  # optax's own transformations mix dtypes
        labels = {"w": "none", "b": "none"}
        part = optax.partition({"ours": tx, "none": optax.set_to_zero()}, labels)
        updates, _ = jax.jit(part.update)(grads, part.init(params), params)
        assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
        masked = optax.masked(tx, {"w": False, "b": True})
        state = masked.init(params)
        updates, _ = jax.jit(masked.update)(grads, state, params)
    alone_state = tx.init({"b": params["b"]})
    alone, _ = jax.jit(tx.update)({"b": grads["b"]}, alone_state, {"b": params["b"]})
    assert bitwise_equal(np.asarray(updates["b"]), np.asarray(alone["b"])).all()
    assert bitwise_equal(np.asarray(updates["w"]), np.asarray(grads["w"])).all()  # untouched
    empty = tx.init({})
    assert tx.update({}, empty, {})[0] == {}
    with pytest.raises(ValueError, match="empty parameter list"):
        getattr(jol, row.name)(**row.kwargs).init({})


def test_extra_args_reach_through_chain():
    """``optax.chain`` and ``nnx``-style callers pass ``value=`` etc. to every member."""
    tx = optax.chain(optax.clip_by_global_norm(1.0), jol.as_optax(jol.sgd(0.1, momentum=0.9)))
    assert isinstance(jol.as_optax(jol.sgd()), optax.GradientTransformationExtraArgs)
    params, grads = _tree(), _tree()
    with jax.numpy_dtype_promotion("standard"):
        updates, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(1.0), key=0)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def _shape_dependent_params(name: str) -> dict[str, jax.Array]:
    """0-D, 1-D and 2-D params (2-D only for Muon): every shape-dependent state is exercised
    (Adafactor's factors for >= 2-D params, its full ``variance`` below)."""
    shapes = {"m": (2, 3), "n": (4, 2)} if name == "muon" else {"s": (), "v": (3,), "m": (2, 3)}
    return {k: jnp.ones(v, jnp.float32) for k, v in shapes.items()}


def _spec(x: jax.Array) -> P:
    """A partition spec of ``x``'s rank: its first axis over the mesh axis ``"x"``."""
    return P() if x.ndim == 0 else P("x", *[None] * (x.ndim - 1))


@pytest.mark.parametrize("row", _params("map_params"))
def test_map_params(row):
    """``optax.tree.map_params``, alone and with an extra tree of the params' structure (the
    partition-spec form sharding code uses: ``f(leaf, spec)``): ``f`` reaches every params-shaped
    tree of the state -- every field, also where it holds a placeholder for some params
    (Adafactor's) -- and nothing else (a vector field, one entry per params leaf: NAdam's
    ``mu_product``, is not params-shaped and is left alone)."""
    params = _shape_dependent_params(row.name)
    tx = as_optax_factory(row.name)(**row.kwargs)
    state = tx.init(params)
    mapped = optax.tree.map_params(tx, lambda v: jnp.full_like(v, 7.0), state)
    specs = jax.tree.map(_spec, params)
    spec_state = optax.tree.map_params(
        tx, lambda _, spec: spec, state, specs, transform_non_params=lambda _: P()
    )
    assert jax.tree.structure(mapped) == jax.tree.structure(state)
    assert mapped.count is state.count and spec_state.count == P()
    for field in state._fields[1:]:
        a, b, c = getattr(state, field), getattr(mapped, field), getattr(spec_state, field)
        if a is None:
            assert b is None and c is None, field
            continue
        if field in vector_fields(type(state)):
            assert bitwise_equal(np.asarray(b), np.asarray(a)).all() and c == P(), field
            continue
        assert all(bool(jnp.all(x == 7.0)) for x in jax.tree.leaves(b)), field
        assert c == specs, field


@pytest.mark.parametrize("row", _params("shardings"))
def test_state_takes_the_params_shardings(row):
    """Every params-shaped tree of the state takes the params' own shardings (the specs of
    :func:`test_map_params`, on a one-device mesh): a buffer has the rank of its param, and so
    has a placeholder (Adafactor's), so a spec of the param's rank fits it."""
    params = _shape_dependent_params(row.name)
    tx = as_optax_factory(row.name)(**row.kwargs)
    state = tx.init(params)
    mesh = jax.make_mesh((1,), ("x",))
    shardings = optax.tree.map_params(
        tx,
        lambda _, spec: NamedSharding(mesh, spec),
        state,
        jax.tree.map(_spec, params),
        transform_non_params=lambda _: NamedSharding(mesh, P()),
    )
    placed = jax.device_put(state, shardings)
    assert jax.tree.structure(placed) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(placed), jax.tree.leaves(state), strict=True):
        assert x.shape == y.shape and bitwise_equal(np.asarray(x), np.asarray(y)).all()


# Traced hyper-parameters decide the state's structure as "traced, or non-zero" (a traced
# momentum keeps a buffer). At run time the value 0 must give torch's zero-value step.
TRACED_ZERO = [
    ("sgd", {"lr": 0.01, "dampening": 0.5}, {"momentum": 0.0}, "off"),
    ("sgd", {"lr": 0.01, "dampening": 0.5}, {"momentum": 0.0}, "always"),
    ("sgd", {"lr": 0.01, "momentum": 0.9}, {"weight_decay": 0.0}, "always"),
    ("sgd", {"lr": 0.01, "maximize": True}, {"momentum": 0.0, "weight_decay": 0.0}, "off"),
    ("rmsprop", {"lr": 1e-3}, {"momentum": 0.0}, "off"),
    ("rmsprop", {"lr": 1e-3, "centered": True}, {"momentum": 0.0, "weight_decay": 0.0}, "off"),
]
STEPS = 100


def _torch_zero_run(name: str, static: dict, traced: dict) -> list[list[np.ndarray]]:
    import torch

    cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}[name]
    params = [torch.tensor(p, requires_grad=True) for p in init_params(np.float32)]
    opt = cls(params, foreach=False, **static, **traced)
    out = []
    with correctly_rounded_torch_sqrt():
        for grads in grad_stream(STEPS, np.float32):
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.from_numpy(g)
            opt.step()
            out.append([p.detach().numpy().copy() for p in params])
    return out


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@pytest.mark.parametrize(
    ("name", "static", "traced", "native"),
    [
        pytest.param(*row, marks=[pytest.mark.requires_kernels] if row[3] == "always" else [])
        for row in TRACED_ZERO
    ],
    ids=[f"{n}-{'-'.join(t)}-{'kernel' if m == 'always' else 'xla'}" for n, _, t, m in TRACED_ZERO],
)
def test_traced_zero_is_torchs_zero_step(name, static, traced, native, x64, monkeypatch):
    """A hyper-parameter traced to 0 (as under ``optax.inject_hyperparams``) keeps its buffer
    but steps bit for bit as torch with that hyper-parameter 0 -- also where the buffer path
    would round differently (RMSprop: ``addcdiv`` vs ``add``; SGD with dampening: ``buf =
    (1 - dampening) g``) and through the one-pass kernel (``JAXOPT_LAB_NATIVE=always``)."""
    pytest.importorskip("torch")
    monkeypatch.setenv("JAXOPT_LAB_NATIVE", native)
    factory = getattr(jol, name)
    with jax.enable_x64(x64):

        @jax.jit
        def init(params, hyper):
            return factory(**static, **hyper).init(params)

        @jax.jit
        def update(params, grads, state, hyper):
            return factory(**static, **hyper).update(params, grads, state)

        hyper = {k: jnp.float32(v) for k, v in traced.items()}
        params = [jnp.asarray(p) for p in init_params(np.float32)]
        state = init(params, hyper)
        assert all(getattr(state, f) is not None for f in ("momentum_buffer",))
        ours = []
        for grads in grad_stream(STEPS, np.float32):
            params, state = update(params, [jnp.asarray(g) for g in grads], state, hyper)
            ours.append([np.asarray(p) for p in params])
    theirs = _torch_zero_run(name, static, traced)
    for step, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        for leaf, (a, b) in enumerate(zip(mine, ref, strict=True)):
            same = bitwise_equal(a, b)
            assert same.all(), f"step {step}, params[{leaf}]: {np.count_nonzero(~same)} differ"
