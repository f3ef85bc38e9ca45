"""Shared machinery of the parity tests: gradient streams, torch runs, ULP distances."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import ml_dtypes
import numpy as np

from jaxopt_lab.optim.leafwise import field_leaves

SHAPES = [(37, 11), (101,), (), (3, 4, 5)]


def init_params(dtype: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.normal(size=s), dtype) for s in SHAPES]


STREAMS = ("ill-scaled", "special")


def grad_stream(
    steps: int, dtype: Any, seed: int = 1, kind: str = "ill-scaled"
) -> Iterator[list[np.ndarray]]:
    """Gradients for the parity runs.

    ``"ill-scaled"``: magnitudes 1e-3..1e3, random signs, 10% zeros, and every 17th step all-zero.
    ``"special"``: the same, with IEEE special values mixed in at fixed rates per element and
    step: 6% signed zeros (``-0.0`` and ``+0.0``), 0.3% ``+-inf`` and 0.3% NaN (which then spread
    through the state, as in torch). No subnormals: XLA:CPU flushes them (see
    ``test_parity.py::test_subnormals_are_flushed``), torch does not.
    """
    rng = np.random.default_rng(seed)
    for t in range(steps):
        grads = []
        for s in SHAPES:
            mag = 10.0 ** rng.uniform(-3, 3, size=s)
            sign = rng.choice([-1.0, 1.0], size=s)
            keep = rng.uniform(size=s) > 0.1
            g = np.where(keep, mag * sign, 0.0) if t % 17 != 16 else np.zeros(s)
            if kind == "special":
                u = rng.uniform(size=s)
                g = np.where(u < 0.06, sign * 0.0, g)
                g = np.where((u >= 0.06) & (u < 0.063), sign * np.inf, g)
                g = np.where((u >= 0.063) & (u < 0.066), np.nan, g)
            grads.append(np.asarray(g, dtype))
        yield grads


def to_torch(a: np.ndarray) -> Any:
    """A torch tensor with ``a``'s dtype and bits (bfloat16 through float32, exactly)."""
    import torch

    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.asarray(a, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a))


def from_torch(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy().copy()


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many floats lie between a and b (0: equal; -0.0 and +0.0 count as equal), as float64;
    for integer arrays (a state's ``count``), how far apart their values are."""
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(a.dtype, np.integer):
        return np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
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


def bitwise_equal_or_both_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit for bit, except that any two NaNs match: a NaN's sign and payload depend on operand
    order inside each library's kernels (x86 returns the first NaN operand), not on the math."""
    a, b = np.asarray(a), np.asarray(b)
    nan_a = np.isnan(a.astype(np.float32) if a.dtype.itemsize == 2 else a)
    nan_b = np.isnan(b.astype(np.float32) if b.dtype.itemsize == 2 else b)
    return np.where(nan_a | nan_b, nan_a & nan_b, bitwise_equal(a, b))


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
        if t.dtype in (torch.bfloat16, torch.float16):  # ATen: float32 opmath, rounded back
            return torch.from_numpy(np.asarray(np.sqrt(t.detach().float().numpy()))).to(t.dtype)
        return torch.from_numpy(np.asarray(np.sqrt(t.detach().numpy())))

    def sqrt_(t: Any) -> Any:
        t.copy_(sqrt(t))
        return t

    torch.Tensor.sqrt, torch.Tensor.sqrt_ = sqrt, sqrt_
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.sqrt_ = orig, orig_


_GRADS: dict[tuple[int, str, str], list[list[np.ndarray]]] = {}


def _grads(steps: int, dtype: Any, stream: str) -> list[list[np.ndarray]]:
    """``grad_stream(steps, dtype, kind=stream)``, generated once per process and configuration
    (the trajectories of every optimizer read the same gradients); read-only arrays."""
    key = (steps, np.dtype(dtype).name, stream)
    if key not in _GRADS:
        grads = list(grad_stream(steps, dtype, kind=stream))
        for g in (g for step in grads for g in step):
            g.flags.writeable = False
        _GRADS[key] = grads
    return _GRADS[key]


_DEVICE_GRADS: dict[tuple[int, str, str, bool], list[list[jax.Array]]] = {}


def _device_grads(steps: int, dtype: Any, stream: str) -> list[list[jax.Array]]:
    """``_grads`` as JAX arrays, per x64 mode (``jnp.asarray`` canonicalizes dtypes by it). The
    updates do not donate their gradients, so every trajectory can read the same arrays."""
    key = (steps, np.dtype(dtype).name, stream, bool(jax.config.jax_enable_x64))
    if key not in _DEVICE_GRADS:
        grads = _grads(steps, dtype, stream)
        _DEVICE_GRADS[key] = [[jax.numpy.asarray(g) for g in step] for step in grads]
    return _DEVICE_GRADS[key]


def torch_trajectory(
    case: Any, dtype: Any, steps: int, foreach: bool, stream: str = "ill-scaled"
) -> list[dict[str, list]]:
    """Params and state after every step of the torch optimizer (``case.make_torch``)."""
    params = [to_torch(p).requires_grad_(True) for p in init_params(dtype)]
    opt, sched = case.make_torch(params, foreach)
    out, fields = [], _fields(case)
    for grads in _grads(steps, dtype, stream):
        for p, g in zip(params, grads, strict=True):
            p.grad = to_torch(g)
        opt.step()
        if sched is not None:
            sched.step()
        record = {"params": [from_torch(p) for p in params]}
        for field in fields:
            # None where torch keeps no such key for this param (Adafactor's fields: ours hold
            # an empty placeholder there, see test_parity._compare)
            record[field] = [
                from_torch(opt.state[p][field]) if field in opt.state[p] else None for p in params
            ]
        out.append(record)
    return out


_UPDATES: dict[tuple[int, str], tuple[Any, Any, Any]] = {}


def _jitted(case: Any) -> tuple[Any, Any]:
    """(optimizer, jitted donated update) of a configuration, one per process and kernel mode.

    Sharing the jitted function lets the tests of one configuration (gradient streams, step
    counts, x64 modes: part of jit's own cache key) reuse its compilations. The kernel mode
    (``JAXOPT_LAB_NATIVE``) is read when the update is traced, so it is part of this key.
    """
    import os

    # Keyed by the case object itself (ids need not be unique across tables); the entry holds
    # the case, so its id() cannot be reused by another object.
    key = (id(case), os.environ.get("JAXOPT_LAB_NATIVE", "auto"))
    if key not in _UPDATES or _UPDATES[key][0] is not case:
        opt = case.make()
        _UPDATES[key] = (case, opt, jax.jit(opt.update, donate_argnums=(0, 2)))
    return _UPDATES[key][1:]


def jax_trajectory(
    case: Any, dtype: Any, steps: int, stream: str = "ill-scaled"
) -> list[dict[str, list]]:
    """The same for jaxopt_lab, one jitted (donated) update per step."""
    opt, update = _jitted(case)
    params = [jax.numpy.asarray(p) for p in init_params(dtype)]
    state = opt.init(params)
    out, fields = [], _fields(case)
    for grads in _device_grads(steps, dtype, stream):
        params, state = update(params, grads, state)
        record = {"params": [np.asarray(p) for p in params]}
        for field in fields:
            # per param, as torch's (a vector field, NAdam's mu_product: its 0-d entries)
            record[field] = [np.asarray(x) for x in field_leaves(state, field)]
        out.append(record)
    return out


def _fields(case: Any) -> list[str]:
    """The state fields this configuration keeps (not ``None``): each is a torch state key."""
    import jax.numpy as jnp

    state = case.make().init([jnp.zeros(s, jnp.float32) for s in SHAPES])
    return [f for f in state._fields[1:] if getattr(state, f) is not None]
