"""Exact weight transfer between `torch_cifar_cnn` (torch) and `CifarCNN` (flax), both ways.

Layout differences, each a pure permutation of array elements (so transfer is exact, bit for
bit, in both directions, and torch → JAX → torch is the identity):

- conv weight: torch OIHW (out, in, kh, kw) ↔ flax HWIO kernel (kh, kw, in, out). Both
  frameworks compute cross-correlation (no kernel flip), so no spatial reversal.
- linear weight: torch (out, in), y = x Wᵀ + b ↔ flax kernel (in, out), y = x K + b: K = Wᵀ.
- flatten: torch flattens (C, H, W) of an NCHW map, flax flattens (H, W, C) of an NHWC map.
  Rather than transposing activations to NCHW before the flatten in every forward and backward
  pass, the rows of `fc1`'s kernel are permuted once here: torch input index c·16 + h·4 + w ↔
  flax row h·256 + w·64 + c. Same numbers, same products, one permutation at load time
  instead of a (N,4,4,64) transpose (and its transpose in the backward) on every step.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.cifar.models.torch_cnn import TORCH_LAYERS

__all__ = ["from_torch", "to_torch"]

Params = dict[str, dict[str, jax.Array]]

# Torch shapes of each layer's weight; biases are (weight.shape[0],).
_TORCH_WEIGHT_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1": (32, 3, 5, 5),
    "conv2": (32, 32, 5, 5),
    "conv3": (64, 32, 5, 5),
    "fc1": (64, 1024),
    "fc2": (10, 64),
}
_FC1_CHW = (64, 4, 4)  # the (C, H, W) map that torch flattens into fc1's 1024 inputs
_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<index>\d+)\.(?P<kind>weight|bias)$")


def _weight_to_flax(name: str, w: np.ndarray) -> np.ndarray:
    if name.startswith("conv"):
        return w.transpose(2, 3, 1, 0)  # OIHW → HWIO
    if name == "fc1":
        c, h, w_ = _FC1_CHW
        # (out, c·h·w) → (out, c, h, w) → (h, w, c, out) → (h·w·c, out)
        return w.reshape(-1, c, h, w_).transpose(2, 3, 1, 0).reshape(c * h * w_, -1)
    return w.T  # (out, in) → (in, out)


def _kernel_to_torch(name: str, k: np.ndarray) -> np.ndarray:
    if name.startswith("conv"):
        return k.transpose(3, 2, 0, 1)  # HWIO → OIHW
    if name == "fc1":
        c, h, w_ = _FC1_CHW
        # (h·w·c, out) → (h, w, c, out) → (out, c, h, w) → (out, c·h·w)
        return k.reshape(h, w_, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w_)
    return k.T


def _flax_kernel_shape(name: str) -> tuple[int, ...]:
    return _weight_to_flax(name, np.empty(_TORCH_WEIGHT_SHAPES[name], np.int8)).shape


def _torch_names(keys: list[str]) -> tuple[str, dict[str, str]]:
    """Maps our `{layer}.{weight|bias}` names to a state_dict's keys, checking they all exist.

    Accepts the bare Sequential's keys (`0.weight`) and a wrapped one's (`model1.0.weight`).
    """
    prefixes = set()
    by_index = {}
    for key in keys:
        m = _KEY.match(key)
        if m is None:
            raise ValueError(f"unexpected state_dict key {key!r} for the CIFAR CNN")
        prefixes.add(m["prefix"])
        by_index[(int(m["index"]), m["kind"])] = key
    expected = {(i, kind) for i in TORCH_LAYERS for kind in ("weight", "bias")}
    if len(prefixes) > 1 or set(by_index) != expected:
        raise ValueError(
            "not the CIFAR CNN's state_dict: expected keys "
            f"{sorted(f'{i}.{k}' for i, k in expected)} (optionally under one prefix), "
            f"got {sorted(keys)}"
        )
    prefix = prefixes.pop()
    lead = f"{prefix}." if prefix else ""
    return lead, {
        f"{name}.{kind}": by_index[(i, kind)]
        for i, name in TORCH_LAYERS.items()
        for kind in ("weight", "bias")
    }


def _tensor_to_numpy(t: Any) -> np.ndarray:
    if not hasattr(t, "detach"):  # already an array (e.g. an optimizer buffer being re-laid out)
        return np.asarray(t)
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; reinterpret the bits exactly
        return t.view(torch.int16).numpy().view(jnp.bfloat16)
    return t.numpy()


def _numpy_to_tensor(a: np.ndarray) -> Any:
    import torch

    a = np.array(a, order="C")  # a writable copy: jax arrays view as read-only numpy arrays
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def from_torch(module_or_state_dict: Any) -> Params:
    """Flax params for `CifarCNN` holding exactly the weights of the torch network.

    Args:
      module_or_state_dict: a `torch_cifar_cnn()` module (or a module wrapping that Sequential,
        like the tutorial's), or its `state_dict()`. Tensors may live on any device.

    Returns:
      `{"conv1": {"kernel", "bias"}, ..., "fc2": {...}}`, jax arrays of the torch tensors' dtype
      (float32 → float32, float64 → float64); use as `model.apply({"params": params}, x)`.

    Raises:
      ValueError: keys or shapes are not the CIFAR CNN's, or float64 weights while
        `jax_enable_x64` is off (they would silently become float32).
    """
    sd = module_or_state_dict
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    _, names = _torch_names(list(sd))
    params: Params = {}
    for name, shape in _TORCH_WEIGHT_SHAPES.items():
        w = _tensor_to_numpy(sd[names[f"{name}.weight"]])
        b = _tensor_to_numpy(sd[names[f"{name}.bias"]])
        if w.shape != shape or b.shape != shape[:1]:
            raise ValueError(
                f"{name}: expected weight {shape} and bias {shape[:1]}, got {w.shape} and {b.shape}"
            )
        if np.float64 in (w.dtype, b.dtype) and not jax.config.jax_enable_x64:
            raise ValueError(
                "float64 torch weights need JAX float64: set jax.config.update('jax_enable_x64', "
                "True) before converting (or convert a float32 model)"
            )
        params[name] = {
            "kernel": jnp.asarray(np.ascontiguousarray(_weight_to_flax(name, w))),
            "bias": jnp.asarray(b),
        }
    return params


def to_torch(params: Mapping[str, Any], module: Any = None) -> Any:
    """The torch weights of `CifarCNN` params: a state_dict, or loaded into `module`.

    Args:
      params: `CifarCNN` params (`{"conv1": ...}`), or the variables dict `{"params": ...}`.
      module: optional torch module with the CIFAR CNN's state_dict keys (a `torch_cifar_cnn()`
        or a module wrapping it) and the params' dtype; the weights are loaded into it.

    Returns:
      `module` with the weights loaded if given; else an `OrderedDict` state_dict with the
      Sequential's keys (`0.weight`, ...), CPU tensors of the params' dtype.

    Raises:
      ValueError: params are not the CIFAR CNN's, or their dtype differs from the module's
        (torch would cast silently; cast the module with `.to(dtype)` first).
    """
    if set(params) == {"params"}:
        params = params["params"]
    if set(params) != set(_TORCH_WEIGHT_SHAPES):
        raise ValueError(
            f"not CifarCNN params: expected layers {sorted(_TORCH_WEIGHT_SHAPES)}, "
            f"got {sorted(params)}"
        )
    lead = ""
    if module is not None:
        lead, _ = _torch_names(list(module.state_dict()))
    sd: OrderedDict[str, Any] = OrderedDict()
    for index, name in TORCH_LAYERS.items():
        kernel = np.asarray(params[name]["kernel"])
        bias = np.asarray(params[name]["bias"])
        shape = _TORCH_WEIGHT_SHAPES[name]
        if kernel.shape != _flax_kernel_shape(name) or bias.shape != shape[:1]:
            raise ValueError(
                f"{name}: expected kernel {_flax_kernel_shape(name)} and bias {shape[:1]}, "
                f"got {kernel.shape} and {bias.shape}"
            )
        sd[f"{lead}{index}.weight"] = _numpy_to_tensor(_kernel_to_torch(name, kernel))
        sd[f"{lead}{index}.bias"] = _numpy_to_tensor(bias)
    if module is None:
        return sd
    current = module.state_dict()
    for key, t in sd.items():
        if current[key].dtype != t.dtype:
            raise ValueError(
                f"params are {t.dtype} but the module's {key} is {current[key].dtype}: "
                f"call module.to({t.dtype}) first (load_state_dict would cast silently)"
            )
    module.load_state_dict(sd)
    return module
