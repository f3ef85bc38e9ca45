"""The declarative tables every optimizer test iterates (torch's ``common_optimizers.py`` style).

``CASES``: valid configurations, each naming the jaxopt_lab factory, the torch class and the
keyword arguments both take. ``INVALID``: bad inputs with the exception and message expected.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

import jaxopt_lab as jol

# torch's MultiStepLR(milestones=[60, 140], gamma=0.1) values, computed as torch does
# (recursively, in Python doubles), indexed by the number of optimizer steps taken.
_LR0 = 0.05
_MULTISTEP = [_LR0, _LR0 * 0.1, _LR0 * 0.1 * 0.1]


def multistep_schedule(count: Any) -> Any:
    """A traced lr schedule equal to torch's MultiStepLR stepped once per optimizer step."""
    index = (count >= 60).astype(jnp.int32) + (count >= 140).astype(jnp.int32)
    return jnp.asarray(_MULTISTEP, jnp.float64)[index]


def torch_multistep(optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[60, 140], gamma=0.1)


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer configuration, shared by jaxopt_lab and torch."""

    algo: str  # "sgd" | "adam" | "adamw" | "rmsprop" | "adagrad"
    kwargs: dict[str, Any]
    desc: str = ""
    schedule: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None = None  # (jax, torch)

    @property
    def id(self) -> str:
        return f"{self.algo}-{self.desc}" if self.desc else self.algo

    @property
    def uses_sqrt(self) -> bool:
        return self.algo != "sgd"

    @property
    def has_kernel(self) -> bool:
        """Whether float32 leaves can take a one-pass CPU kernel (``jaxopt_lab._native``)."""
        return self.algo in ("adam", "adamw") or (
            self.algo == "sgd"
            and (callable(self.kwargs.get("momentum")) or "momentum" in self.kwargs)
        )

    def make(self) -> jol.Optimizer:
        kwargs = dict(self.kwargs)
        if self.schedule is not None:
            kwargs["lr"] = self.schedule[0]
        return getattr(jol, self.algo)(**kwargs)

    def make_torch(self, params: list, foreach: bool) -> tuple[Any, Any]:
        import torch

        cls = {
            "sgd": torch.optim.SGD,
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "rmsprop": torch.optim.RMSprop,
            "adagrad": torch.optim.Adagrad,
        }[self.algo]
        kwargs = dict(self.kwargs)
        if self.schedule is not None:
            kwargs["lr"] = _LR0
        opt = cls(params, foreach=foreach, **kwargs)
        sched = self.schedule[1](opt) if self.schedule is not None else None
        return opt, sched


CASES: list[Case] = [
    Case("sgd", {"lr": 0.01}),
    Case("sgd", {"lr": 0.01, "momentum": 0.9}, "momentum"),
    Case("sgd", {"lr": 0.01, "momentum": 0.9, "dampening": 0.5}, "dampening"),
    Case("sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": True}, "nesterov"),
    Case("sgd", {"lr": 0.01, "weight_decay": 0.1}, "wd"),
    Case(
        "sgd", {"lr": 0.01, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.05}, "mom-damp-wd"
    ),
    Case(
        "sgd",
        {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "maximize": True},
        "nesterov-wd-maximize",
    ),
    Case("sgd", {"momentum": 0.9}, "multistep-lr", (multistep_schedule, torch_multistep)),
    Case("adam", {"lr": 1e-3}),
    Case("adam", {"lr": 1e-3, "weight_decay": 0.1}, "wd"),
    Case("adam", {"lr": 1e-3, "amsgrad": True}, "amsgrad"),
    Case("adam", {"lr": 1e-3, "amsgrad": True, "weight_decay": 0.1}, "amsgrad-wd"),
    Case("adam", {"lr": 1e-3, "maximize": True}, "maximize"),
    Case("adam", {"lr": 3e-3, "betas": (0.5, 0.9), "eps": 1e-6}, "betas-eps"),
    Case("adam", {"lr": 1e-3, "weight_decay": 0.1, "decoupled_weight_decay": True}, "decoupled"),
    Case("adam", {}, "multistep-lr", (multistep_schedule, torch_multistep)),
    Case("adamw", {"lr": 1e-3}),
    Case("adamw", {"lr": 1e-3, "amsgrad": True}, "amsgrad"),
    Case("adamw", {"lr": 1e-3, "weight_decay": 0.3, "maximize": True}, "wd-maximize"),
    Case("rmsprop", {"lr": 1e-3}),
    Case("rmsprop", {"lr": 1e-3, "centered": True}, "centered"),
    Case("rmsprop", {"lr": 1e-3, "momentum": 0.9}, "momentum"),
    Case(
        "rmsprop",
        {"lr": 1e-3, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
        "centered-momentum-wd",
    ),
    Case(
        "rmsprop", {"lr": 1e-2, "alpha": 0.9, "eps": 1e-4, "maximize": True}, "alpha-eps-maximize"
    ),
    Case("adagrad", {"lr": 1e-2}),
    Case("adagrad", {"lr": 0.1, "lr_decay": 0.01}, "lr-decay"),
    Case("adagrad", {"lr": 0.1, "weight_decay": 0.1}, "wd"),
    Case(
        "adagrad",
        {"lr": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-5, "maximize": True},
        "init-acc-eps-maximize",
    ),
]

ALGOS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]

# Every state field of ours has torch's per-parameter state key as its name.
STATE_FIELDS = {
    "sgd": ["momentum_buffer"],
    "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "adamw": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
    "adagrad": ["sum"],
}


def _params() -> dict:
    return {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}


def _apply(make: Callable[[], jol.Optimizer]) -> Callable[[], Any]:
    """Build the optimizer, init on float params and take one step (errors may come anywhere)."""

    def run() -> Any:
        opt = make()
        params = _params()
        state = opt.init(params)
        return opt.update(params, params, state)

    return run


def _update_with(params: Any, grads: Any, state_from: Callable[[], Any] | None = None) -> Any:
    def run() -> Any:
        opt = jol.adam()
        ok = _params()
        state = state_from() if state_from is not None else opt.init(ok)
        return opt.update(params, grads, state)

    return run


def _with_env(name: str, value: str, run: Callable[[], Any]) -> Any:
    """``run()`` with the environment variable ``name`` set to ``value`` (then restored)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return run()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


# (id, callable that must raise, exception type, message regex)
INVALID: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("sgd-lr", lambda: jol.sgd(lr=-1.0), ValueError, r"^Invalid learning rate: -1\.0$"),
    (
        "sgd-momentum",
        lambda: jol.sgd(momentum=-0.5),
        ValueError,
        r"^Invalid momentum value: -0\.5$",
    ),
    ("sgd-wd", lambda: jol.sgd(weight_decay=-1e-3), ValueError, r"^Invalid weight_decay value"),
    (
        "sgd-nesterov-no-momentum",
        lambda: jol.sgd(nesterov=True),
        ValueError,
        r"^Nesterov momentum requires a momentum and zero dampening$",
    ),
    (
        "sgd-nesterov-dampening",
        lambda: jol.sgd(momentum=0.9, dampening=0.1, nesterov=True),
        ValueError,
        r"^Nesterov momentum requires a momentum and zero dampening$",
    ),
    ("sgd-lr-nan", lambda: jol.sgd(lr=float("nan")), ValueError, r"^Invalid learning rate: nan$"),
    ("sgd-lr-str", lambda: jol.sgd(lr="0.1"), TypeError, r"lr must be a number or a schedule"),
    ("adam-lr", lambda: jol.adam(lr=-1.0), ValueError, r"^Invalid learning rate: -1\.0$"),
    ("adam-eps", lambda: jol.adam(eps=-1e-8), ValueError, r"^Invalid epsilon value: -1e-08$"),
    ("adam-beta1", lambda: jol.adam(betas=(1.0, 0.999)), ValueError, r"index 0: 1\.0$"),
    ("adam-beta2", lambda: jol.adam(betas=(0.9, -0.1)), ValueError, r"index 1: -0\.1$"),
    ("adam-betas-shape", lambda: jol.adam(betas=(0.9,)), TypeError, r"betas must be a pair"),
    ("adam-wd", lambda: jol.adam(weight_decay=-0.1), ValueError, r"^Invalid weight_decay value"),
    ("adam-fused-type", lambda: jol.adam(fused="yes"), TypeError, r"fused must be None or a bool"),
    ("adamw-lr", lambda: jol.adamw(lr=-2.0), ValueError, r"^Invalid learning rate: -2\.0$"),
    ("adamw-beta1", lambda: jol.adamw(betas=(-0.1, 0.9)), ValueError, r"index 0: -0\.1$"),
    ("rmsprop-lr", lambda: jol.rmsprop(lr=-1.0), ValueError, r"^Invalid learning rate: -1\.0$"),
    ("rmsprop-alpha", lambda: jol.rmsprop(alpha=-0.1), ValueError, r"^Invalid alpha value: -0\.1$"),
    ("rmsprop-eps", lambda: jol.rmsprop(eps=-1.0), ValueError, r"^Invalid epsilon value: -1\.0$"),
    ("rmsprop-momentum", lambda: jol.rmsprop(momentum=-1.0), ValueError, r"^Invalid momentum"),
    ("rmsprop-wd", lambda: jol.rmsprop(weight_decay=-1.0), ValueError, r"^Invalid weight_decay"),
    ("adagrad-lr", lambda: jol.adagrad(lr=-1.0), ValueError, r"^Invalid learning rate: -1\.0$"),
    ("adagrad-lr-decay", lambda: jol.adagrad(lr_decay=-1.0), ValueError, r"^Invalid lr_decay"),
    ("adagrad-wd", lambda: jol.adagrad(weight_decay=-1.0), ValueError, r"^Invalid weight_decay"),
    (
        "adagrad-init-acc",
        lambda: jol.adagrad(initial_accumulator_value=-1.0),
        ValueError,
        r"^Invalid initial_accumulator_value value: -1\.0$",
    ),
    ("adagrad-eps", lambda: jol.adagrad(eps=-1.0), ValueError, r"^Invalid epsilon value: -1\.0$"),
    (
        "int-params",
        lambda: jol.sgd().init({"w": jnp.ones(3, jnp.int32)}),
        TypeError,
        r"params leaf \['w'\] has dtype int32; only floating-point params",
    ),
    ("empty-params", lambda: jol.sgd().init({}), ValueError, r"empty parameter list"),
    (
        "grads-structure",
        _update_with(_params(), {"w": jnp.ones((3, 2), jnp.float32)}),
        ValueError,
        r"grads tree structure .* does not match params structure",
    ),
    (
        "grads-shape",
        _update_with(
            _params(), {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
        ),
        ValueError,
        r"grads leaf \['w'\] has shape \(2, 3\), params leaf has \(3, 2\)",
    ),
    (
        "grads-dtype",
        _update_with(
            _params(), {"w": jnp.ones((3, 2), jnp.float64), "b": jnp.zeros(2, jnp.float32)}
        ),
        TypeError,
        r"grads leaf \['w'\] has dtype float64, params leaf has float32",
    ),
    (
        "state-from-other-optimizer",
        _update_with(_params(), _params(), lambda: jol.sgd(momentum=0.9).init(_params())),
        TypeError,
        r"adam\.update got a SGDState state; it needs the AdamState",
    ),
    (
        "state-for-other-params",
        _update_with(
            {"w": jnp.ones((4,), jnp.float32), "b": jnp.zeros(2, jnp.float32)},
            {"w": jnp.ones((4,), jnp.float32), "b": jnp.zeros(2, jnp.float32)},
        ),
        ValueError,
        r"optimizer state field 'exp_avg' does not match params: grads leaf \['w'\] has shape",
    ),
    (
        "groups-unknown-label",
        _apply(lambda: jol.param_groups({"w": "base", "b": "bias"}, {"base": jol.sgd()})),
        ValueError,
        r"params leaf \['b'\] has label 'bias', but the groups are \['base'\]",
    ),
    (
        "groups-empty-group",
        _apply(
            lambda: jol.param_groups(
                {"w": "base", "b": "base"}, {"base": jol.sgd(), "head": jol.adam()}
            )
        ),
        ValueError,
        r"param group 'head' has no params",
    ),
    (
        "groups-labels-structure",
        _apply(lambda: jol.param_groups({"w": "base"}, {"base": jol.sgd()})),
        ValueError,
        r"param_groups labels do not match the params tree",
    ),
    (
        "nan-grads",
        lambda: jol.check_finite({"w": jnp.array([1.0, jnp.nan, jnp.inf])}, "grads"),
        ValueError,
        r"grads leaf \['w'\] has 2 non-finite value\(s\) \(first at index \(1,\): nan\)",
    ),
    (
        "inf-params-bf16",
        lambda: jol.check_finite(
            [jnp.zeros(2, jnp.bfloat16), jnp.full((2, 2), jnp.inf, jnp.bfloat16)]
        ),
        ValueError,
        r"tree leaf \[1\] has 4 non-finite value\(s\) \(first at index \(0, 0\): inf\)",
    ),
    (
        "as-optax-without-params",
        lambda: jol.as_optax(jol.sgd()).update(_params(), jol.sgd().init(_params())),
        ValueError,
        r"needs params",
    ),
    (
        "native-mode-env",
        lambda: _with_env("JAXOPT_LAB_NATIVE", "fast", _apply(jol.adam)),
        ValueError,
        r"^JAXOPT_LAB_NATIVE must be one of \('auto', 'off', 'always'\), got 'fast'$",
    ),
]

DTYPES = {"float32": np.float32, "float64": np.float64}

# float32 foreach path: max |ours - torch| / max|torch| per leaf over 200 steps may not exceed
# this. SGD uses no sqrt and is bit for bit (0.0). The others differ only through torch's MKL
# sqrt (1 ULP = 6e-8 relative on ~17% of elements per step), which the foreach path uses and the
# test cannot patch. Measured with `python experiments/parity_report.py` (max over all cases,
# 200 steps): adam 8.09e-08, adamw 8.10e-08, rmsprop 8.97e-07, adagrad 1.32e-07; each bound is
# about 5x its measurement.
FLOAT32_FOREACH_RTOL = {"sgd": 0.0, "adam": 4e-7, "adamw": 4e-7, "rmsprop": 5e-6, "adagrad": 7e-7}
