"""CIFAR CNN: flax ↔ torch weight transfer, logits and gradients vs torch, max-pool parity."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxopt_lab.cifar.models import (
    NUM_PARAMS,
    CifarCNN,
    from_torch,
    max_pool_2x2,
    to_torch,
    torch_cifar_cnn,
)

DTYPES = {"f64": (np.float64, torch.float64), "f32": (np.float32, torch.float32)}
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

# Lengths of the dot products along any path from an input to a logit: conv1 (3·25 + bias),
# conv2 and conv3 (32·25 + bias), fc1 (1024 + bias), fc2 (64 + bias).
FORWARD_REDUCTIONS = (76, 801, 801, 1025, 65)


def _images(rng: np.random.Generator, n: int, dtype: type) -> np.ndarray:
    """ToTensor-like pixels (k/255) with saturated blocks, so conv outputs and pools tie."""
    u8 = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    u8[:, 4:20, 4:20, :] = 255  # a white square: identical patches → identical conv outputs
    u8[:, 24:, :, :] = 0  # a black band
    return u8.astype(dtype) / dtype(255)


def _nchw(x_NHWC: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_NHWC.transpose(0, 3, 1, 2)))


def _torch_logits(model: torch.nn.Module, x_NHWC: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(_nchw(x_NHWC)).numpy()


# Jitted, and with an "rbg" key: compiling init's ten threefry draws takes ~11 s on a busy 2-core
# CPU, rbg ~3 s; eager init is slower still (each op dispatched separately).
_init = jax.jit(CifarCNN().init)
_pool = jax.jit(max_pool_2x2)
_pool_grad = jax.jit(lambda x, g: jax.vjp(max_pool_2x2, x)[1](g)[0])


def _init_params() -> dict:
    return _init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 32, 32, 3), jnp.float32))["params"]


def _assert_state_dicts_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key  # bit-exact: no tolerance


# ----------------------------------------------------------------------------- the network


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(
            lambda: sum(
                math.prod(leaf.shape)
                for leaf in jax.tree.leaves(
                    jax.eval_shape(
                        CifarCNN().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32)
                    )
                )
            ),
            id="flax",
        ),
        pytest.param(lambda: sum(p.numel() for p in torch_cifar_cnn().parameters()), id="torch"),
    ],
)
def test_parameter_count(count):
    assert count() == NUM_PARAMS == 145_578


def test_flax_init_is_torch_distribution():
    """Every weight and bias ~ U(±1/√fan_in), like torch's default init."""
    params = _init_params()
    fan_in = {"conv1": 75, "conv2": 800, "conv3": 800, "fc1": 1024, "fc2": 64}
    for name, leaves in params.items():
        for leaf in leaves.values():
            bound = 1 / math.sqrt(fan_in[name])
            assert leaf.dtype == jnp.float32
            assert float(jnp.max(jnp.abs(leaf))) <= bound
            if leaf.size > 100:  # a uniform sample reaches close to its bound
                assert float(jnp.max(jnp.abs(leaf))) > 0.9 * bound


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_logits_match_torch(dtype):
    """Same weights, same input: logits agree to a rounding-derived tolerance.

    Tolerance (per image, relative to that image's largest |logit|): 2·√(ΣK)·u, u the unit
    roundoff of the dtype and ΣK = 2768 the total dot-product length along an input→logit path
    (`FORWARD_REDUCTIONS`). Where it comes from: a length-K dot product summed in any order has
    relative error ~√K·u under the probabilistic rounding model (Higham & Mary, SIAM J. Sci.
    Comput. 41(5), 2019; the worst case is K·u), the layers' independent errors add in
    quadrature, √(Σ K_l)·u, a linear layer carries a random-direction perturbation's relative size
    through unchanged, and max pooling is 1-Lipschitz. Two implementations: twice that. That is
    105 u ≈ 6.3e-6 (f32) and 1.2e-14 (f64). Measured on this CPU (torch oneDNN vs XLA:CPU,
    six seeds): |Δ| ≤ 18 u·max|logit| (9 ULP) in both dtypes, about 6× inside. (The rigorous
    worst case, Higham Thm 3.5 propagated through |W|, exceeds the logits themselves in
    float32: this activation-free network cancels heavily, Σ|w||x| ≈ 2e5·|logit|.)
    """
    np_dtype, torch_dtype = dtype
    u = np.finfo(np_dtype).eps / 2
    rtol = 2 * math.sqrt(sum(FORWARD_REDUCTIONS)) * u
    rng = np.random.default_rng(0)
    for seed in range(2):
        model = torch_cifar_cnn(torch_dtype, seed=seed)
        params = from_torch(model)
        x = _images(rng, 16, np_dtype)
        expected = _torch_logits(model, x)
        logits = np.asarray(jax.jit(CifarCNN().apply)({"params": params}, jnp.asarray(x)))
        assert logits.dtype == np_dtype and logits.shape == (16, 10)
        scale = np.max(np.abs(expected), axis=1, keepdims=True)
        np.testing.assert_array_less(
            np.abs(logits - expected), np.broadcast_to(rtol * scale, (16, 10))
        )


def test_gradients_match_torch_with_ties():
    """Cross-entropy gradients w.r.t. every parameter vs torch, float64, on images whose
    saturated regions make conv outputs tie inside pooling windows (real CIFAR has such regions:
    a pooling tie routed unlike torch would show as an O(1) gradient difference)."""
    model = torch_cifar_cnn(torch.float64, seed=3)
    params = from_torch(model)
    x = _images(np.random.default_rng(1), 8, np.float64)
    y = np.arange(8, dtype=np.int32) % 10

    torch.nn.functional.cross_entropy(model(_nchw(x)), torch.from_numpy(y).long()).backward()
    expected = from_torch({k: p.grad for k, p in model.named_parameters()})

    def loss(p):
        logits = CifarCNN().apply({"params": p}, jnp.asarray(x))
        return -jnp.mean(
            jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], 1)
        )

    grads = jax.jit(jax.grad(loss))(params)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        # Weight gradients sum up to 8·32·32 products: measured ≤ 1e-14 of the leaf's scale.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(want))))


# ----------------------------------------------------------------------------- weight transfer


class _Tutorial(torch.nn.Module):
    """The tutorial's wrapper: the Sequential under `model1`, keys `model1.0.weight`, ..."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.model1 = inner

    def forward(self, x):
        return self.model1(x)


WRAPPERS = {"sequential": lambda m: m, "tutorial_module": _Tutorial}
TRANSFER_DTYPES = {"f64": torch.float64, "f32": torch.float32, "bf16": torch.bfloat16}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
@pytest.mark.parametrize("torch_dtype", TRANSFER_DTYPES.values(), ids=TRANSFER_DTYPES.keys())
def test_torch_jax_torch_round_trip_is_identity(torch_dtype, wrap):
    inner = torch_cifar_cnn(torch_dtype, seed=0)
    original = wrap(inner)
    params = from_torch(original)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {
        jnp.dtype(str(torch_dtype).removeprefix("torch."))
    }
    fresh = wrap(torch_cifar_cnn(torch_dtype, seed=1))
    assert to_torch(params, fresh) is fresh
    _assert_state_dicts_identical(fresh.state_dict(), original.state_dict())
    # Without a module: the bare Sequential's keys; the variables dict is accepted too.
    _assert_state_dicts_identical(to_torch(params), inner.state_dict())
    _assert_state_dicts_identical(to_torch({"params": params}), inner.state_dict())


def test_jax_torch_jax_round_trip_is_identity():
    params = _init_params()
    back = from_torch(to_torch(params))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_flatten_order_permutation():
    """fc1's kernel rows are torch's (C,H,W) inputs permuted to flax's (H,W,C) order."""
    model = torch_cifar_cnn(seed=0)
    w = model[7].weight.detach().numpy()  # (64 out, 1024 in), in index c·16 + h·4 + w
    kernel = np.asarray(from_torch(model)["fc1"]["kernel"])  # (1024, 64), row h·256 + w·64 + c
    for c, h, w_ in [(0, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), (63, 3, 2), (17, 2, 3)]:
        np.testing.assert_array_equal(kernel[h * 256 + w_ * 64 + c], w[:, c * 16 + h * 4 + w_])


def test_torch_seed_is_reproducible_and_dtype_independent():
    state = torch.random.get_rng_state()
    a, b = torch_cifar_cnn(seed=5), torch_cifar_cnn(seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # a seeded build leaves RNG alone
    _assert_state_dicts_identical(a.state_dict(), b.state_dict())
    double = torch_cifar_cnn(torch.float64, seed=5)  # the float32 draw, upcast exactly
    _assert_state_dicts_identical(double.state_dict(), a.double().state_dict())


def _sd_missing(sd):
    return {k: v for k, v in sd.items() if k != "8.bias"}


def _sd_extra(sd):
    return sd | {"9.weight": torch.zeros(1)}


def _sd_bad_shape(sd):
    return sd | {"7.weight": torch.zeros(64, 1025)}


def _sd_bad_key(sd):
    return sd | {"running_mean": torch.zeros(1)}


BAD_TRANSFERS = {
    "missing_key": (
        lambda: from_torch(_sd_missing(torch_cifar_cnn().state_dict())),
        "expected keys",
    ),
    "extra_key": (lambda: from_torch(_sd_extra(torch_cifar_cnn().state_dict())), "expected keys"),
    "unknown_key": (lambda: from_torch(_sd_bad_key(torch_cifar_cnn().state_dict())), "unexpected"),
    "wrong_shape": (
        lambda: from_torch(_sd_bad_shape(torch_cifar_cnn().state_dict())),
        r"fc1: expected weight \(64, 1024\)",
    ),
    "not_cnn_params": (lambda: to_torch({"dense": {}}), "not CifarCNN params"),
    "wrong_kernel_shape": (
        lambda: to_torch(
            from_torch(torch_cifar_cnn())
            | {"fc2": {"kernel": jnp.zeros((10, 64)), "bias": jnp.zeros(10)}}
        ),
        r"fc2: expected kernel \(64, 10\)",
    ),
    "module_dtype_mismatch": (
        lambda: to_torch(from_torch(torch_cifar_cnn(torch.float64)), torch_cifar_cnn()),
        r"call module.to\(torch.float64\) first",
    ),
}


@pytest.mark.parametrize("call,message", BAD_TRANSFERS.values(), ids=BAD_TRANSFERS.keys())
def test_bad_transfer_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- max pooling


def _ties(rng, shape):
    return rng.integers(0, 3, shape).astype(np.float64)  # values 0,1,2: most windows tie


def _nans(rng, shape):
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.3] = np.nan  # windows with one, two, ... four NaNs
    return x


def _infs(rng, shape):
    x = rng.choice([-np.inf, np.inf, -1.0, 0.0], shape, p=[0.5, 0.1, 0.2, 0.2])
    x[0, :2, :2, :] = -np.inf  # an all -inf window: torch picks its first element
    return x


def _signed_zeros(rng, shape):
    return rng.choice([-0.0, 0.0, -1.0], shape)  # max is ±0: which zero wins shows in the sign


POOL_INPUTS = {
    "random": lambda rng, shape: rng.standard_normal(shape),
    "constant": lambda rng, shape: np.full(shape, 0.5),  # every window a 4-way tie
    "ties": _ties,
    "nan": _nans,
    "inf": _infs,
    "signed_zero": _signed_zeros,
}
POOL_SHAPES = {"even": (2, 8, 6, 3), "odd": (2, 7, 9, 3)}  # odd: torch's floor mode drops a row/col


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS.values(), ids=MEMORY_FORMATS.keys())
@pytest.mark.parametrize("shape", POOL_SHAPES.values(), ids=POOL_SHAPES.keys())
@pytest.mark.parametrize("make", POOL_INPUTS.values(), ids=POOL_INPUTS.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_max_pool_matches_torch_bitwise(dtype, make, shape, memory_format):
    """Output and gradient bit-for-bit equal to torch's CPU kernels (both memory formats)."""
    np_dtype, _ = dtype
    rng = np.random.default_rng(0)
    x = make(rng, shape).astype(np_dtype)  # NHWC
    g = rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np_dtype)

    xt = _nchw(x).contiguous(memory_format=memory_format).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, 2)
    yt.backward(_nchw(g))
    want_y = yt.detach().permute(0, 2, 3, 1).numpy()
    want_dx = xt.grad.permute(0, 2, 3, 1).numpy()

    y, dx = _pool(jnp.asarray(x)), _pool_grad(jnp.asarray(x), jnp.asarray(g))
    uint = {np.float64: np.uint64, np.float32: np.uint32}[np_dtype]
    for got, want in ((y, want_y), (dx, want_dx)):
        assert got.dtype == np_dtype and got.shape == want.shape
        np.testing.assert_array_equal(
            np.asarray(got).view(uint), np.ascontiguousarray(want).view(uint)
        )


def test_max_pool_tie_goes_to_first_and_nan_to_last():
    """The rule itself, on single windows (row-major order: top-left, top-right, ...)."""
    nan = np.nan
    windows = [  # (window [[a, b], [c, d]], index that receives the gradient)
        ([[1.0, 1.0], [1.0, 1.0]], 0),
        ([[0.0, 2.0], [2.0, 1.0]], 1),
        ([[0.0, 1.0], [2.0, 2.0]], 2),
        ([[1.0, nan], [nan, 3.0]], 2),
        ([[nan, 1.0], [2.0, 3.0]], 0),
    ]
    for window, winner in windows:
        dx = _pool_grad(jnp.asarray(window).reshape(1, 2, 2, 1), jnp.ones((1, 1, 1, 1)))
        assert dx.reshape(4).tolist() == [float(i == winner) for i in range(4)]
