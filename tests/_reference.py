"""Shared machinery of the parity tests: gradient streams, torch runs, ULP distances."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

SHAPES = [(37, 11), (101,), (), (3, 4, 5)]


def init_params(dtype: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.normal(size=s), dtype) for s in SHAPES]


def grad_stream(steps: int, dtype: Any, seed: int = 1) -> Iterator[list[np.ndarray]]:
    """Deliberately ill-scaled gradients: magnitudes 1e-3..1e3, random signs, 10% zeros,
    and every 17th step all-zero."""
    rng = np.random.default_rng(seed)
    for t in range(steps):
        grads = []
        for s in SHAPES:
            mag = 10.0 ** rng.uniform(-3, 3, size=s)
            sign = rng.choice([-1.0, 1.0], size=s)
            keep = rng.uniform(size=s) > 0.1
            g = np.where(keep, mag * sign, 0.0) if t % 17 != 16 else np.zeros(s)
            grads.append(np.asarray(g, dtype))
        yield grads


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many floats lie between a and b (0: equal; -0.0 and +0.0 count as equal)."""
    a, b = np.asarray(a), np.asarray(b)
    bits = 8 * a.dtype.itemsize
    itype = {32: np.int32, 64: np.int64}[bits]
    mask = (1 << (bits - 1)) - 1

    def ordered(x: np.ndarray) -> np.ndarray:
        i = x.view(itype).astype(np.int64) if bits == 32 else x.view(itype)
        mag = i & mask
        return np.where(i < 0, -mag, mag).astype(object if bits == 64 else np.int64)

    return np.abs(ordered(a) - ordered(b)).astype(np.float64)


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    itype = {2: np.int16, 4: np.int32, 8: np.int64}[np.asarray(a).dtype.itemsize]
    return np.asarray(a).view(itype) == np.asarray(b).view(itype)


@contextlib.contextmanager
def correctly_rounded_torch_sqrt() -> Iterator[None]:
    """Patch torch's ``Tensor.sqrt``/``sqrt_`` with a correctly rounded one (NumPy's).

    torch's CPU sqrt goes through MKL's vector math, which is 1 ULP off the correctly rounded
    result for ~17% of float32 inputs on this host; XLA's sqrt is correctly rounded. With this
    patch the single-tensor path of torch and jaxopt_lab can be compared bit for bit.
    """
    import torch

    orig, orig_ = torch.Tensor.sqrt, torch.Tensor.sqrt_

    def sqrt(t: Any) -> Any:
        return torch.from_numpy(np.asarray(np.sqrt(t.detach().numpy())))

    def sqrt_(t: Any) -> Any:
        t.copy_(sqrt(t))
        return t

    torch.Tensor.sqrt, torch.Tensor.sqrt_ = sqrt, sqrt_
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.sqrt_ = orig, orig_


def torch_trajectory(case: Any, dtype: Any, steps: int, foreach: bool) -> list[dict[str, list]]:
    """Params and state after every step of the torch optimizer (``case.make_torch``)."""
    import torch

    params = [torch.tensor(p, requires_grad=True) for p in init_params(dtype)]
    opt, sched = case.make_torch(params, foreach)
    out = []
    for grads in grad_stream(steps, dtype):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g)
        opt.step()
        if sched is not None:
            sched.step()
        record = {"params": [p.detach().numpy().copy() for p in params]}
        for field in _fields(case):
            record[field] = [opt.state[p][field].detach().numpy().copy() for p in params]
        out.append(record)
    return out


def jax_trajectory(case: Any, dtype: Any, steps: int) -> list[dict[str, list]]:
    """The same for jaxopt_lab, one jitted (donated) update per step."""
    opt = case.make()
    params = [jax.numpy.asarray(p) for p in init_params(dtype)]
    state = opt.init(params)
    update = jax.jit(opt.update, donate_argnums=(0, 2))
    out = []
    for grads in grad_stream(steps, dtype):
        params, state = update(params, [jax.numpy.asarray(g) for g in grads], state)
        record = {"params": [np.asarray(p) for p in params]}
        for field in _fields(case):
            record[field] = [np.asarray(x) for x in getattr(state, field)]
        out.append(record)
    return out


def _fields(case: Any) -> list[str]:
    from cases import STATE_FIELDS

    fields = STATE_FIELDS[case.algo]
    kw = case.kwargs
    keep = []
    for f in fields:
        if f == "momentum_buffer" and kw.get("momentum", 0) == 0:
            continue
        if f == "max_exp_avg_sq" and not kw.get("amsgrad", False):
            continue
        if f == "grad_avg" and not kw.get("centered", False):
            continue
        keep.append(f)
    return keep
