"""Case tables for the schedule tests: valid configurations, invalid ones, optax and plateau rows.

A :class:`Sched` names a torch scheduler class and its keyword arguments; because
``jaxopt_lab.schedules`` uses torch's argument names, the same keywords build both sides
(:func:`build_ours`, :func:`build_torch`). ``ours`` holds keywords only we take (``horizon``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch.optim import lr_scheduler as L

from jaxopt_lab import schedules as S

OURS: dict[str, Callable[..., Any]] = {
    "StepLR": S.step_lr,
    "MultiStepLR": S.multistep_lr,
    "ExponentialLR": S.exponential_lr,
    "CosineAnnealingLR": S.cosine_annealing_lr,
    "CosineAnnealingWarmRestarts": S.cosine_annealing_warm_restarts,
    "LinearLR": S.linear_lr,
    "ConstantLR": S.constant_lr,
    "PolynomialLR": S.polynomial_lr,
    "LambdaLR": S.lambda_lr,
    "MultiplicativeLR": S.multiplicative_lr,
    "CyclicLR": S.cyclic_lr,
    "OneCycleLR": S.one_cycle_lr,
    "SequentialLR": S.sequential_lr,
    "ChainedScheduler": S.chained,
}
MOMENTUM: dict[str, Callable[..., Any]] = {
    "CyclicLR": S.cyclic_momentum,
    "OneCycleLR": S.one_cycle_momentum,
}
NO_LR_ARG = {"CyclicLR", "OneCycleLR", "SequentialLR", "ChainedScheduler"}


@dataclasses.dataclass(frozen=True)
class Sched:
    """A torch scheduler class name with its keyword arguments (nested for combinators)."""

    name: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ours: dict[str, Any] = dataclasses.field(default_factory=dict)

    def horizon(self) -> int:
        """The smallest table horizon in this spec: counts below it must be bit-exact."""
        own = self.ours.get("horizon", S.DEFAULT_HORIZON)
        subs = [s.horizon() for s in self.kwargs.get("schedulers", [])]
        return min([own, *subs])


def build_ours(spec: Sched, lr: float) -> S.LRSchedule:
    kwargs = dict(spec.kwargs)
    if "schedulers" in kwargs:  # torch's name; ours are schedules
        kwargs["schedules"] = [build_ours(s, lr) for s in kwargs.pop("schedulers")]
    args = () if spec.name in NO_LR_ARG else (lr,)
    return OURS[spec.name](*args, **kwargs, **spec.ours)


def build_ours_momentum(spec: Sched) -> S.LRSchedule:
    return MOMENTUM[spec.name](**spec.kwargs, **spec.ours)


def build_torch(spec: Sched, optimizer: torch.optim.Optimizer) -> Any:
    kwargs = dict(spec.kwargs)
    if "schedulers" in kwargs:
        kwargs["schedulers"] = [build_torch(s, optimizer) for s in kwargs["schedulers"]]
    if spec.name == "ChainedScheduler":
        return L.ChainedScheduler(kwargs["schedulers"], optimizer=optimizer)
    return getattr(L, spec.name)(optimizer, **kwargs)


def torch_optimizer(kind: str, lr: float, size: int = 1) -> torch.optim.Optimizer:
    """torch's SGD (momentum 0.9) or Adam on one float64 parameter ``linspace(-1, 1, size)``."""
    param = torch.nn.Parameter(torch.linspace(-1.0, 1.0, size, dtype=torch.float64))
    if kind == "adam":
        return torch.optim.Adam([param], lr=lr)
    return torch.optim.SGD([param], lr=lr, momentum=0.9)


def torch_trajectory(
    spec: Sched, n: int, *, lr: float = 0.1, optimizer: str = "sgd"
) -> tuple[np.ndarray, np.ndarray]:
    """torch's lr and momentum (or betas[0]) after construction and after each of n steps."""
    opt = torch_optimizer(optimizer, lr)
    scheduler = build_torch(spec, opt)
    key = "betas" if optimizer == "adam" else "momentum"
    lrs, moms = [], []
    opt.step()  # torch warns unless optimizer.step() came first; no grads, so params stay
    for k in range(n + 1):
        if k:
            scheduler.step()
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group[key][0] if key == "betas" else group[key])
    return np.asarray(lrs, np.float64), np.asarray(moms, np.float64)


# --------------------------------------------------------------------------------------------
# Valid configurations: every parity, jit and float32 test iterates this table.


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    spec: Sched
    n: int = 300  # counts 0 .. n
    lr: float = 0.1
    optimizer: str = "sgd"  # "adam": momentum is betas[0]
    momentum: bool = False  # also compare the momentum companion


def _decay(k: Any) -> Any:
    return 0.98**k


def _step_factor(k: Any) -> Any:
    return k // 30


def _slow(k: Any) -> Any:
    return 0.999**k


def _const(k: Any) -> Any:
    return 0.98


def _harmonic(x: Any) -> Any:
    return 1 / (1.0 + x)


_COS_EMIN = Sched("CosineAnnealingLR", {"T_max": 90, "eta_min": 0.001})
_WARMUP = Sched("LinearLR", {"start_factor": 0.1, "total_iters": 10})

CASES: list[Case] = [
    Case("step", Sched("StepLR", {"step_size": 7, "gamma": 0.5})),
    Case("step-default-gamma", Sched("StepLR", {"step_size": 30})),
    Case("step-horizon", Sched("StepLR", {"step_size": 3, "gamma": 0.9}, {"horizon": 40})),
    Case("multistep", Sched("MultiStepLR", {"milestones": [30, 80]})),
    Case(
        "multistep-unsorted-repeats-zero",
        Sched("MultiStepLR", {"milestones": [60, 0, 25, 25, 250], "gamma": 0.5}),
    ),
    Case("multistep-negative", Sched("MultiStepLR", {"milestones": [-3, 10], "gamma": 0.3})),
    Case("exponential", Sched("ExponentialLR", {"gamma": 0.97})),
    Case("exponential-growth", Sched("ExponentialLR", {"gamma": 1.01})),
    Case("exponential-horizon", Sched("ExponentialLR", {"gamma": 0.97}, {"horizon": 40})),
    Case("cosine", Sched("CosineAnnealingLR", {"T_max": 40})),
    Case("cosine-eta-min", Sched("CosineAnnealingLR", {"T_max": 40, "eta_min": 0.003})),
    Case("cosine-T1", Sched("CosineAnnealingLR", {"T_max": 1, "eta_min": 0.01})),
    Case("cosine-long", Sched("CosineAnnealingLR", {"T_max": 150, "eta_min": 1e-3}), n=600),
    Case(
        "cosine-horizon",
        Sched("CosineAnnealingLR", {"T_max": 40, "eta_min": 0.003}, {"horizon": 50}),
    ),
    Case("warm-restarts", Sched("CosineAnnealingWarmRestarts", {"T_0": 10})),
    Case(
        "warm-restarts-mult",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 10, "T_mult": 2, "eta_min": 0.001}),
    ),
    Case(
        "warm-restarts-mult-horizon",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 3}, {"horizon": 50}),
    ),
    Case(
        "warm-restarts-period-past-horizon",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 70, "eta_min": 0.01}, {"horizon": 50}),
    ),
    Case("linear", Sched("LinearLR")),
    Case(
        "linear-ramp",
        Sched("LinearLR", {"start_factor": 0.25, "end_factor": 0.9, "total_iters": 40}),
    ),
    Case(
        "linear-decay",
        Sched("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 100}),
    ),
    Case("linear-T0", Sched("LinearLR", {"total_iters": 0})),
    Case(
        "linear-horizon",
        Sched("LinearLR", {"start_factor": 0.25, "total_iters": 80}, {"horizon": 10}),
        n=120,
    ),
    Case("constant", Sched("ConstantLR")),
    Case("constant-30", Sched("ConstantLR", {"factor": 0.3, "total_iters": 20})),
    Case("constant-one", Sched("ConstantLR", {"factor": 1.0})),
    Case("constant-T0", Sched("ConstantLR", {"total_iters": 0})),
    Case("polynomial", Sched("PolynomialLR")),
    Case("polynomial-1.7", Sched("PolynomialLR", {"total_iters": 50, "power": 1.7})),
    Case("polynomial-sqrt", Sched("PolynomialLR", {"total_iters": 80, "power": 0.5})),
    Case("polynomial-T0", Sched("PolynomialLR", {"total_iters": 0})),
    Case("lambda", Sched("LambdaLR", {"lr_lambda": _decay})),
    Case("lambda-int", Sched("LambdaLR", {"lr_lambda": _step_factor})),
    Case("lambda-horizon", Sched("LambdaLR", {"lr_lambda": _decay}, {"horizon": 40})),
    Case("multiplicative", Sched("MultiplicativeLR", {"lr_lambda": _const})),
    Case(
        "multiplicative-horizon", Sched("MultiplicativeLR", {"lr_lambda": _slow}, {"horizon": 50})
    ),
    Case(
        "cyclic",
        Sched(
            "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 13, "step_size_down": 7}
        ),
        momentum=True,
    ),
    Case(
        "cyclic-triangular2-adam",
        Sched(
            "CyclicLR",
            {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 10, "mode": "triangular2"},
        ),
        optimizer="adam",
        momentum=True,
    ),
    Case(
        "cyclic-exp-range",
        Sched(
            "CyclicLR",
            {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 9, "mode": "exp_range", "gamma": 0.99},
        ),
        momentum=True,
    ),
    Case(
        "cyclic-scale-fn-cycle",
        Sched(
            "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 8, "scale_fn": _harmonic}
        ),
        momentum=True,
    ),
    Case(
        "cyclic-scale-fn-iterations",
        Sched(
            "CyclicLR",
            {
                "base_lr": 0.01,
                "max_lr": 0.1,
                "step_size_up": 8,
                "step_size_down": 0,
                "scale_fn": _slow,
                "scale_mode": "iterations",
                "base_momentum": 0.7,
                "max_momentum": 0.95,
            },
        ),
        momentum=True,
    ),
    Case(
        "cyclic-horizon",
        Sched(
            "CyclicLR",
            {
                "base_lr": 0.01,
                "max_lr": 0.1,
                "step_size_up": 11,
                "mode": "exp_range",
                "gamma": 0.995,
            },
            {"horizon": 40},
        ),
        momentum=True,
    ),
    Case("one-cycle", Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 300}), momentum=True),
    Case(
        "one-cycle-adam-three-phase-linear",
        Sched(
            "OneCycleLR",
            {
                "max_lr": 0.1,
                "total_steps": 300,
                "three_phase": True,
                "anneal_strategy": "linear",
            },
        ),
        optimizer="adam",
        momentum=True,
    ),
    Case(
        "one-cycle-epochs",
        Sched(
            "OneCycleLR",
            {
                "max_lr": 0.3,
                "epochs": 5,
                "steps_per_epoch": 40,
                "pct_start": 0.25,
                "div_factor": 10.0,
                "final_div_factor": 100.0,
                "base_momentum": 0.8,
                "max_momentum": 0.9,
            },
        ),
        n=200,
        momentum=True,
    ),
    Case(
        "one-cycle-three-phase-horizon",
        Sched(
            "OneCycleLR", {"max_lr": 0.1, "total_steps": 300, "three_phase": True}, {"horizon": 50}
        ),
        optimizer="adam",
        momentum=True,
    ),
    Case(
        "sequential-warmup-cosine",
        Sched("SequentialLR", {"schedulers": [_WARMUP, _COS_EMIN], "milestones": [10]}),
    ),
    Case(
        "sequential-constant-exponential",
        Sched(
            "SequentialLR",
            {
                "schedulers": [
                    Sched("ConstantLR", {"factor": 0.1, "total_iters": 20}),
                    Sched("ExponentialLR", {"gamma": 0.9}),
                ],
                "milestones": [20],
            },
        ),
    ),
    Case(
        # torch restarts later segments at their closed form at epoch 0: for a cosine with
        # eta_min that is eta_min + (lr - eta_min), 0.30000000000000004 for lr 0.3 and
        # eta_min 0.03; for
        # ConstantLR(total_iters=0) lr * (factor + 1 * (1 - factor)); for a MultiStepLR with a
        # negative milestone lr * gamma.
        "sequential-restart-values",
        Sched(
            "SequentialLR",
            {
                "schedulers": [
                    Sched("StepLR", {"step_size": 5, "gamma": 0.7}),
                    Sched("CosineAnnealingLR", {"T_max": 30, "eta_min": 0.03}),
                    Sched("ConstantLR", {"factor": 0.3, "total_iters": 0}),
                    Sched("MultiStepLR", {"milestones": [-1, 20], "gamma": 0.5}),
                ],
                "milestones": [20, 100, 150],
            },
        ),
        lr=0.3,
    ),
    Case(
        "sequential-milestone-zero",
        Sched(
            "SequentialLR",
            {
                "schedulers": [Sched("ExponentialLR", {"gamma": 0.9}), _WARMUP, _COS_EMIN],
                "milestones": [0, 50],
            },
        ),
    ),
    Case(
        "sequential-closed-forms",
        Sched(
            "SequentialLR",
            {
                "schedulers": [
                    Sched("LambdaLR", {"lr_lambda": _decay}),
                    Sched("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 10}),
                    Sched("CosineAnnealingWarmRestarts", {"T_0": 20}),
                ],
                "milestones": [40, 120],
            },
        ),
        lr=0.01,
    ),
    Case(
        "chained-constant-exponential",
        Sched(
            "ChainedScheduler",
            {
                "schedulers": [
                    Sched("ConstantLR", {"factor": 0.1, "total_iters": 20}),
                    Sched("ExponentialLR", {"gamma": 0.9}),
                ]
            },
        ),
    ),
    Case(
        "chained-linear-cosine-multistep",
        Sched(
            "ChainedScheduler",
            {
                "schedulers": [
                    Sched("LinearLR", {"start_factor": 0.5, "total_iters": 15}),
                    Sched("CosineAnnealingLR", {"T_max": 60, "eta_min": 0.002}),
                    Sched("MultiStepLR", {"milestones": [0, 100, 200]}),
                ]
            },
        ),
    ),
    Case(
        "chained-overwrite",
        Sched(
            "ChainedScheduler",
            {
                "schedulers": [
                    Sched("ExponentialLR", {"gamma": 0.95}),
                    Sched("CosineAnnealingWarmRestarts", {"T_0": 25}),
                    Sched("StepLR", {"step_size": 10, "gamma": 0.5}),
                    Sched("LambdaLR", {"lr_lambda": _decay}),
                    Sched("MultiplicativeLR", {"lr_lambda": _const}),
                ]
            },
        ),
    ),
    Case(
        "chained-horizon",
        Sched(
            "ChainedScheduler",
            {
                "schedulers": [
                    Sched("PolynomialLR", {"total_iters": 60, "power": 2.0}),
                    Sched("CosineAnnealingLR", {"T_max": 40}),
                ]
            },
            {"horizon": 30},
        ),
    ),
]


# --------------------------------------------------------------------------------------------
# Invalid inputs. ``torch`` says what torch does with the same arguments:
#   "same"     torch raises the same type with the same message at construction;
#   "type"     torch raises the same type at construction, with its own message;
#   "later"    torch raises ``torch_error`` only when stepped to ``count``;
#   "accepts"  torch builds it (ours is stricter, documented under "Differences from torch");
#   "n/a"      nothing to compare (no torch counterpart of the argument).


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    build: Sched | Callable[[], Any]
    error: type[Exception]
    message: str  # the exact message, or a regex when it starts with "re:"
    torch: str
    count: int | None = None  # ours raises when called at this count (else when built)
    torch_error: type[Exception] | None = None  # "later": what torch raises ...
    torch_count: int = 0  # ... on this scheduler.step() (0: at construction)
    torch_build: Callable[[torch.optim.Optimizer], Any] | None = None  # for callable ``build``

    def match(self) -> str:
        return self.message[3:] if self.message.startswith("re:") else re.escape(self.message)


def _seq(schedulers: list[Sched], milestones: list[int]) -> Sched:
    return Sched("SequentialLR", {"schedulers": schedulers, "milestones": milestones})


_EXP = Sched("ExponentialLR", {"gamma": 0.9})
_MUL = Sched("MultiplicativeLR", {"lr_lambda": _const})
_ONE = Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 300})
_POSITIVE_T0 = "Expected positive integer T_0, but got "

BAD: list[Bad] = [
    Bad(
        "constant-factor",
        Sched("ConstantLR", {"factor": 1.5}),
        ValueError,
        "Constant multiplicative factor expected to be between 0 and 1.",
        "same",
    ),
    Bad(
        "linear-start",
        Sched("LinearLR", {"start_factor": 0.0}),
        ValueError,
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
        "same",
    ),
    Bad(
        "linear-end",
        Sched("LinearLR", {"end_factor": 1.5}),
        ValueError,
        "Ending multiplicative factor expected to be between 0 and 1.",
        "same",
    ),
    Bad(
        "warm-T0-zero",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 0}),
        ValueError,
        _POSITIVE_T0 + "0",
        "same",
    ),
    Bad(
        "warm-T0-float",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 2.5}),
        ValueError,
        _POSITIVE_T0 + "2.5",
        "same",
    ),
    Bad(
        "warm-Tmult",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 0}),
        ValueError,
        "Expected integer T_mult >= 1, but got 0",
        "same",
    ),
    Bad(
        "warm-eta-min",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 5, "eta_min": "0"}),
        ValueError,
        "Expected float or int eta_min, but got 0 of type <class 'str'>",
        "same",
    ),
    Bad(
        "one-cycle-total",
        Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 0}),
        ValueError,
        "Expected positive integer total_steps, but got 0",
        "same",
    ),
    Bad(
        "one-cycle-undefined",
        Sched("OneCycleLR", {"max_lr": 0.1, "epochs": 3}),
        ValueError,
        "You must define either total_steps OR (epochs AND steps_per_epoch)",
        "same",
    ),
    Bad(
        "one-cycle-epochs",
        Sched("OneCycleLR", {"max_lr": 0.1, "epochs": 0, "steps_per_epoch": 4}),
        ValueError,
        "Expected positive integer epochs, but got 0",
        "same",
    ),
    Bad(
        "one-cycle-steps-per-epoch",
        Sched("OneCycleLR", {"max_lr": 0.1, "epochs": 2, "steps_per_epoch": -1}),
        ValueError,
        "Expected positive integer steps_per_epoch, but got -1",
        "same",
    ),
    Bad(
        "one-cycle-pct-int",
        Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": 1}),
        ValueError,
        "Expected float between 0 and 1 pct_start, but got 1",
        "same",
    ),
    Bad(
        "one-cycle-pct-range",
        Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "pct_start": 1.5}),
        ValueError,
        "Expected float between 0 and 1 pct_start, but got 1.5",
        "same",
    ),
    Bad(
        "one-cycle-anneal",
        Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 9, "anneal_strategy": "exp"}),
        ValueError,
        "anneal_strategy must be one of 'cos' or 'linear', instead got exp",
        "same",
    ),
    Bad(
        "one-cycle-past-total",
        _ONE,
        ValueError,
        "Tried to step 301 times. The specified number of total steps is 300",
        "later",
        count=301,
        torch_error=ValueError,
        torch_count=301,
    ),
    Bad(
        "cyclic-mode",
        Sched("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "mode": "square"}),
        ValueError,
        "mode is invalid and scale_fn is None",
        "same",
    ),
    Bad(
        "multiplicative-not-callable",
        Sched("MultiplicativeLR", {"lr_lambda": 0.5}),
        TypeError,
        "lr_lambda should be a function, but got float",
        "same",
    ),
    Bad(
        "lambda-not-callable",
        Sched("LambdaLR", {"lr_lambda": 0.5}),
        TypeError,
        "lr_lambda should be a function, but got float",
        "type",
    ),
    Bad(
        "sequential-empty",
        _seq([], []),
        ValueError,
        "SequentialLR expects at least one scheduler, but got no scheduler.",
        "same",
    ),
    Bad(
        "sequential-milestones",
        _seq([_EXP, _EXP], []),
        ValueError,
        "Sequential Schedulers expects number of schedulers provided to be one more than the "
        "number of milestone points, but got number of schedulers 2 and the number of "
        "milestones to be equal to 0",
        "same",
    ),
    Bad(
        "chained-empty",
        Sched("ChainedScheduler", {"schedulers": []}),
        ValueError,
        "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.",
        "same",
    ),
    Bad(
        "step-size-zero",
        Sched("StepLR", {"step_size": 0}),
        ValueError,
        "Expected positive integer step_size, but got 0",
        "later",
        torch_error=ZeroDivisionError,
        torch_count=1,
    ),
    Bad(
        "cosine-T-max-zero",
        Sched("CosineAnnealingLR", {"T_max": 0}),
        ValueError,
        "Expected positive integer T_max, but got 0",
        "later",
        torch_error=ZeroDivisionError,
        torch_count=1,
    ),
    Bad(
        "constant-factor-zero",
        Sched("ConstantLR", {"factor": 0.0, "total_iters": 4}),
        ZeroDivisionError,
        "float division by zero",
        "later",
        torch_error=ZeroDivisionError,
        torch_count=4,
    ),
    Bad(
        "cyclic-step-size-up-zero",
        Sched("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 0, "step_size_down": 4}),
        ValueError,
        "Expected step_size_up > 0 and step_size_down >= 0, but got 0 and 4",
        "later",
        torch_error=ZeroDivisionError,
        torch_count=0,
    ),
    Bad(
        "cyclic-scale-mode",
        Sched(
            "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "scale_fn": _slow, "scale_mode": "epoch"}
        ),
        ValueError,
        "scale_mode must be 'cycle' or 'iterations', but got 'epoch'",
        "accepts",
    ),
    Bad(
        "sequential-unsorted",
        _seq([_EXP, _EXP, _EXP], [20, 10]),
        ValueError,
        "milestones must be non-decreasing and non-negative, got [20, 10]",
        "accepts",
    ),
    Bad(
        "sequential-multiplicative-restart",
        _seq([_EXP, _MUL], [10]),
        ValueError,
        "re:torch does not restart MultiplicativeLR",
        "accepts",
    ),
    Bad(
        "chained-one-cycle",
        Sched("ChainedScheduler", {"schedulers": [_ONE]}),
        TypeError,
        "re:the schedule at index 0 .* is not chainable",
        "accepts",
    ),
    Bad(
        "chained-different-lr",
        lambda: S.chained([S.exponential_lr(0.1, 0.9), S.exponential_lr(0.2, 0.9)]),
        ValueError,
        "re:every schedule must start from the same lr",
        "n/a",
    ),
    Bad(
        "chained-sequential",
        lambda: S.chained([S.sequential_lr([S.exponential_lr(0.1, 0.9)], [])]),
        TypeError,
        "re:is not chainable",
        "n/a",
    ),
    Bad(
        "one-cycle-momentum-off",
        lambda: S.one_cycle_momentum(total_steps=10, cycle_momentum=False),
        ValueError,
        "re:cycle_momentum=False",
        "n/a",
    ),
    Bad(
        "cyclic-momentum-off",
        lambda: S.cyclic_momentum(cycle_momentum=False),
        ValueError,
        "re:cycle_momentum=False",
        "n/a",
    ),
    Bad(
        "horizon-zero",
        lambda: S.exponential_lr(0.1, 0.9, horizon=0),
        ValueError,
        "Expected positive integer horizon, but got 0",
        "n/a",
    ),
    Bad(
        "per-epoch-zero",
        lambda: S.per_epoch(S.exponential_lr(0.1, 0.9), 0),
        ValueError,
        "Expected positive integer steps_per_epoch, but got 0",
        "n/a",
    ),
    Bad(
        "plateau-factor",
        lambda: S.reduce_lr_on_plateau(0.1, factor=1.0),
        ValueError,
        "Factor should be < 1.0.",
        "same",
        torch_build=lambda opt: L.ReduceLROnPlateau(opt, factor=1.0),
    ),
    Bad(
        "plateau-mode",
        lambda: S.reduce_lr_on_plateau(0.1, mode="avg"),
        ValueError,
        "mode avg is unknown!",
        "same",
        torch_build=lambda opt: L.ReduceLROnPlateau(opt, mode="avg"),
    ),
    Bad(
        "plateau-threshold-mode",
        lambda: S.reduce_lr_on_plateau(0.1, threshold_mode="pct"),
        ValueError,
        "threshold mode pct is unknown!",
        "same",
        torch_build=lambda opt: L.ReduceLROnPlateau(opt, threshold_mode="pct"),
    ),
    Bad(
        "count-float",
        lambda: S.exponential_lr(0.1, 0.9)(jnp.float32(1.0)),
        TypeError,
        "count must be an integer scalar, got dtype float32",
        "n/a",
    ),
    Bad(
        "count-vector",
        lambda: S.exponential_lr(0.1, 0.9)(jnp.arange(3)),
        ValueError,
        "re:count must be a scalar, got shape \\(3,\\)",
        "n/a",
    ),
]


# --------------------------------------------------------------------------------------------
# ReduceLROnPlateau: configurations x metric sequences.


def _metrics() -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    t = np.arange(80)
    falling = 1.0 / (1.0 + t) + 0.05 * rng.standard_normal(80) * np.exp(-t / 20)
    plateaus = np.repeat([1.0, 0.9, 0.9, 0.95, 0.5, 0.5, 0.5, 0.49995, 0.8, 0.2], 8)
    rising = np.minimum(t / 40, 1.0) + 0.01 * rng.standard_normal(80)
    return {
        "falling": falling.tolist(),
        "plateaus": plateaus.tolist(),
        "rising": rising.tolist(),
        "with-nan-inf": [1.0, 0.5, float("nan"), 0.5, float("inf"), 0.4, 0.4, 0.4, 0.4, 0.3] * 8,
    }


PLATEAU_METRICS = _metrics()
PLATEAU_CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "patience-0": {"patience": 0},
    "patience-2-cooldown-3": {"patience": 2, "cooldown": 3, "factor": 0.5},
    "abs-threshold": {"patience": 1, "threshold": 0.01, "threshold_mode": "abs"},
    "min-lr": {"patience": 1, "factor": 0.2, "min_lr": 0.003},
    "eps-blocks": {"patience": 0, "factor": 0.5, "eps": 0.02},
    "max-rel": {"mode": "max", "patience": 2},
    "max-abs": {"mode": "max", "patience": 1, "threshold": 0.05, "threshold_mode": "abs"},
}


# --------------------------------------------------------------------------------------------
# Epoch-stepped schedules driven by the optimizer's step count (the two runs).


@dataclasses.dataclass(frozen=True)
class EpochRun:
    id: str
    spec: Sched
    optimizer: str
    epochs: int
    steps_per_epoch: int
    per_batch: bool  # True: scheduler.step() after every batch; False: after every epoch


EPOCH_RUNS = [
    EpochRun(
        "sgd-steplr-per-epoch",
        Sched("StepLR", {"step_size": 3, "gamma": 0.5}),
        "sgd",
        12,
        7,
        per_batch=False,
    ),
    EpochRun(
        "sgd-cosine-per-epoch",
        Sched("CosineAnnealingLR", {"T_max": 5}),
        "sgd",
        12,
        5,
        per_batch=False,
    ),
    EpochRun(
        "adam-onecycle-per-batch",
        Sched("OneCycleLR", {"max_lr": 0.01, "epochs": 4, "steps_per_epoch": 25}),
        "adam",
        4,
        25,
        per_batch=True,
    ),
]


# --------------------------------------------------------------------------------------------
# optax counterparts. Each row: the torch scheduler (built here with lr 0.1 over counts 0..300),
# the optax schedule fed the same counts as exact float64 values (optax's own int32 count makes
# several of its schedules compute in float32, see ``int32_dtype``), and what relates them.


@dataclasses.dataclass(frozen=True)
class OptaxRow:
    id: str
    spec: Sched
    optax: Callable[[], Callable[[Any], Any]]
    relation: str  # "equal" | "close" | a named difference checked in the test
    difference: str  # the README table's text
    int32_dtype: str  # the dtype optax returns for an int32 count under x64
    boundary: int | None = None  # where the difference starts (clamping) or the torch peak
    int_counts: bool = False  # feed int32 counts (the row wraps our schedules)
    # Evaluate optax op by op: under jit XLA computes count / T as count * (1 / T), which makes
    # polynomial_schedule's base 1 - 50 * (1 / 50) = -2.2e-16 and its 1.7th power NaN.
    eager: bool = False


OPTAX_ROWS = [
    OptaxRow(
        "StepLR",
        Sched("StepLR", {"step_size": 7, "gamma": 0.9}),
        lambda: optax.exponential_decay(0.1, 7, 0.9, staircase=True),
        "close",
        "closed form `0.1 * 0.9 ** (k // 7)` vs torch's repeated products (ulps)",
        "float32",
    ),
    OptaxRow(
        "MultiStepLR",
        Sched("MultiStepLR", {"milestones": [30, 80, 80], "gamma": 0.5}),
        lambda: optax.piecewise_constant_schedule(0.1, {30: 0.5, 80: 0.25}),
        "equal",
        "none (repeated milestones become one boundary with `gamma ** n`)",
        "float64",
    ),
    OptaxRow(
        "ExponentialLR",
        Sched("ExponentialLR", {"gamma": 0.97}),
        lambda: optax.exponential_decay(0.1, 1, 0.97),
        "close",
        "closed form `0.1 * 0.97 ** k` vs torch's repeated products (ulps)",
        "float32",
    ),
    OptaxRow(
        "CosineAnnealingLR",
        Sched("CosineAnnealingLR", {"T_max": 100, "eta_min": 0.001}),
        lambda: optax.cosine_decay_schedule(0.1, 100, alpha=0.01),
        "clamped-after-T",
        "equal up to `T_max` (closed form vs recursion: ulps); optax then stays at `eta_min`, "
        "torch rises again (period `2 T_max`)",
        "float64",
        boundary=100,
    ),
    OptaxRow(
        "CosineAnnealingWarmRestarts",
        Sched("CosineAnnealingWarmRestarts", {"T_0": 30, "eta_min": 0.001}),
        lambda: optax.sgdr_schedule(
            [
                {
                    "init_value": 0.1,
                    "peak_value": 0.1,
                    "warmup_steps": 0,
                    "decay_steps": 30,
                    "end_value": 0.001,
                }
            ]
            * 11
        ),
        "close",
        "`sgdr_schedule` with one dict per cycle (T_mult=1): rounding only",
        "float64",
    ),
    OptaxRow(
        "LinearLR",
        Sched("LinearLR", {"start_factor": 0.25, "end_factor": 0.9, "total_iters": 40}),
        lambda: optax.linear_schedule(0.1 * 0.25, 0.1 * 0.9, 40),
        "close",
        "closed-form interpolation of the lrs vs torch's recursive factors (ulps)",
        "float32",
    ),
    OptaxRow(
        "ConstantLR",
        Sched("ConstantLR", {"factor": 0.25, "total_iters": 20}),
        lambda: optax.piecewise_constant_schedule(0.1 * 0.25, {20: 4.0}),
        "equal",
        "none: `piecewise_constant_schedule(lr * factor, {total_iters: 1 / factor})`",
        "float64",
    ),
    OptaxRow(
        "PolynomialLR",
        Sched("PolynomialLR", {"total_iters": 50, "power": 1.7}),
        lambda: optax.polynomial_schedule(0.1, 0.0, 1.7, 50),
        "close",
        "closed form vs torch's recursive ratio (ulps)",
        "float32",
        eager=True,
    ),
    OptaxRow(
        "OneCycleLR",
        Sched("OneCycleLR", {"max_lr": 0.1, "total_steps": 300}),
        lambda: optax.cosine_onecycle_schedule(300, 0.1),
        "one-count-later",
        "optax's phases end at `int(pct_start * T)` and `T`, torch's at `pct_start * T - 1` and "
        "`T - 1`: optax peaks and bottoms out one count later; no momentum schedule",
        "float64",
        boundary=89,
    ),
    OptaxRow(
        "SequentialLR(LinearLR, CosineAnnealingLR)",
        Sched(
            "SequentialLR",
            {
                "schedulers": [
                    Sched("LinearLR", {"start_factor": 0.1, "total_iters": 10}),
                    Sched("CosineAnnealingLR", {"T_max": 90, "eta_min": 0.001}),
                ],
                "milestones": [10],
            },
        ),
        lambda: optax.warmup_cosine_decay_schedule(0.01, 0.1, 10, 100, 0.001),
        "clamped-after-T",
        "`warmup_cosine_decay_schedule(lr * start_factor, lr, w, w + T_max, eta_min)`: equal up "
        "to the end of the decay (ulps), then optax stays at `eta_min`",
        "float32",
        boundary=100,
    ),
    OptaxRow(
        "SequentialLR",
        Sched(
            "SequentialLR",
            {"schedulers": [_WARMUP, Sched("ExponentialLR", {"gamma": 0.97})], "milestones": [10]},
        ),
        lambda: optax.join_schedules(
            [S.linear_lr(0.1, 0.1, total_iters=10), S.exponential_lr(0.1, 0.97)], [10]
        ),
        "equal",
        "none: `join_schedules` restarts the count at each boundary, like torch",
        "float64",
        int_counts=True,
    ),
]
