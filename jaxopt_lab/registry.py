"""One row per algorithm: every fact about an optimizer that more than one module needs.

The torch hand-off (:mod:`jaxopt_lab.interop.torch_state`), the three-way cross-check
(:mod:`jaxopt_lab.cifar.crosscheck`), the CIFAR command line (``experiments/cifar10.py``) and the
test
tables (``tests/cases.py``) read these rows instead of keeping their own lists. Adding an optimizer
is its module (the factory, with torch's signature and defaults) plus one :class:`Algorithm` row
here; the hyper-parameter names and defaults are read from the factory's signature, so they live
in one place too.

Example::

    from jaxopt_lab import registry

    registry.get("nadam").torch_class       # "NAdam"
    registry.get("nadam").defaults()["lr"]   # 0.002, torch's default
    [a.name for a in registry.ALGORITHMS if a.optax is None]
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["ALGORITHMS", "Algorithm", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """The facts about one torch.optim algorithm and its jaxopt_lab port.

    Attributes:
        name: the factory's name, ``jaxopt_lab.<name>`` (torch's class name in snake case).
        torch_class: ``torch.optim.<torch_class>``.
        state_keys: torch's per-parameter state keys besides ``step``; each is the name of a
            state field of ours (the field's leaves are those tensors).
        torch_step: whether torch keeps a per-parameter ``step`` (ours: the int32 ``count``).
        torch_int_step: whether that ``step`` is a Python int (SparseAdam) rather than a
            float32 0-d tensor (torch's bias corrections then run in double precision).
        optax: the closest optax optimizer (``"optax.nadam"``), or None where optax has none.
        optax_exact: whether that optax optimizer computes torch's math (only rounding differs).
        optax_differences: how optax differs from torch, measured (see the parity tests).
        kernels: the one-pass CPU kernel targets the algorithm can use
            (``jaxopt_lab.optim.native``).
        per_step: whether it steps from one gradient (``update``) on any param shape, as the
            CIFAR cross-check drives it; L-BFGS needs a closure, Muon 2-D params, SparseAdam
            sparse gradients.
    """

    name: str
    torch_class: str
    state_keys: tuple[str, ...]
    torch_step: bool = True
    torch_int_step: bool = False
    optax: str | None = None
    optax_exact: bool = False
    optax_differences: str = ""
    kernels: tuple[str, ...] = ()
    per_step: bool = True

    @property
    def factory(self) -> Callable[..., Any]:
        """``jaxopt_lab.<name>``."""
        import jaxopt_lab

        return getattr(jaxopt_lab, self.name)

    def defaults(self) -> dict[str, Any]:
        """The factory's hyper-parameters and their defaults (torch's), in signature order."""
        params = inspect.signature(self.factory).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm(
        "sgd",
        "SGD",
        ("momentum_buffer",),
        torch_step=False,
        optax="optax.sgd",
        optax_exact=True,
        optax_differences="weight_decay and maximize are chained transforms; dampening has no "
        "optax counterpart (optax.trace has none)",
        kernels=("jaxopt_lab_sgd_momentum_f32",),
    ),
    Algorithm(
        "adam",
        "Adam",
        ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        optax="optax.adam",
        optax_exact=True,
        optax_differences="optax divides by (sqrt(nu_hat) + eps) with nu_hat bias-corrected: same "
        "math, other rounding; optax.amsgrad takes the max of the bias-corrected moment",
        kernels=("jaxopt_lab_adam_f32", "jaxopt_lab_amsgrad_f32"),
    ),
    Algorithm(
        "adamw",
        "AdamW",
        ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        optax="optax.adamw",
        optax_exact=True,
        optax_differences="default weight_decay 1e-4 (torch 1e-2); decay scaled by the lr only",
        kernels=("jaxopt_lab_adam_f32", "jaxopt_lab_amsgrad_f32"),
    ),
    Algorithm(
        "rmsprop",
        "RMSprop",
        ("square_avg", "momentum_buffer", "grad_avg"),
        optax="optax.rmsprop",
        optax_exact=True,
        optax_differences="needs eps_in_sqrt=False and bias_correction=False to match torch",
    ),
    Algorithm(
        "adagrad",
        "Adagrad",
        ("sum",),
        optax="optax.adagrad",
        optax_exact=False,
        optax_differences="optax starts the accumulator at 0.1, puts eps inside the sqrt and has "
        "no lr_decay",
    ),
    Algorithm(
        "nadam",
        "NAdam",
        ("exp_avg", "exp_avg_sq", "mu_product"),
        optax="optax.nadam",
        optax_differences="optax keeps beta1 constant; torch uses mu_t = beta1 (1 - 0.5 * "
        "0.96^(t * momentum_decay)) and a running product of mu (0.39 apart at step 1 with the "
        "defaults; the same maths once mu_t = beta1)",
        kernels=("jaxopt_lab_nadam_f32",),
    ),
    Algorithm(
        "radam",
        "RAdam",
        ("exp_avg", "exp_avg_sq"),
        optax="optax.radam",
        optax_differences="optax adds eps to sqrt(nu_hat) where torch's effective eps is "
        "eps / sqrt(bias_correction2) (0.37 apart at step 10 for |g| ~ 1e-7; the same with "
        "eps=0); no weight decay (chained after optax.add_decayed_weights: torch's)",
        kernels=("jaxopt_lab_radam_f32",),
    ),
    Algorithm(
        "adamax",
        "Adamax",
        ("exp_avg", "exp_inf"),
        optax="optax.adamax",
        optax_exact=True,
        optax_differences="no weight decay or maximize (chained transforms)",
        kernels=("jaxopt_lab_adamax_f32",),
    ),
    Algorithm(
        "adadelta",
        "Adadelta",
        ("square_avg", "acc_delta"),
        optax="optax.adadelta",
        optax_exact=True,
        optax_differences="weight_decay is optax's L2 term, as torch's; maximize is a chained "
        "transform; learning_rate=None returns the un-negated step",
        kernels=("jaxopt_lab_adadelta_f32",),
    ),
    Algorithm("asgd", "ASGD", ("eta", "mu", "ax"), optax=None, optax_differences="no optax ASGD"),
    Algorithm(
        "rprop",
        "Rprop",
        ("prev", "step_size"),
        optax="optax.rprop",
        optax_differences="optax emits the previous step's update (its first update is 0; "
        "torch's is +-lr), and 0 where the gradient's sign flips",
        kernels=("jaxopt_lab_rprop_f32",),
    ),
    Algorithm(
        "adafactor",
        "Adafactor",
        ("row_var", "col_var", "variance"),
        optax="optax.adafactor",
        optax_differences="optax factors a tensor only if two dims are >= "
        "min_dim_size_to_factor (128), on its two largest (torch: every ndim > 1 tensor, on its "
        "last two), steps lr * RMS(p) (torch: min(lr, 1/sqrt(t)) * RMS(p)), computes the decay "
        "1 - t^-0.8 in float32 and decays p by weight_decay_rate * p (torch: lr * weight_decay "
        "* p); otherwise torch's update (7.6e-8 apart after 30 float64 steps)",
    ),
    Algorithm(
        "muon",
        "Muon",
        ("momentum_buffer",),
        torch_step=False,
        optax="optax.contrib.muon",
        optax_differences="torch: lerp momentum, Newton-Schulz in bfloat16 after dividing by "
        "max(||X||_F, eps), lr adjusted by sqrt(max(1, A/B)) or match_rms_adamw, 2-D only; "
        "optax: bias-corrected momentum, the param dtype, sqrt(max(1, B/A)) (an (in, out) "
        "kernel), no decay by default",
        per_step=False,
    ),
    Algorithm(
        "sparse_adam",
        "SparseAdam",
        ("exp_avg", "exp_avg_sq"),
        torch_int_step=True,
        optax=None,
        optax_differences="no optax SparseAdam (gradients as BCOO here)",
        per_step=False,
    ),
    Algorithm(
        "lbfgs",
        "LBFGS",
        (
            "d",
            "t",
            "old_dirs",
            "old_stps",
            "ro",
            "H_diag",
            "prev_flat_grad",
            "prev_loss",
            "n_iter",
            "func_evals",
        ),
        torch_step=False,
        optax="optax.lbfgs",
        optax_differences="one iteration per update, first step scaled by min(1, 1/||g||_2) "
        "(torch: min(1, 1/||g||_1) * lr), no curvature-pair skipping, zoom line search",
        per_step=False,
    ),
)
"""Every algorithm of ``torch.optim.__all__``, in torch's order of introduction here."""

_BY_NAME = {a.name: a for a in ALGORITHMS}


def get(name: str) -> Algorithm:
    """The row of ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(_BY_NAME)}") from None


def names(*, per_step: bool | None = None) -> tuple[str, ...]:
    """The algorithms' names, optionally only those that do (or do not) step per gradient."""
    return tuple(a.name for a in ALGORITHMS if per_step is None or a.per_step == per_step)
