"""Property tests (hypothesis) over random pytrees, hyper-parameters and gradient scales.

For the first five optimizers (SGD, Adam, AdamW, RMSprop, Adagrad) with random hyper-parameters,
on random pytrees (nested dict/list/tuple; shapes incl. 0-d and empty;
float32/float64/bfloat16/float16 leaves) and gradients of random scale (1e-3..1e3, signs, zeros):

1. (no "jit equals eager": ``update`` is always jitted, see the note at the end of this file);
2. the second jitted step does not recompile;
3. the state's structure, shapes and dtypes are the same after every step (count int32);
4. ``lr=0`` leaves the params unchanged -- every optimizer and configuration except centered
   RMSprop (``v - g_avg**2`` may round below 0: ``sqrt`` gives NaN), and except elements whose
   float16 buffer overflowed to inf (``-0.0 * inf``, ``inf * 0`` are NaN); torch does the same;
5. permuting the leaves permutes the results (params and every buffer), bitwise;
6. three steps equal torch's, bitwise, on the float32 leaves (torch with a correctly rounded
   ``sqrt``, see ``test_torch_state.py``).

Profiles: ``ci`` (default, derandomized, bounded run time) and ``dev``
(``HYPOTHESIS_PROFILE=dev``). Examples per test and optimizer: ``EXAMPLES``, a quarter of it for
Adam/AdamW (each of their examples compiles for ~3 s).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_torch_state import correctly_rounded_torch_sqrt

import jaxopt_lab as jol
from jaxopt_lab.interop import torch_state as ts

EXAMPLES = {"ci": 6, "dev": 200}  # per optimizer and test; Adam/AdamW get a quarter
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=EXAMPLES["ci"], derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=EXAMPLES["dev"], **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16]

# ---------------------------------------------------------------------------------------------
# Strategies

_lr = st.sampled_from([1e-4, 1e-2, 0.3])
_decay = st.sampled_from([0.0, 1e-3, 0.1])
_eps = st.sampled_from([1e-12, 1e-8, 1e-3])
_beta = st.sampled_from([0.0, 0.5, 0.9, 0.999])


@st.composite
def sgd_kwargs(draw) -> dict[str, Any]:
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1]))
    return {"momentum": momentum, "dampening": dampening, "nesterov": nesterov}


@st.composite
def adam_kwargs(draw) -> dict[str, Any]:
    return {"betas": (draw(_beta), draw(_beta)), "eps": draw(_eps), "amsgrad": draw(st.booleans())}


@st.composite
def rmsprop_kwargs(draw) -> dict[str, Any]:
    return {
        "alpha": draw(st.sampled_from([0.0, 0.9, 0.99])),
        "eps": draw(_eps),
        "momentum": draw(st.sampled_from([0.0, 0.9])),
        "centered": draw(st.booleans()),
    }


@st.composite
def adagrad_kwargs(draw) -> dict[str, Any]:
    return {
        "lr_decay": draw(st.sampled_from([0.0, 0.1])),
        "initial_accumulator_value": draw(st.sampled_from([0.0, 0.1])),
        "eps": draw(_eps),
    }


# name -> (jaxopt_lab constructor, torch class, strategy of the algorithm's own kwargs)
OPTIMIZERS = {
    "sgd": (jol.sgd, torch.optim.SGD, sgd_kwargs()),
    "adam": (jol.adam, torch.optim.Adam, adam_kwargs()),
    "adamw": (jol.adamw, torch.optim.AdamW, adam_kwargs()),
    "rmsprop": (jol.rmsprop, torch.optim.RMSprop, rmsprop_kwargs()),
    "adagrad": (jol.adagrad, torch.optim.Adagrad, adagrad_kwargs()),
}


@st.composite
def configs(draw, name: str) -> dict[str, Any]:
    _, _, own = OPTIMIZERS[name]
    return {
        "lr": draw(_lr),
        "weight_decay": draw(_decay),
        "maximize": draw(st.booleans()),
        **draw(own),
    }


_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


def trees(dtypes=DTYPES) -> st.SearchStrategy:
    """Nested dict/list/tuple pytrees of (shape, dtype) leaves; at least one leaf."""
    leaf = st.tuples(_shapes, st.sampled_from(dtypes)).map(lambda sd: ("leaf", *sd))
    nested = st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(st.sampled_from("abcde"), children, min_size=1, max_size=3),
        ),
        max_leaves=5,
    )
    return nested


def _is_spec(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 3 and x[0] == "leaf"


def materialize(spec: Any, seed: int, scale: float) -> tuple[Any, list[Any]]:
    """Params (normal values) and three gradient trees (normal x scale, ~1/8 zeros)."""
    rng = np.random.default_rng(seed)

    def arr(s, factor, zeros):
        _, shape, dtype = s
        x = rng.normal(size=shape) * factor
        if zeros:
            x = np.where(rng.random(size=shape) < 0.125, 0.0, x)
        return jnp.asarray(x, dtype)

    params = jax.tree.map(lambda s: arr(s, 1.0, False), spec, is_leaf=_is_spec)
    grads = [jax.tree.map(lambda s: arr(s, scale, True), spec, is_leaf=_is_spec) for _ in range(3)]
    return params, grads


_scales = st.sampled_from([1e-3, 1.0, 1e3])
_seeds = st.integers(0, 2**16)


def bits(tree: Any) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def signature(state: Any) -> tuple:
    leaves = jax.tree.leaves(state)
    return jax.tree.structure(state), [(x.shape, x.dtype) for x in leaves]


# ---------------------------------------------------------------------------------------------
# Properties
#
# Each example costs one XLA compilation per optimizer built (Adam's double-precision bias
# corrections take ~3 s to compile on CPU, the others ~0.3 s), so each test checks as many
# properties as one compiled update allows, and Adam/AdamW get fewer examples in CI.


def examples(name: str) -> int:
    """Examples per optimizer under the active profile."""
    full = settings().max_examples
    return max(1, full // 4) if name in ("adam", "adamw") else full


def f32_leaves(tree: Any, like: Any) -> list[bytes]:
    """Bits of the leaves of ``tree`` whose params leaf in ``like`` is float32."""
    mask = [x.dtype == jnp.float32 for x in jax.tree.leaves(like)]
    return [b for b, keep in zip(bits(tree), mask, strict=True) if keep]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_step_properties(name: str) -> None:
    """Properties 2, 3, 5, 6 on the same random runs (two compilations per example)."""

    @settings(max_examples=examples(name))
    @given(data=st.data(), spec=trees(), seed=_seeds, scale=_scales)
    def check(data, spec, seed, scale) -> None:
        make, torch_cls, _ = OPTIMIZERS[name]
        config = data.draw(configs(name))
        opt = make(**config)
        params0, grads = materialize(spec, seed, scale)
        update = jax.jit(opt.update)
        params, state = params0, opt.init(params0)
        first = signature(state)
        assert state.count.dtype == jnp.int32
        for g in grads:
            params, state = update(params, g, state)
            assert signature(state) == first  # 3: structure, shapes, dtypes
            assert jax.tree.structure(params) == jax.tree.structure(params0)
        assert update._cache_size() == 1  # 2: no recompilation

        # 5: the same leaves as a permuted list give the permuted results.
        leaves = jax.tree.leaves(params0)
        perm = data.draw(st.permutations(range(len(leaves))))
        p_perm = [leaves[i] for i in perm]
        s_perm = opt.init(p_perm)
        for g in grads:
            gl = jax.tree.leaves(g)
            p_perm, s_perm = jax.jit(opt.update)(p_perm, [gl[i] for i in perm], s_perm)
        by_leaf = jax.tree.leaves(params)
        assert bits(p_perm) == bits([by_leaf[i] for i in perm])
        for field in type(state)._fields[1:]:
            if getattr(state, field) is not None:
                ours = jax.tree.leaves(getattr(state, field))
                assert bits(getattr(s_perm, field)) == bits([ours[i] for i in perm])

        # 6: float32 leaves equal torch's after the same steps, bitwise (IEEE sqrt in torch).
        tensors = ts.params_to_torch(params0)
        topt = torch_cls(tensors, foreach=False, **config)
        with correctly_rounded_torch_sqrt():
            for g in grads:
                for t, gt in zip(tensors, ts.params_to_torch(g), strict=True):
                    t.grad = gt.detach()
                topt.step()
        assert f32_leaves(ts.params_from_torch(tensors, params0), params0) == f32_leaves(
            params, params0
        )
        theirs = ts.state_from_torch(topt, params0, count=len(grads))
        for field in type(state)._fields[1:]:
            if getattr(state, field) is not None:
                assert f32_leaves(getattr(theirs, field), params0) == f32_leaves(
                    getattr(state, field), params0
                )

    check()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_zero_lr_keeps_params(name: str) -> None:
    """Property 4: with lr=0 no param changes (compared by value: -0.0 may become +0.0)."""

    @settings(max_examples=examples(name))
    @given(data=st.data(), spec=trees(), seed=_seeds, scale=_scales)
    def check(data, spec, seed, scale) -> None:
        config = {**data.draw(configs(name)), "lr": 0.0}
        if name == "rmsprop":  # sqrt(v - g_avg**2) of a negative rounding residue: NaN (torch too)
            config["centered"] = False
        make, _, _ = OPTIMIZERS[name]
        opt = make(**config)
        params, grads = materialize(spec, seed, scale)
        update = jax.jit(opt.update)
        new, state = params, opt.init(params)
        for g in grads:
            new, state = update(new, g, state)
        # A buffer that overflowed in float16 (g**2 > 65504, or g / eps) is inf, and -0.0 * inf
        # or inf * 0 (beta2 = 0) is NaN, in torch as here: lr=0 cannot keep those elements.
        buffers = [
            jax.tree.leaves(getattr(state, f))
            for f in type(state)._fields[1:]
            if getattr(state, f) is not None
        ]
        for i, (a, b) in enumerate(zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True)):
            finite = np.ones(np.shape(a), bool)
            for column in buffers:
                finite &= np.isfinite(np.asarray(column[i], np.float64))
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            np.testing.assert_array_equal(a64[finite], b64[finite])

    check()


# No "jit == eager" property: ``leafwise`` always jits ``update`` (op-by-op dispatch would not
# contract ``a + s * b`` into the FMA torch's kernels compute, see jaxopt_lab/optim/kernels.py), so
# there is no eager path to compare, and under ``jax.disable_jit()`` the results differ by design.
