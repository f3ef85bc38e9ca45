"""torch.nn.functional's losses as pure, jittable JAX functions, equal to torch number by number.

Every function keeps torch's name, argument names, defaults and semantics (``reduction``,
``weight``, ``ignore_index``, ``label_smoothing``, ...); each ``*Loss`` class is the module form,
a frozen dataclass whose ``__call__(input, target)`` calls the function, like ``torch.nn.L1Loss``.
Values *and* gradients follow torch's formulas: where torch has a hand-written backward (L1's
``sgn``, smooth L1 / Huber, both binary cross-entropies) a ``jax.custom_jvp`` reproduces it, so
e.g. ``jax.grad`` of ``l1_loss`` is 0 (not 1) where ``input == target``, and the gradient of
``binary_cross_entropy`` at an input of exactly 0 or 1 is torch's finite clamped value.

Differences from torch.nn.functional (all of them):

* The deprecated ``size_average`` / ``reduce`` arguments are gone, so every argument that in torch
  sits after one of them is keyword-only here (``l1_loss(x, y, reduction="sum")``); a positional
  call that torch would bind to ``size_average`` is a ``TypeError`` instead of a silent mix-up.
* No broadcasting between ``input`` and ``target`` and no implicit dtype promotion: shapes must be
  equal (torch warns and broadcasts for the regression losses) and a floating ``target`` /
  ``weight`` must have ``input``'s dtype (a Python scalar or list is converted to it).
* Class-index targets may have any integer dtype (torch: int64 or uint8 only).
* ``label_smoothing`` outside ``[0, 1]`` is an error (torch silently ignores negative values).
* ``kl_div(reduction="mean")`` is torch's element-wise mean, without torch's ``UserWarning``;
  ``reduction="batchmean"`` is the mathematical KL divergence (sum divided by ``input.shape[0]``).

Validation and jit: reductions, option values, shapes and dtypes are checked when the function is
traced, so they raise the same ``ValueError`` / ``TypeError`` eagerly and under ``jax.jit``.
Two checks depend on *values* and run only when the array is concrete (eager calls, including
eager ``jax.grad``); under ``jax.jit`` they cannot run and the loss becomes NaN instead:

* ``nll_loss`` / ``cross_entropy``: a class index outside ``[0, C)`` that is not ``ignore_index``
  raises ``ValueError`` eagerly; traced, its term and the ``'mean'`` denominator are NaN, so every
  reduced loss is NaN (``reduction='none'`` marks exactly the offending positions).
* ``binary_cross_entropy``: an ``input`` outside ``[0, 1]`` (or NaN) raises ``ValueError``
  eagerly; traced, the log of a negative number makes those terms NaN.

Layout: ``checks`` (validation, reductions), ``regression`` (L1, MSE, smooth L1, Huber),
``binary`` (both binary cross-entropies), ``divergence`` (KL), ``classification`` (NLL,
cross-entropy), ``modules`` (the ``*Loss`` classes); every public name is re-exported here.
"""

from __future__ import annotations

from jaxopt_lab.losses.binary import binary_cross_entropy as binary_cross_entropy
from jaxopt_lab.losses.binary import (
    binary_cross_entropy_with_logits as binary_cross_entropy_with_logits,
)
from jaxopt_lab.losses.classification import cross_entropy as cross_entropy
from jaxopt_lab.losses.classification import nll_loss as nll_loss
from jaxopt_lab.losses.divergence import kl_div as kl_div
from jaxopt_lab.losses.modules import BCELoss as BCELoss
from jaxopt_lab.losses.modules import BCEWithLogitsLoss as BCEWithLogitsLoss
from jaxopt_lab.losses.modules import CrossEntropyLoss as CrossEntropyLoss
from jaxopt_lab.losses.modules import HuberLoss as HuberLoss
from jaxopt_lab.losses.modules import KLDivLoss as KLDivLoss
from jaxopt_lab.losses.modules import L1Loss as L1Loss
from jaxopt_lab.losses.modules import MSELoss as MSELoss
from jaxopt_lab.losses.modules import NLLLoss as NLLLoss
from jaxopt_lab.losses.modules import SmoothL1Loss as SmoothL1Loss
from jaxopt_lab.losses.regression import huber_loss as huber_loss
from jaxopt_lab.losses.regression import l1_loss as l1_loss
from jaxopt_lab.losses.regression import mse_loss as mse_loss
from jaxopt_lab.losses.regression import smooth_l1_loss as smooth_l1_loss

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]
