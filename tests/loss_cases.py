"""The loss tables every test in ``tests/test_losses.py`` iterates.

``CASES``: valid configurations. Each row names a loss (the same name in ``torch.nn.functional``
and ``jaxopt_lab.losses``), builds its operands from a seeded generator in float64 / int64
(the test casts floats to the dtype under test, so torch and JAX see identical numbers), and
lists its static options and the reductions to run.

``TUTORIAL``: the tutorial's own printed numbers, as explicit rows.

``INVALID``: bad inputs with the exception type and message each must raise, and what happens
to the same call under ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

REDUCTIONS = ("none", "mean", "sum")
KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (test caches)
class Operands:
    """Arrays of one case: floats in float64, class indices in an integer dtype."""

    input: np.ndarray
    target: np.ndarray
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # weight, pos_weight


@dataclasses.dataclass(frozen=True, eq=False)
class LossCase:
    loss: str
    desc: str
    build: Callable[[np.random.Generator], Operands]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    reductions: tuple[str, ...] = REDUCTIONS
    representative: bool = False
    eager: bool = False

    @property
    def id(self) -> str:
        return f"{self.loss}-{self.desc}"


# ---------------------------------------------------------------------------------------------
# Operand builders.
# ---------------------------------------------------------------------------------------------

# Differences placed exactly on the kinks of |d|, smooth L1 (beta = 1, 0.5) and Huber (delta =
# 1, 2.5). Targets are multiples of 1/8 below 32 in magnitude, so target + d is exact in float32
# too and the kink is hit exactly in both dtypes.
_KINKS = np.array([0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 0.0])


def _regression(shape: tuple[int, ...], weighted: bool = False):
    def build(rng: np.random.Generator) -> Operands:
        y = np.round(rng.normal(0.0, 2.0, shape) * 8) / 8
        d = rng.normal(0.0, 1.5, shape)
        d.flat[: min(d.size, _KINKS.size)] = _KINKS[: d.size]
        x = y + d
        arrays = {"weight": rng.uniform(0.5, 2.0, shape)} if weighted else {}
        return Operands(x, y, arrays)

    return build


def _fixed(input: list, target: list | int, target_dtype: Any = np.float64):
    def build(rng: np.random.Generator) -> Operands:
        del rng
        return Operands(np.asarray(input, np.float64), np.asarray(target, target_dtype))

    return build


def _probabilities(shape: tuple[int, ...], weight_shape: tuple[int, ...] | None = None):
    """BCE: inputs strictly inside (0, 1), soft targets in [0, 1]."""

    def build(rng: np.random.Generator) -> Operands:
        x = rng.uniform(0.02, 0.98, shape)
        y = rng.uniform(0.0, 1.0, shape)
        y.flat[:2] = [0.0, 1.0]
        arrays = {} if weight_shape is None else {"weight": rng.uniform(0.5, 2.0, weight_shape)}
        return Operands(x, y, arrays)

    return build


def _bce_edges(rng: np.random.Generator) -> Operands:
    """Inputs of exactly 0 and 1 (torch clamps log at -100 and the gradient's x(1-x) at 1e-12)."""
    del rng
    x = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1e-50, 0.5, 1e-7, 1 - 1e-7])
    y = np.array([0.0, 0.3, 1.0, 0.7, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0])
    return Operands(x, y)


def _logits_binary(
    shape: tuple[int, ...],
    weight_shape: tuple[int, ...] | None = None,
    pos_weight_shape: tuple[int, ...] | None = None,
    scale: float = 3.0,
):
    def build(rng: np.random.Generator) -> Operands:
        x = rng.normal(0.0, scale, shape)
        y = rng.uniform(0.0, 1.0, shape)
        y.flat[:2] = [0.0, 1.0]
        arrays = {}
        if weight_shape is not None:
            arrays["weight"] = rng.uniform(0.5, 2.0, weight_shape)
        if pos_weight_shape is not None:
            arrays["pos_weight"] = rng.uniform(0.3, 3.0, pos_weight_shape)
        return Operands(x, y, arrays)

    return build


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _kl(shape: tuple[int, ...], log_target: bool):
    """Input: log-probabilities; target: probabilities with some exact zeros (xlogy(0, 0) = 0)."""

    def build(rng: np.random.Generator) -> Operands:
        x = np.log(_softmax(rng.normal(0.0, 1.0, shape), axis=1))
        p = _softmax(rng.normal(0.0, 1.0, shape), axis=1)
        if log_target:
            return Operands(x, np.log(p))
        p.flat[:: max(3, shape[-1] + 1)] = 0.0
        return Operands(x, p)

    return build


def _classes(
    shape: tuple[int, ...],
    *,
    weighted: bool = False,
    ignore: int | None = None,
    log_probs: bool = False,
    target_dtype: Any = np.int64,
    all_ignored: bool = False,
):
    """Logits (or log-probabilities) of shape (C,), (N, C) or (N, C, d1, ...) and class indices."""

    def build(rng: np.random.Generator) -> Operands:
        x = rng.normal(0.0, 2.0, shape)
        class_dim = 0 if len(shape) == 1 else 1
        n_classes = shape[class_dim]
        if log_probs:
            x = np.log(_softmax(x, axis=class_dim))
        target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
        t = rng.integers(0, n_classes, target_shape)
        if ignore is not None:
            t.flat[1 :: max(2, t.size // 2)] = ignore
            if all_ignored:
                t[...] = ignore
        arrays = {"weight": rng.uniform(0.5, 2.0, (n_classes,))} if weighted else {}
        return Operands(x, t.astype(target_dtype), arrays)

    return build


def _soft_classes(shape: tuple[int, ...], weighted: bool = False):
    def build(rng: np.random.Generator) -> Operands:
        class_dim = 0 if len(shape) == 1 else 1
        x = rng.normal(0.0, 2.0, shape)
        p = _softmax(rng.normal(0.0, 1.0, shape), axis=class_dim)
        arrays = {"weight": rng.uniform(0.5, 2.0, (shape[class_dim],))} if weighted else {}
        return Operands(x, p, arrays)

    return build


# ---------------------------------------------------------------------------------------------
# Valid configurations.
# ---------------------------------------------------------------------------------------------

_TUTORIAL_REGRESSION = _fixed([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])

# `representative`: one row per loss with its richest module-compatible options (module test);
# `eager`: the rows also run op by op (jit == eager test; eager JAX is slow, so only four).
_REP = {"representative": True}
_REP_EAGER = {"representative": True, "eager": True}
_LS = "label_smoothing"

CASES: list[LossCase] = [
    # Regression: the tutorial's vectors, random values with differences exactly on the kinks.
    LossCase("l1_loss", "tutorial", _TUTORIAL_REGRESSION),
    LossCase("l1_loss", "4x5-ties", _regression((4, 5)), **_REP_EAGER),
    LossCase("l1_loss", "weighted", _regression((3, 4), weighted=True)),
    LossCase("mse_loss", "tutorial", _TUTORIAL_REGRESSION, **_REP),
    LossCase("mse_loss", "weighted", _regression((3, 4), weighted=True)),
    LossCase("smooth_l1_loss", "beta1-kinks", _regression((4, 5)), {"beta": 1.0}),
    LossCase("smooth_l1_loss", "beta0.5", _regression((2, 3, 4)), {"beta": 0.5}, **_REP),
    LossCase("smooth_l1_loss", "beta0-is-l1", _regression((4, 5)), {"beta": 0.0}),
    LossCase("huber_loss", "delta1-kinks", _regression((4, 5)), {"delta": 1.0}),
    LossCase("huber_loss", "delta2.5", _regression((4, 5)), {"delta": 2.5}, **_REP),
    LossCase("huber_loss", "weight-delta0.5", _regression((3, 4), weighted=True), {"delta": 0.5}),
    # Binary cross-entropy on probabilities.
    LossCase("binary_cross_entropy", "weight-bcast", _probabilities((3, 4), (4,)), **_REP),
    LossCase("binary_cross_entropy", "weight-full", _probabilities((2, 3, 2), (2, 3, 2))),
    LossCase("binary_cross_entropy", "edges-0-1", _bce_edges),
    # Binary cross-entropy on logits.
    LossCase("binary_cross_entropy_with_logits", "3x4", _logits_binary((3, 4))),
    LossCase("binary_cross_entropy_with_logits", "pos_weight", _logits_binary((3, 4), None, (4,))),
    LossCase(
        "binary_cross_entropy_with_logits",
        "both-3d",
        _logits_binary((2, 3, 4), (3, 4), (4,)),
        **_REP_EAGER,
    ),
    LossCase(
        "binary_cross_entropy_with_logits", "large-logits", _logits_binary((4, 5), None, (5,), 15.0)
    ),
    # KL divergence.
    LossCase("kl_div", "probs", _kl((3, 5), log_target=False), {}, KL_REDUCTIONS),
    LossCase(
        "kl_div", "log_target", _kl((3, 5), True), {"log_target": True}, KL_REDUCTIONS, **_REP
    ),
    LossCase("kl_div", "3d", _kl((2, 4, 3), log_target=False), {}, KL_REDUCTIONS),
    # NLL on log-probabilities.
    LossCase(
        "nll_loss",
        "ignore-in-range",
        _classes((6, 4), weighted=True, ignore=2, log_probs=True),
        {"ignore_index": 2},
        **_REP,
    ),
    LossCase(
        "nll_loss", "NxCxd1xd2", _classes((2, 4, 3, 2), weighted=True, ignore=-100, log_probs=True)
    ),
    LossCase("nll_loss", "unbatched", _classes((5,), weighted=True, log_probs=True)),
    # Cross-entropy, class indices ('mean' divides by the weights of the non-ignored targets).
    LossCase(
        "cross_entropy",
        "NxCxd1-weight-ignore-int32",
        _classes((2, 4, 3), weighted=True, ignore=-100, target_dtype=np.int32),
    ),
    LossCase("cross_entropy", "ignore-in-range", _classes((6, 4), ignore=1), {"ignore_index": 1}),
    LossCase("cross_entropy", "NxCxd1xd2", _classes((2, 3, 2, 2), ignore=-100)),
    LossCase("cross_entropy", "unbatched", _classes((5,))),
    LossCase(
        "cross_entropy",
        "all-ignored",
        _classes((3, 4), weighted=True, ignore=-100, all_ignored=True),
    ),
    # Cross-entropy with label smoothing (torch divides the smoothing term by the same weights).
    LossCase("cross_entropy", "ls0.1", _classes((5, 4)), {_LS: 0.1}),
    LossCase(
        "cross_entropy",
        "ls-NxCxd1-weight-ignore",
        _classes((2, 4, 3), weighted=True, ignore=-100),
        {_LS: 0.3},
        **_REP_EAGER,
    ),
    LossCase("cross_entropy", "ls-unbatched-weight", _classes((5,), weighted=True), {_LS: 0.25}),
    LossCase(
        "cross_entropy",
        "ls-all-ignored",
        _classes((3, 4), weighted=True, ignore=-100, all_ignored=True),
        {_LS: 0.1},
    ),
    # Cross-entropy, class probabilities ('mean' divides by the number of samples).
    LossCase("cross_entropy", "probs-weight-ls", _soft_classes((4, 5), True), {_LS: 0.15}),
    LossCase("cross_entropy", "probs-NxCxd1-weight", _soft_classes((2, 4, 3), weighted=True)),
    LossCase("cross_entropy", "probs-unbatched", _soft_classes((5,)), {_LS: 0.1}),
]

# ---------------------------------------------------------------------------------------------
# The tutorial's printed numbers (rounded to 4 decimals there).
# ---------------------------------------------------------------------------------------------

TUTORIAL: list[tuple[str, list, Any, dict[str, Any], float]] = [
    ("l1_loss", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], {}, 0.6667),
    ("l1_loss", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], {"reduction": "sum"}, 2.0),
    ("mse_loss", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], {}, 1.3333),
    ("cross_entropy", [0.1, 0.2, 0.3], 1, {}, 1.1019),
    ("cross_entropy", [[0.1, 0.2, 0.3]], [1], {}, 1.1019),
]

# ---------------------------------------------------------------------------------------------
# Invalid inputs.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InvalidCase:
    """``losses.<fn>(*args, **kwargs)`` must raise ``error`` matching ``match``.

    ``under_jit``: ``"raise"`` -- a trace-time check, the same error under ``jax.jit`` (with the
    ``kwargs`` static); ``"nan"`` -- a value check that cannot run on tracers: under ``jax.jit``
    the call returns a loss containing NaN; ``None`` -- nothing is traced (constructors).
    """

    desc: str
    fn: str
    args: tuple
    kwargs: dict[str, Any]
    error: type[Exception]
    match: str
    under_jit: str | None = "raise"


def _f(*shape: int, dtype: Any = np.float64) -> np.ndarray:
    return np.full(shape, 0.25, dtype)


def _i(*values: int, dtype: Any = np.int64) -> np.ndarray:
    return np.asarray(values, dtype)


INVALID: list[InvalidCase] = [
    # Unknown reductions.
    InvalidCase(
        "reduction",
        "l1_loss",
        (_f(3), _f(3)),
        {"reduction": "avg"},
        ValueError,
        r"l1_loss: 'avg' is not a valid value for reduction",
    ),
    InvalidCase(
        "batchmean-not-kl",
        "mse_loss",
        (_f(3), _f(3)),
        {"reduction": "batchmean"},
        ValueError,
        r"'batchmean' is not a valid value",
    ),
    InvalidCase(
        "reduction-ce",
        "cross_entropy",
        (_f(2, 3), _i(0, 1)),
        {"reduction": "elementwise"},
        ValueError,
        r"cross_entropy: 'elementwise' is not a valid",
    ),
    InvalidCase(
        "reduction-kl",
        "kl_div",
        (_f(2, 3), _f(2, 3)),
        {"reduction": "max"},
        ValueError,
        r"expected one of 'none', 'batchmean'",
    ),
    InvalidCase(
        "module-reduction",
        "L1Loss",
        (),
        {"reduction": "avg"},
        ValueError,
        r"L1Loss: 'avg' is not a valid value",
        None,
    ),
    InvalidCase(
        "module-reduction-ce",
        "CrossEntropyLoss",
        (),
        {"reduction": None},
        ValueError,
        r"CrossEntropyLoss: None is not a valid",
        None,
    ),
    # Shape mismatches.
    InvalidCase(
        "shape",
        "l1_loss",
        (_f(3), _f(4)),
        {},
        ValueError,
        r"l1_loss: target shape \(4,\) must equal input shape \(3,\)",
    ),
    InvalidCase("shape-bcast", "mse_loss", (_f(2, 3), _f(3)), {}, ValueError, r"no broadcasting"),
    InvalidCase(
        "shape-weight",
        "l1_loss",
        (_f(3), _f(3)),
        {"weight": _f(1)},
        ValueError,
        r"weight shape \(1,\) must equal",
    ),
    InvalidCase(
        "shape-bce",
        "binary_cross_entropy",
        (_f(3), _f(3, 1)),
        {},
        ValueError,
        r"target shape \(3, 1\)",
    ),
    InvalidCase(
        "shape-bce-weight",
        "binary_cross_entropy",
        (_f(2, 3), _f(2, 3)),
        {"weight": _f(2)},
        ValueError,
        r"weight of shape \(2,\) cannot be broadcast to \(2, 3\)",
    ),
    InvalidCase(
        "shape-pos-weight",
        "binary_cross_entropy_with_logits",
        (_f(2, 3), _f(2, 3)),
        {"pos_weight": _f(4)},
        ValueError,
        r"pos_weight of shape \(4,\)",
    ),
    InvalidCase(
        "shape-kl", "kl_div", (_f(2, 3), _f(3, 2)), {}, ValueError, r"kl_div: target shape"
    ),
    InvalidCase(
        "shape-ce-target",
        "cross_entropy",
        (_f(3, 4), _i(0, 1)),
        {},
        ValueError,
        r"expected target shape \(3,\) of class indices for input shape \(3, 4\)",
    ),
    InvalidCase(
        "shape-ce-d1",
        "cross_entropy",
        (_f(2, 4, 3), np.zeros((2, 4), np.int64)),
        {},
        ValueError,
        r"expected target shape \(2, 3\)",
    ),
    InvalidCase(
        "shape-ce-unbatched",
        "cross_entropy",
        (_f(4), _i(1)),
        {},
        ValueError,
        r"\(C,\) input needs a 0-d target",
    ),
    InvalidCase(
        "shape-ce-0d",
        "cross_entropy",
        (_f(), _i()),
        {},
        ValueError,
        r"input must have a class dimension",
    ),
    InvalidCase(
        "shape-ce-weight",
        "cross_entropy",
        (_f(2, 4), _i(0, 1)),
        {"weight": _f(3)},
        ValueError,
        r"weight tensor should be defined either for all 4 classes",
    ),
    InvalidCase(
        "shape-nll-weight",
        "nll_loss",
        (_f(2, 4), _i(0, 1)),
        {"weight": _f(4, 1)},
        ValueError,
        r"for all 4 classes or no classes but got weight tensor of shape: \(4, 1\)",
    ),
    # Dtypes.
    InvalidCase(
        "int-input",
        "l1_loss",
        (_i(1, 2, 3), _i(1, 2, 5)),
        {},
        TypeError,
        r"l1_loss: input must be a floating-point array, got dtype int64",
    ),
    InvalidCase(
        "bool-input",
        "binary_cross_entropy",
        (np.ones(3, bool), _f(3)),
        {},
        TypeError,
        r"floating-point",
    ),
    InvalidCase(
        "int-logits",
        "cross_entropy",
        (_i(1, 2, 3), _i(1)[0]),
        {},
        TypeError,
        r"cross_entropy: input must be a floating-point array",
    ),
    InvalidCase(
        "mixed-float",
        "mse_loss",
        (_f(3), _f(3, dtype=np.float32)),
        {},
        TypeError,
        r"target has dtype float32 but input has dtype float64",
    ),
    InvalidCase(
        "weight-dtype",
        "cross_entropy",
        (_f(2, 3), _i(0, 1)),
        {"weight": _f(3, dtype=np.float32)},
        TypeError,
        r"weight has dtype float32",
    ),
    InvalidCase(
        "float-class-target",
        "cross_entropy",
        (_f(3, 4), _f(3)),
        {},
        TypeError,
        r"class-index target must have an integer dtype, got float64 "
        r"\(class probabilities need target shape \(3, 4\)",
    ),
    InvalidCase(
        "bool-class-target",
        "nll_loss",
        (_f(3, 4), np.ones(3, bool)),
        {},
        TypeError,
        r"integer dtype, got bool",
    ),
    InvalidCase(
        "int-prob-target",
        "cross_entropy",
        (_f(3, 4), np.zeros((3, 4), np.int64)),
        {},
        TypeError,
        r"holds class probabilities and must be floating-point, got int64",
    ),
    InvalidCase(
        "float-ignore-index",
        "nll_loss",
        (_f(2, 3), _i(0, 1)),
        {"ignore_index": 1.0},
        TypeError,
        r"ignore_index must be a Python int",
    ),
    InvalidCase(
        "log-target-type",
        "kl_div",
        (_f(2, 3), _f(2, 3)),
        {"log_target": "yes"},
        TypeError,
        r"log_target must be a bool",
    ),
    # Option values.
    InvalidCase(
        "negative-beta",
        "smooth_l1_loss",
        (_f(3), _f(3)),
        {"beta": -1.0},
        ValueError,
        r"does not support negative values for beta",
    ),
    InvalidCase(
        "zero-delta",
        "huber_loss",
        (_f(3), _f(3)),
        {"delta": 0.0},
        ValueError,
        r"does not support non-positive values for delta",
    ),
    InvalidCase(
        "label-smoothing>1",
        "cross_entropy",
        (_f(2, 3), _i(0, 1)),
        {"label_smoothing": 1.5},
        ValueError,
        r"label_smoothing must be between 0.0 and 1.0. Got: 1.5",
    ),
    InvalidCase(
        "label-smoothing<0",
        "cross_entropy",
        (_f(2, 3), _i(0, 1)),
        {"label_smoothing": -0.1},
        ValueError,
        r"label_smoothing must be between",
    ),
    InvalidCase(
        "ignore-index-probs",
        "cross_entropy",
        (_f(2, 3), _f(2, 3)),
        {"ignore_index": 0},
        ValueError,
        r"ignore_index is not supported for probability targets",
    ),
    # Value-dependent: raised eagerly, NaN under jit.
    InvalidCase(
        "class-too-large",
        "cross_entropy",
        (_f(3, 4), _i(0, 4, 1)),
        {},
        ValueError,
        r"Target 4 is out of bounds: class indices must lie in \[0, 4\) or equal ignore_index=-100",
        "nan",
    ),
    InvalidCase(
        "class-negative",
        "nll_loss",
        (_f(3, 4), _i(0, -1, 1)),
        {},
        ValueError,
        r"Target -1 is out of bounds",
        "nan",
    ),
    InvalidCase(
        "class-d1",
        "cross_entropy",
        (_f(2, 4, 3), np.array([[0, 1, 2], [3, 9, -100]])),
        {},
        ValueError,
        r"Target 9 is out of bounds",
        "nan",
    ),
    InvalidCase(
        "class-ls",
        "cross_entropy",
        (_f(3, 4), _i(0, 7, -100)),
        {"label_smoothing": 0.1, "reduction": "sum"},
        ValueError,
        r"Target 7 is out of bounds",
        "nan",
    ),
    InvalidCase(
        "class-ignore-other",
        "nll_loss",
        (_f(3, 4), _i(0, -100, 1)),
        {"ignore_index": 3},
        ValueError,
        r"Target -100 is out of bounds.*ignore_index=3",
        "nan",
    ),
    InvalidCase(
        "class-none",
        "cross_entropy",
        (_f(3, 4), _i(0, 5, 1)),
        {"reduction": "none"},
        ValueError,
        r"Target 5 is out of bounds",
        "nan",
    ),
    InvalidCase(
        "bce-input>1",
        "binary_cross_entropy",
        (np.array([0.5, 1.5]), _f(2)),
        {},
        ValueError,
        r"all elements of input should be between 0 and 1",
        "nan",
    ),
    InvalidCase(
        "bce-input<0",
        "binary_cross_entropy",
        (np.array([-0.5, 0.5]), _f(2)),
        {"reduction": "none"},
        ValueError,
        r"between 0 and 1",
        "nan",
    ),
    InvalidCase(
        "bce-input-nan",
        "binary_cross_entropy",
        (np.array([np.nan, 0.5]), _f(2)),
        {"reduction": "sum"},
        ValueError,
        r"between 0 and 1",
        "nan",
    ),
]
