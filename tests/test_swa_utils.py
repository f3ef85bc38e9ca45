"""``jaxopt_lab.optim.swa_utils`` against ``torch.optim.swa_utils``: one table of averaging
configurations, one of SWALR configurations, and update_bn on a Conv/Linear + BatchNorm model with
torch's weights transferred.

Truth: torch 2.13 CPU. Averaging is elementwise arithmetic, so float32 (and bfloat16) must equal
torch bit for bit at every one of 50 updates, with x64 off and on; float64 within 1e-12 of the
leaf's scale (measured: bitwise too). SWALR values are torch's Python doubles exactly (float32:
rounded once). update_bn reduces over the batch, in another order than torch: bound below.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from _reference import SHAPES, bitwise_equal
from cases import INVALID
from torch.optim import lr_scheduler as L
from torch.optim import swa_utils as tsu

from jaxopt_lab import schedules as S
from jaxopt_lab.optim import swa_utils

BF16 = np.dtype(ml_dtypes.bfloat16)
STEPS = 50
RTOL_F64 = 1e-12  # float64: within 1e-12 * max|torch| per leaf and update (measured: 0)

# --------------------------------------------------------------------------------------------
# AveragedModel: the table.


def _custom_avg(a: Any, p: Any, n: Any) -> Any:
    """A user avg_fn, the same source for both libraries (elementwise-exact: *0.5)."""
    return (a + p) * 0.5


def _custom_multi_ours(avgs: list, ps: list, n: jax.Array) -> list:
    return [jnp.where(n % 2 == 0, a, jnp.maximum(a, p)) for a, p in zip(avgs, ps, strict=True)]


def _custom_multi_torch(avgs: list, ps: list, n: torch.Tensor) -> None:
    for a, p in zip(avgs, ps, strict=True):
        a.copy_(torch.where(n % 2 == 0, a, torch.maximum(a, p)))


@dataclasses.dataclass(frozen=True)
class AvgCase:
    id: str
    ours: Callable[[], dict[str, Any]]  # averaged_model kwargs besides use_buffers
    torch: Callable[[], dict[str, Any]]  # AveragedModel kwargs besides use_buffers
    use_buffers: bool
    int_buffer: bool = True  # also carry an int64 buffer (torch: e.g. num_batches_tracked)


def _ema(decay: float, use_buffers: bool, fn: str = "multi") -> AvgCase:
    ours = getattr(swa_utils, f"get_ema_{'multi_' if fn == 'multi' else ''}avg_fn")
    theirs = getattr(tsu, f"get_ema_{'multi_' if fn == 'multi' else ''}avg_fn")
    key = "multi_avg_fn" if fn == "multi" else "avg_fn"
    return AvgCase(
        f"ema-{fn}-{decay}-buffers-{use_buffers}",
        lambda: {key: ours(decay)},
        lambda: {key: theirs(decay)},
        use_buffers,
    )


AVG_CASES = [
    AvgCase("swa-default", dict, dict, use_buffers=False),
    AvgCase("swa-default-buffers", dict, dict, use_buffers=True),
    AvgCase(
        "swa-avg-fn-buffers",
        lambda: {"avg_fn": swa_utils.get_swa_avg_fn()},
        lambda: {"avg_fn": tsu.get_swa_avg_fn()},
        use_buffers=True,
    ),
    AvgCase(
        "swa-multi",
        lambda: {"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
        lambda: {"multi_avg_fn": tsu.get_swa_multi_avg_fn()},
        use_buffers=False,
    ),
    AvgCase(  # torch's multi path refuses integer tensors (an INVALID row): float buffers only
        "swa-multi-buffers",
        lambda: {"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
        lambda: {"multi_avg_fn": tsu.get_swa_multi_avg_fn()},
        use_buffers=True,
        int_buffer=False,
    ),
    _ema(0.999, True),
    _ema(0.9, False),
    _ema(0.5, True),  # lerp weight 0.5: ATen's second branch at its boundary
    _ema(0.3, True),  # weight 0.7: second branch
    _ema(0.999, True, fn="avg"),
    _ema(0.9, False, fn="avg"),
    AvgCase(
        "custom-avg-fn-buffers",
        lambda: {"avg_fn": _custom_avg},
        lambda: {"avg_fn": _custom_avg},
        use_buffers=True,
        int_buffer=False,
    ),
    AvgCase(
        "custom-multi-avg-fn-buffers",
        lambda: {"multi_avg_fn": _custom_multi_ours},
        lambda: {"multi_avg_fn": _custom_multi_torch},
        use_buffers=True,
        int_buffer=False,
    ),
]

# (dtype, x64): float32 and bfloat16 in JAX's default mode, float32 and float64 under x64.
MODES = [("float32", False), ("float32", True), ("float64", True), ("bfloat16", False)]


class _TorchModel(torch.nn.Module):
    def __init__(self, params: list[torch.Tensor], buffers: list[torch.Tensor]) -> None:
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(p) for p in params])
        for i, b in enumerate(buffers):
            self.register_buffer(f"b{i}", b)

    def tensors(self, n_buffers: int) -> list[torch.Tensor]:
        return [*self.ps, *(getattr(self, f"b{i}") for i in range(n_buffers))]


def _to_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype == BF16:
        return torch.tensor(a.astype(np.float32)).to(torch.bfloat16)
    return torch.tensor(a)


def _from_torch(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.float().numpy().astype(BF16) if t.dtype == torch.bfloat16 else t.numpy()


def _model_stream(dtype: Any, int_buffer: bool) -> Iterator[tuple[list, list]]:
    """Random params (scales 1e-3..1e3 per leaf and update) and buffers, one set per update."""
    rng = np.random.default_rng(7)
    for _ in range(STEPS + 1):
        params = [
            np.asarray(rng.normal(size=s) * 10.0 ** rng.uniform(-3, 3), dtype) for s in SHAPES
        ]
        buffers = [np.asarray(rng.normal(size=(5,)), dtype)]
        if int_buffer:
            buffers.append(rng.integers(-1000, 1000, size=(3,)).astype(np.int64))
        yield params, buffers


def _jax_tree(arrays: list[np.ndarray], x64: bool) -> list[jax.Array]:
    # torch's int64 buffers are int64 under x64 and int32 in JAX's default mode.
    return [
        jnp.asarray(a, jnp.int64 if x64 else jnp.int32) if a.dtype == np.int64 else jnp.asarray(a)
        for a in arrays
    ]


def _assert_leaf(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == ref.dtype or (ours.dtype.kind == ref.dtype.kind == "i"), what
    if ref.dtype == np.float64:
        scale = max(float(np.abs(ref).max()), np.finfo(np.float64).tiny)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=RTOL_F64 * scale, err_msg=what)
    elif ref.dtype.kind == "i":
        np.testing.assert_array_equal(ours, ref, err_msg=what)
    else:  # float32, bfloat16: bit for bit
        same = bitwise_equal(ours, ref)
        assert same.all(), f"{what}: {int((~same).sum())} of {same.size} elements differ"


@pytest.mark.parametrize(("dtype", "x64"), MODES, ids=[f"{d}-x64-{x}" for d, x in MODES])
@pytest.mark.parametrize("case", AVG_CASES, ids=[c.id for c in AVG_CASES])
def test_averaged_model_matches_torch(case: AvgCase, dtype: str, x64: bool) -> None:
    """50 updates: params, buffers and n_averaged equal torch's after every update."""
    np_dtype = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    stream = _model_stream(np_dtype, case.int_buffer)
    params, buffers = next(stream)
    model = _TorchModel([_to_torch(p) for p in params], [_to_torch(b) for b in buffers])
    averaged = tsu.AveragedModel(model, use_buffers=case.use_buffers, **case.torch())
    with jax.enable_x64(x64):
        swa = swa_utils.averaged_model(use_buffers=case.use_buffers, **case.ours())
        state = swa.init(_jax_tree(params, x64), _jax_tree(buffers, x64))
        update = jax.jit(swa.update)
        for step, (params, buffers) in enumerate(stream):
            with torch.no_grad():
                for t, a in zip(model.tensors(len(buffers)), params + buffers, strict=True):
                    t.copy_(_to_torch(a))
            averaged.update_parameters(model)
            state = update(state, _jax_tree(params, x64), _jax_tree(buffers, x64))
            assert state.n_averaged.dtype == jnp.int32
            assert int(state.n_averaged) == int(averaged.n_averaged) == step + 1
            ours = [np.asarray(x) for x in state.params + state.buffers]
            refs = [_from_torch(t) for t in averaged.module.tensors(len(buffers))]
            for i, (o, r) in enumerate(zip(ours, refs, strict=True)):
                _assert_leaf(o, r, f"update {step + 1}, leaf {i}")


def test_averaged_model_first_update_copies_and_jit_matches_eager() -> None:
    """init copies; the first update copies the model (n_averaged 0 -> 1); eager == jit."""
    swa = swa_utils.averaged_model(multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    p0 = {"w": jnp.arange(3.0, dtype=jnp.float32), "b": jnp.ones((2, 2), jnp.float32)}
    p1 = jax.tree.map(lambda x: x * 3 + 1, p0)
    p2 = jax.tree.map(lambda x: x - 7, p0)
    state = swa.init(p0)
    assert int(state.n_averaged) == 0 and state.buffers is None
    state = swa.update(state, p1)
    assert int(state.n_averaged) == 1
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(p1), strict=True):
        np.testing.assert_array_equal(got, want)
    eager = swa.update(state, p2)
    jitted = jax.jit(swa.update)(state, p2)
    assert jax.tree.structure(eager) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------
# SWALR.


@dataclasses.dataclass(frozen=True)
class SwaLRCase:
    anneal_strategy: str
    anneal_epochs: int
    lr: float = 0.1
    swa_lr: float = 0.05
    horizon: int = S.DEFAULT_HORIZON

    @property
    def id(self) -> str:
        return (
            f"{self.anneal_strategy}-A{self.anneal_epochs}-lr{self.lr}-swa{self.swa_lr}"
            f"-h{self.horizon}"
        )

    @property
    def n(self) -> int:  # through the anneal and 20 counts past it
        return self.anneal_epochs + 20


SWALR_CASES = [
    SwaLRCase(strategy, epochs, lr, swa_lr)
    for strategy in ("cos", "linear")
    for epochs in (0, 1, 3, 10)
    for lr, swa_lr in ((0.1, 0.05), (0.01, 0.3), (1e-3, 1e-3))
] + [
    SwaLRCase("cos", 50, 0.3, 0.007),
    SwaLRCase("linear", 37, 0.3, 0.007),
    # past the table (horizon < anneal_epochs): torch's update in the graph, to 1e-12
    SwaLRCase("cos", 10, 0.1, 0.05, horizon=4),
    SwaLRCase("linear", 10, 0.2, 0.01, horizon=3),
]
RTOL_GRAPH = 1e-12  # as test_schedules: in-graph recursion (FMA contraction, cos) vs Python


def _torch_swalr(case: SwaLRCase) -> np.ndarray:
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=case.lr)
    scheduler = tsu.SWALR(
        optimizer,
        swa_lr=case.swa_lr,
        anneal_epochs=case.anneal_epochs,
        anneal_strategy=case.anneal_strategy,
    )
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(case.n):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return np.asarray(lrs, np.float64)


def _values(schedule: Callable[[Any], Any], n: int) -> np.ndarray:
    """The schedule at counts 0..n, traced (one compiled function)."""
    counts = jnp.arange(n + 1, dtype=jnp.int32)
    return np.asarray(jax.jit(lambda ks: jax.lax.map(schedule, ks))(counts))


@pytest.mark.parametrize("case", SWALR_CASES, ids=[c.id for c in SWALR_CASES])
def test_swalr_matches_torch(case: SwaLRCase) -> None:
    ref = _torch_swalr(case)
    schedule = swa_utils.swalr(
        case.lr,
        case.swa_lr,
        anneal_epochs=case.anneal_epochs,
        anneal_strategy=case.anneal_strategy,
        horizon=case.horizon,
    )
    assert isinstance(schedule, S.LRSchedule)
    traced = _values(schedule, case.n)
    eager = np.asarray([schedule(k) for k in range(case.n + 1)])
    assert traced.dtype == eager.dtype == np.float64
    exact = min(case.horizon, case.n + 1)
    np.testing.assert_array_equal(traced[:exact], ref[:exact])
    np.testing.assert_array_equal(eager[:exact], ref[:exact])
    np.testing.assert_allclose(traced, ref, rtol=RTOL_GRAPH, atol=0)
    np.testing.assert_array_equal(eager, traced)
    assert ref[-1] == case.swa_lr
    with jax.enable_x64(False):  # float32: torch's doubles rounded once
        values32 = _values(schedule, exact - 1)
    assert values32.dtype == np.float32
    np.testing.assert_array_equal(values32, ref[:exact].astype(np.float32))


def _first() -> S.LRSchedule:
    return S.cosine_annealing_lr(0.1, T_max=30, eta_min=0.002)


def test_swalr_after_another_schedule_as_in_torchs_docs() -> None:
    """torch's documented loop: SWALR built up front, stepped instead of the other from m on."""
    m, n = 12, 40
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=0.1)
    first = L.CosineAnnealingLR(optimizer, T_max=30, eta_min=0.002)
    swa = tsu.SWALR(optimizer, swa_lr=0.01, anneal_epochs=5)
    ref = [optimizer.param_groups[0]["lr"]]
    for k in range(n):
        optimizer.step()
        (swa if k >= m else first).step()
        ref.append(optimizer.param_groups[0]["lr"])
    ours = _first()
    schedule = S.sequential_lr([ours, swa_utils.swalr(float(ours(m)), 0.01, 5)], [m])
    np.testing.assert_array_equal(_values(schedule, n), np.asarray(ref))


def test_swalr_in_sequential_lr() -> None:
    """torch's SequentialLR starts SWALR from the lr it finds: the first schedule's at m - 1."""
    m, n = 12, 40
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=0.1)
    schedulers = [
        L.CosineAnnealingLR(optimizer, T_max=30, eta_min=0.002),
        tsu.SWALR(optimizer, swa_lr=0.01, anneal_epochs=5, anneal_strategy="linear"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's step(0) deprecation warning
        sequential = L.SequentialLR(optimizer, schedulers, milestones=[m])
        ref = [optimizer.param_groups[0]["lr"]]
        for _ in range(n):
            optimizer.step()
            sequential.step()
            ref.append(optimizer.param_groups[0]["lr"])
    ours = _first()
    start = float(ours(m - 1))
    schedule = S.sequential_lr([ours, swa_utils.swalr(start, 0.01, 5, "linear")], [m])
    np.testing.assert_array_equal(_values(schedule, n), np.asarray(ref))


def test_swalr_in_chained() -> None:
    """ChainedScheduler: SWALR rescales the lr the scheduler before it wrote."""
    n = 20
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=0.1)
    schedulers = [L.ExponentialLR(optimizer, 0.9), tsu.SWALR(optimizer, 0.01, anneal_epochs=6)]
    chain = L.ChainedScheduler(schedulers, optimizer=optimizer)
    ref = [optimizer.param_groups[0]["lr"]]
    for _ in range(n):
        optimizer.step()
        chain.step()
        ref.append(optimizer.param_groups[0]["lr"])
    schedule = S.chained([S.exponential_lr(0.1, 0.9), swa_utils.swalr(0.1, 0.01, 6)])
    np.testing.assert_array_equal(_values(schedule, n), np.asarray(ref))


# --------------------------------------------------------------------------------------------
# update_bn: a Conv/Linear + BatchNorm model, torch's weights transferred to Flax.


class _TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3), torch.nn.BatchNorm2d(8)
        self.fc1, self.bn3 = torch.nn.Linear(8 * 6 * 6, 16), torch.nn.BatchNorm1d(16)
        self.fc2 = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.fc1(x.flatten(1))))
        return self.bn3(self.fc2(x))  # bn3 runs twice per batch (shared module)


class _FlaxNet(nn.Module):
    dtype: Any = jnp.float32

    def setup(self) -> None:
        kw = {"dtype": self.dtype, "param_dtype": self.dtype}
        # torch keeps running stats in the params' dtype: no float32 forcing (float64 case).
        bn = {**kw, "epsilon": 1e-5, "force_float32_reductions": False}
        self.conv1, self.bn1 = nn.Conv(8, (3, 3), padding=1, **kw), nn.BatchNorm(**bn)
        self.conv2, self.bn2 = nn.Conv(8, (3, 3), padding="VALID", **kw), nn.BatchNorm(**bn)
        self.fc1, self.bn3 = nn.Dense(16, **kw), nn.BatchNorm(**bn)
        self.fc2 = nn.Dense(16, **kw)

    def __call__(self, x_NHWC: jax.Array, train: bool = False) -> jax.Array:
        eval_mode = not train
        x = nn.relu(self.bn1(self.conv1(x_NHWC), eval_mode))
        x = nn.relu(self.bn2(self.conv2(x), eval_mode))
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's NCHW flatten order
        x = nn.relu(self.bn3(self.fc1(x), eval_mode))
        return self.bn3(self.fc2(x), eval_mode)


def _torch_net(dtype: torch.dtype, seed: int = 0) -> _TorchNet:
    torch.manual_seed(seed)
    net = _TorchNet().to(dtype)
    with torch.no_grad():
        for bn in (net.bn1, net.bn2, net.bn3):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)  # stale statistics: update_bn must reset them
            bn.running_var.uniform_(0.5, 2)
    return net


def _flax_params(net: _TorchNet, dtype: Any) -> dict:
    def t(w: torch.Tensor) -> jax.Array:
        return jnp.asarray(w.detach().numpy(), dtype)

    def conv(c: torch.nn.Conv2d) -> dict:
        return {"kernel": t(c.weight.permute(2, 3, 1, 0)), "bias": t(c.bias)}  # OIHW -> HWIO

    def dense(d: torch.nn.Linear) -> dict:
        return {"kernel": t(d.weight.T), "bias": t(d.bias)}

    def bn(b: torch.nn.BatchNorm2d) -> dict:
        return {"scale": t(b.weight), "bias": t(b.bias)}

    return {
        "conv1": conv(net.conv1),
        "conv2": conv(net.conv2),
        "fc1": dense(net.fc1),
        "fc2": dense(net.fc2),
        "bn1": bn(net.bn1),
        "bn2": bn(net.bn2),
        "bn3": bn(net.bn3),
    }


def _stale_variables(net: _TorchNet, model: _FlaxNet, dtype: Any) -> dict:
    def stats(b: torch.nn.BatchNorm2d) -> dict:
        return {
            "mean": jnp.asarray(b.running_mean.numpy(), dtype),
            "var": jnp.asarray(b.running_var.numpy(), dtype),
        }

    batch_stats = {"bn1": stats(net.bn1), "bn2": stats(net.bn2), "bn3": stats(net.bn3)}
    return {"params": _flax_params(net, dtype), "batch_stats": batch_stats}


def _batches(seed: int = 0) -> list[np.ndarray]:
    """NCHW float64 images; the last batch is smaller, as a DataLoader's last batch."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 3, 8, 8)) * 2 + 0.5 for n in (16, 16, 16, 16, 16, 10)]


# The Flax forward (XLA's convolution and dot order, Flax's normalization with the fast
# variance E[x^2] - E[x]^2) and the statistics (XLA sums float32 in float32, torch in double,
# sequentially) round differently from torch. Measured over 4 seeds x 20 batches, as
# max|ours - torch| / max|torch| per statistic: <= 2.84 eps (float32) and <= 3.14 eps
# (float64); no term grows with the batch count beyond that (the cumulative average weights
# each batch's error by 1/k). Bound: 16 eps of the dtype, ~5x the measurement.
BN_ULPS = 16


@pytest.mark.parametrize(
    ("dtype", "x64"), [("float32", False), ("float32", True), ("float64", True)]
)
def test_update_bn_matches_torch(dtype: str, x64: bool) -> None:
    torch_dtype = getattr(torch, dtype)
    net = _torch_net(torch_dtype)
    batches = _batches()
    tsu.update_bn([(torch.tensor(b, dtype=torch_dtype), 0) for b in batches], net)
    with jax.enable_x64(x64):
        jdtype = jnp.dtype(dtype)
        model = _FlaxNet(jdtype)
        variables = _stale_variables(_torch_net(torch_dtype), model, jdtype)
        loader = [(jnp.asarray(b.transpose(0, 2, 3, 1), jdtype), 0) for b in batches]
        new = swa_utils.update_bn(loader, model, variables, train=True)
    assert new["params"] is variables["params"]
    eps = float(np.finfo(dtype).eps)
    for name in ("bn1", "bn2", "bn3"):
        bn = getattr(net, name)
        for ours_key, torch_key in (("mean", "running_mean"), ("var", "running_var")):
            ours = np.asarray(new["batch_stats"][name][ours_key])
            ref = getattr(bn, torch_key).detach().numpy()
            assert ours.dtype == ref.dtype
            stale = np.asarray(variables["batch_stats"][name][ours_key])
            assert np.abs(stale - ref).max() > 1e-2  # the test starts away from the answer
            np.testing.assert_allclose(
                ours, ref, rtol=0, atol=BN_ULPS * eps * np.abs(ref).max(), err_msg=name
            )


def test_update_bn_after_swa_matches_torch() -> None:
    """The SWA recipe: average the params (buffers copied), then recompute the statistics."""
    nets = [_torch_net(torch.float64, seed) for seed in range(3)]
    averaged = tsu.AveragedModel(nets[0])
    for net in nets:
        averaged.update_parameters(net)
    batches = _batches(1)
    tsu.update_bn([torch.tensor(b) for b in batches], averaged)
    model = _FlaxNet(jnp.float64)
    swa = swa_utils.averaged_model()
    variables = [_stale_variables(net, model, jnp.float64) for net in nets]
    state = swa.init(variables[0]["params"], variables[0]["batch_stats"])
    for v in variables:
        state = swa.update(state, v["params"], v["batch_stats"])
    out = swa_utils.update_bn(
        [jnp.asarray(b.transpose(0, 2, 3, 1)) for b in batches],
        model,
        {"params": state.params, "batch_stats": state.buffers},
        train=True,
    )
    eps = float(np.finfo(np.float64).eps)
    for name in ("bn1", "bn2", "bn3"):
        bn = getattr(averaged.module, name)
        np.testing.assert_allclose(
            np.asarray(state.params[name]["scale"]), bn.weight.detach().numpy(), rtol=0, atol=0
        )
        for ours_key, torch_key in (("mean", "running_mean"), ("var", "running_var")):
            ref = getattr(bn, torch_key).numpy()
            np.testing.assert_allclose(
                np.asarray(out["batch_stats"][name][ours_key]),
                ref,
                rtol=0,
                atol=BN_ULPS * eps * np.abs(ref).max(),
            )


def test_update_bn_without_batch_norm_returns_variables() -> None:
    model = nn.Dense(3)
    x = jnp.ones((2, 4), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    assert swa_utils.update_bn([x], model, variables) is variables


@pytest.mark.parametrize(
    ("kwargs", "batch", "message"),
    [
        ({"train": False}, (4, 8, 8, 3), r"BatchNorm bn1 ran with use_running_average=True"),
        # torch: "Expected more than 1 value per channel when training, got input size
        # torch.Size([1, 16])" (bn3 sees one value per feature)
        (
            {"train": True},
            (1, 8, 8, 3),
            r"^Expected more than 1 value per channel when training, got input size \(1, 16\)",
        ),
    ],
    ids=["eval-mode", "batch-of-one"],
)
def test_update_bn_invalid(kwargs: dict, batch: tuple, message: str) -> None:
    model = _FlaxNet()
    variables = model.init(jax.random.key(0), jnp.ones((2, 8, 8, 3), jnp.float32))
    with pytest.raises(ValueError, match=message):
        swa_utils.update_bn([jnp.ones(batch, jnp.float32)], model, variables, **kwargs)


# --------------------------------------------------------------------------------------------
# The swa rows of cases.INVALID raise torch's own error for the same arguments.


def _torch_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


class _LongBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.ones(2, dtype=torch.long))


def _torch_int_multi() -> None:
    model = tsu.AveragedModel(
        _LongBuffer(), multi_avg_fn=tsu.get_swa_multi_avg_fn(), use_buffers=True
    )
    model.update_parameters(_LongBuffer())
    model.update_parameters(_LongBuffer())  # torch averages (and raises) from the 2nd update


TORCH_INVALID: dict[str, Callable[[], Any]] = {
    "swalr-anneal-strategy": lambda: tsu.SWALR(_torch_optimizer(), 0.05, anneal_strategy="exp"),
    "swalr-anneal-epochs": lambda: tsu.SWALR(_torch_optimizer(), 0.05, anneal_epochs=-1),
    "swalr-anneal-epochs-float": lambda: tsu.SWALR(_torch_optimizer(), 0.05, anneal_epochs=2.5),
    "swalr-swa-lr-per-group": lambda: tsu.SWALR(_torch_optimizer(), [0.05, 0.01]),
    "swa-ema-multi-decay": lambda: tsu.get_ema_multi_avg_fn(1.5),
    "swa-ema-decay": lambda: tsu.get_ema_avg_fn(-0.1),
    "swa-avg-fn-and-multi-avg-fn": lambda: tsu.AveragedModel(
        torch.nn.Linear(1, 1),
        avg_fn=tsu.get_swa_avg_fn(),
        multi_avg_fn=tsu.get_swa_multi_avg_fn(),
    ),
    "swa-multi-int-leaf": _torch_int_multi,
}
_ROWS = {row[0]: row for row in INVALID}


@pytest.mark.parametrize("row_id", list(TORCH_INVALID))
def test_invalid_rows_are_torchs_errors(row_id: str) -> None:
    _, ours, error, message = _ROWS[row_id]
    with pytest.raises(error) as info:
        TORCH_INVALID[row_id]()
    assert re.search(message, str(info.value)), str(info.value)
    with pytest.raises(error, match=message):
        ours()
