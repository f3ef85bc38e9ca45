"""2×2 max pooling with torch's values and torch's gradient, without a scatter.

`flax.linen.max_pool` lowers to `lax.reduce_window`, whose gradient is a `select_and_scatter`
that XLA:CPU runs as a serial loop (about 25 ms per CIFAR train step on a 2-core CPU).
`max_pool_2x2` instead views each 2×2 window as four strided slices and combines them with
elementwise compares, so the forward and the backward are plain fused elementwise loops.

Tie and NaN rule (torch's CPU kernels, `aten/src/ATen/native/cpu/MaxPoolKernel.cpp`, both the
contiguous and the channels-last one): the window is scanned in row-major order and the running
maximum is replaced when `val > maxval || isnan(val)`. Hence

- among equal maxima the FIRST one in row-major order wins (it gets the whole gradient), so a
  constant region sends its gradient to the top-left element of each window;
- if the window holds a NaN, the output is NaN and the LAST NaN in row-major order wins;
- `-0.0` and `+0.0` compare equal, so whichever comes first is returned, sign included.

`max_pool_2x2` reproduces that scan exactly, so its output and its gradient are bit-for-bit
torch's `F.max_pool2d(x, 2)` (checked in `tests/test_models.py`, ties and NaNs included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["max_pool_2x2"]


def _windows(x_NHWC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The four elements of every 2×2 window, in row-major window order.

    Args:
      x_NHWC: (N, H, W, C). An odd trailing row/column is dropped, as torch does.

    Returns:
      Four (N, H//2, W//2, C) arrays: top-left, top-right, bottom-left, bottom-right.
    """
    n, h, w, c = x_NHWC.shape
    x = x_NHWC[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    return x[:, :, 0, :, 0], x[:, :, 0, :, 1], x[:, :, 1, :, 0], x[:, :, 1, :, 1]


def _torch_scan(x_NHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch's window scan: returns (max, index of the winning element in 0..3)."""
    w0, w1, w2, w3 = _windows(x_NHWC)
    best, idx = w0, jnp.zeros(w0.shape, jnp.int8)
    for k, v in ((1, w1), (2, w2), (3, w3)):
        take = (v > best) | jnp.isnan(v)  # torch: `(val > maxval) || std::isnan(val)`
        best = jnp.where(take, v, best)
        idx = jnp.where(take, jnp.int8(k), idx)
    return best, idx


@jax.custom_vjp
def max_pool_2x2(x_NHWC: jax.Array) -> jax.Array:
    """Max pooling, window 2×2, stride 2, no padding, NHWC; torch's values and gradient.

    Equal to torch's `F.max_pool2d(x, kernel_size=2)` (on the NCHW transpose) bit for bit, in
    the output and in the gradient, including ties (the first maximal element in row-major
    window order takes the whole gradient) and NaNs (the last NaN wins). See the module
    docstring for the rule and where it comes from.

    Args:
      x_NHWC: floating array of shape (N, H, W, C). An odd last row/column is ignored (floor
        mode, as torch's default `ceil_mode=False`), and gets a zero gradient.

    Returns:
      (N, H//2, W//2, C) array of the same dtype.

    Example:
      >>> y = max_pool_2x2(jnp.arange(16.0).reshape(1, 4, 4, 1))
      >>> y[0, :, :, 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
    """
    return _torch_scan(x_NHWC)[0]


def _fwd(x_NHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Keep the input, not the argmax: it is alive anyway (the previous layer's output), so the
    # residual costs no memory; the backward recomputes the cheap compares.
    return _torch_scan(x_NHWC)[0], x_NHWC


def _bwd(x_NHWC: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    n, h, w, c = x_NHWC.shape
    _, idx = _torch_scan(x_NHWC)
    zero = jnp.zeros((), g.dtype)
    parts = [jnp.where(idx == k, g, zero) for k in range(4)]  # (N, H/2, W/2, C) each
    # Interleave back: (N, H/2, [row], W/2, [col], C) with [row, col] = divmod(k, 2).
    top = jnp.stack(parts[:2], axis=3)  # (N, H/2, W/2, 2, C)
    bottom = jnp.stack(parts[2:], axis=3)
    dx = jnp.stack([top, bottom], axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
    if (h % 2) or (w % 2):
        dx = jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    return (dx,)


max_pool_2x2.defvjp(_fwd, _bwd)
