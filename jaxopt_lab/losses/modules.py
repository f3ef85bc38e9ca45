"""Module forms (``torch.nn.*Loss``): frozen dataclasses whose ``__call__(input, target)`` calls
the function.
"""

from __future__ import annotations

import dataclasses

import jax
from jax.typing import ArrayLike

from jaxopt_lab.losses.binary import binary_cross_entropy, binary_cross_entropy_with_logits
from jaxopt_lab.losses.checks import KL_REDUCTIONS, KLReduction, Reduction, check_reduction
from jaxopt_lab.losses.classification import cross_entropy, nll_loss
from jaxopt_lab.losses.divergence import kl_div
from jaxopt_lab.losses.regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class L1Loss:
    """``torch.nn.L1Loss``: ``L1Loss(reduction="sum")(input, target)`` is :func:`l1_loss`."""

    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_reduction("L1Loss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return l1_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class MSELoss:
    """``torch.nn.MSELoss``: calls :func:`mse_loss`."""

    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_reduction("MSELoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return mse_loss(input, target, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class SmoothL1Loss:
    """``torch.nn.SmoothL1Loss``: calls :func:`smooth_l1_loss`."""

    reduction: Reduction = "mean"
    beta: float = 1.0

    def __post_init__(self) -> None:
        check_reduction("SmoothL1Loss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


@dataclasses.dataclass(frozen=True, eq=False)
class HuberLoss:
    """``torch.nn.HuberLoss``: calls :func:`huber_loss` (torch's module has no ``weight``)."""

    reduction: Reduction = "mean"
    delta: float = 1.0

    def __post_init__(self) -> None:
        check_reduction("HuberLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


@dataclasses.dataclass(frozen=True, eq=False)
class BCELoss:
    """``torch.nn.BCELoss``: calls :func:`binary_cross_entropy`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_reduction("BCELoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


@dataclasses.dataclass(frozen=True, eq=False)
class BCEWithLogitsLoss:
    """``torch.nn.BCEWithLogitsLoss``: calls :func:`binary_cross_entropy_with_logits`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    reduction: Reduction = "mean"
    pos_weight: ArrayLike | None = None

    def __post_init__(self) -> None:
        check_reduction("BCEWithLogitsLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class KLDivLoss:
    """``torch.nn.KLDivLoss``: calls :func:`kl_div` (``'mean'`` is torch's element mean)."""

    reduction: KLReduction = "mean"
    log_target: bool = False

    def __post_init__(self) -> None:
        check_reduction("KLDivLoss", self.reduction, KL_REDUCTIONS)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


@dataclasses.dataclass(frozen=True, eq=False)
class NLLLoss:
    """``torch.nn.NLLLoss``: calls :func:`nll_loss`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    ignore_index: int = -100
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        check_reduction("NLLLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


@dataclasses.dataclass(frozen=True, eq=False)
class CrossEntropyLoss:
    """``torch.nn.CrossEntropyLoss``: calls :func:`cross_entropy`."""

    weight: ArrayLike | None = None
    _: dataclasses.KW_ONLY
    ignore_index: int = -100
    reduction: Reduction = "mean"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_reduction("CrossEntropyLoss", self.reduction)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> jax.Array:
        return cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
