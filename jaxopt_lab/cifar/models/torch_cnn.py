"""The same CIFAR-10 CNN in torch (imported lazily), for the cross-check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["TORCH_LAYERS", "torch_cifar_cnn"]

# Index in the nn.Sequential → name in the flax params. The state_dict keys are
# f"{index}.weight" / f"{index}.bias"; the other indices are MaxPool2d and Flatten.
TORCH_LAYERS: dict[int, str] = {0: "conv1", 2: "conv2", 4: "conv3", 7: "fc1", 8: "fc2"}


def torch_cifar_cnn(dtype: torch.dtype | Any = None, seed: int | None = None) -> torch.nn.Module:
    """The tutorial's network as a torch `nn.Sequential`, NCHW input (N,3,32,32) → (N,10) logits.

    Layers (state_dict keys `0.*`, `2.*`, `4.*`, `7.*`, `8.*`)::

        0 Conv2d(3, 32, 5, padding=2)   1 MaxPool2d(2)
        2 Conv2d(32, 32, 5, padding=2)  3 MaxPool2d(2)
        4 Conv2d(32, 64, 5, padding=2)  5 MaxPool2d(2)
        6 Flatten()  7 Linear(1024, 64)  8 Linear(64, 10)

    The tutorial wraps this Sequential in a module as `model1`; `from_torch` accepts either key
    style.

    Args:
      dtype: torch dtype of the parameters (None: torch's default dtype, normally float32). The
        weights are always drawn in float32 and then cast, so one seed gives the same network
        (exactly, upcast) in float32 and float64.
      seed: None draws from torch's global RNG, like the tutorial; an int draws from a fresh
        generator seeded with it, leaving the global RNG state untouched.

    Returns:
      The module with torch's default initialisation.
    """
    import torch
    from torch import nn

    def build() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 64),
            nn.Linear(64, 10),
        )

    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        if seed is None:
            model = build()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build()
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype if dtype is not None else default)
