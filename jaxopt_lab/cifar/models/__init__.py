"""The PyTorch tutorial's CIFAR-10 CNN in flax and torch, exact weight transfer between them.

- `CifarCNN`: flax.linen module, NHWC (N,32,32,3) → (N,10) logits.
- `torch_cifar_cnn`: the same network as a torch `nn.Sequential` (torch imported lazily).
- `from_torch` / `to_torch`: exact weight transfer both ways.
- `max_pool_2x2`: 2×2 max pooling with torch's tie rule and a scatter-free gradient.
"""

from jaxopt_lab.cifar.models.cnn import NUM_PARAMS as NUM_PARAMS
from jaxopt_lab.cifar.models.cnn import CifarCNN as CifarCNN
from jaxopt_lab.cifar.models.cnn import torch_default_init as torch_default_init
from jaxopt_lab.cifar.models.convert import from_torch as from_torch
from jaxopt_lab.cifar.models.convert import to_torch as to_torch
from jaxopt_lab.cifar.models.pooling import max_pool_2x2 as max_pool_2x2
from jaxopt_lab.cifar.models.torch_cnn import torch_cifar_cnn as torch_cifar_cnn

__all__ = [
    "NUM_PARAMS",
    "CifarCNN",
    "from_torch",
    "max_pool_2x2",
    "to_torch",
    "torch_cifar_cnn",
    "torch_default_init",
]
