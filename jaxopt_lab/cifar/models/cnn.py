"""The PyTorch tutorial's CIFAR-10 CNN as a flax.linen module.

The network (no activations: that is the tutorial's model, a linear map interleaved with max
pooling)::

    (N,32,32,3) ─Conv 3→32 5×5 pad 2─▶ (N,32,32,32) ─MaxPool 2─▶ (N,16,16,32)
                ─Conv 32→32 5×5 pad 2─▶ (N,16,16,32) ─MaxPool 2─▶ (N,8,8,32)
                ─Conv 32→64 5×5 pad 2─▶ (N,8,8,64)   ─MaxPool 2─▶ (N,4,4,64)
                ─Flatten─▶ (N,1024) ─Dense 1024→64─▶ (N,64) ─Dense 64→10─▶ (N,10) logits

145,578 parameters. Layout is NHWC throughout (XLA's fast layout on every backend). The flatten
is in H,W,C order; torch flattens C,H,W, and `jaxopt_lab.cifar.models.convert` permutes the rows of
`fc1`'s kernel instead of transposing activations, so the forward has no transpose (see there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxopt_lab.cifar.models.pooling import max_pool_2x2

__all__ = ["NUM_PARAMS", "CifarCNN", "torch_default_init"]

NUM_PARAMS = 145_578
"""Parameter count: 32·3·25+32 + 32·32·25+32 + 64·32·25+64 + 1024·64+64 + 64·10+10."""

Dtype = Any  # a jnp dtype or None


def torch_default_init(fan_in: int) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
    """torch's default `Conv2d`/`Linear` init: weight and bias both U(-1/√fan_in, 1/√fan_in).

    (`kaiming_uniform_(a=√5)` gives the weight bound `gain·√(3/fan_in)` with
    `gain = √(2/(1+5))`, i.e. `1/√fan_in`; `reset_parameters` uses the same bound for the bias.)
    Same distribution as torch, not the same numbers: for those, build the torch model and
    transfer its weights with `from_torch`.

    Args:
      fan_in: input features × kernel area.

    Returns:
      (kernel_init, bias_init), flax initializers.
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init, init


class CifarCNN(nn.Module):
    """The tutorial's CIFAR-10 CNN: 3 × (Conv 5×5 + MaxPool 2), Flatten, Dense 64, Dense 10.

    Attributes:
      dtype: computation dtype; None (default) computes in the params'/inputs' dtype.
      param_dtype: dtype of freshly initialised params (float32 by default). Params loaded with
        `from_torch` keep the torch tensors' dtype instead.
      precision: `jax.lax.Precision` for convs and matmuls. None is the backend default: full
        precision on CPU, but possibly TF32/bf16 passes for float32 on GPU/TPU; pass
        `jax.lax.Precision.HIGHEST` for torch-parity runs there.

    Init follows torch's default distribution (`torch_default_init`), so a JAX-only run starts
    like the tutorial's.

    Example:
      >>> model = CifarCNN()
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
      >>> model.apply({"params": params}, jnp.zeros((8, 32, 32, 3))).shape
      (8, 10)
    """

    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, images_NHWC: jax.Array) -> jax.Array:
        """Logits for a batch of images.

        Args:
          images_NHWC: (N, 32, 32, 3) floats (the tutorial feeds `ToTensor()` pixels in [0, 1]).

        Returns:
          (N, 10) logits.
        """
        x = images_NHWC
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        for name, c_in, c_out in (("conv1", 3, 32), ("conv2", 32, 32), ("conv3", 32, 64)):
            k_init, b_init = torch_default_init(c_in * 5 * 5)
            x = nn.Conv(
                c_out,
                (5, 5),
                padding=((2, 2), (2, 2)),
                kernel_init=k_init,
                bias_init=b_init,
                name=name,
                **common,
            )(x)
            x = max_pool_2x2(x)  # (N, H/2, W/2, c_out)
        x = x.reshape(x.shape[0], -1)  # (N, 4·4·64) in H,W,C order
        for name, f_in, f_out in (("fc1", 1024, 64), ("fc2", 64, 10)):
            k_init, b_init = torch_default_init(f_in)
            x = nn.Dense(f_out, kernel_init=k_init, bias_init=b_init, name=name, **common)(x)
        return x
