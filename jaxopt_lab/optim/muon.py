"""Muon, as ``torch.optim.Muon``: momentum orthogonalized by a bfloat16 Newton-Schulz iteration."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse

from jaxopt_lab.optim import double as _double
from jaxopt_lab.optim import kernels as K
from jaxopt_lab.optim.base import Optimizer, Params, ScalarOrSchedule
from jaxopt_lab.optim.checks import (
    Bound,
    at_least,
    check_buffers,
    check_grads,
    check_hyperparams,
    check_params,
    check_state,
    require,
)
from jaxopt_lab.optim.kernels import math_dtype, opaque_zero
from jaxopt_lab.optim.leafwise import ScalarMath

# torch.optim._muon's constants (Keller Jordan's Muon post).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7
NS_STEPS = 5
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class MuonState(NamedTuple):
    """``count`` (int32) and ``momentum_buffer``, shaped like the (2-D) params."""

    count: jax.Array
    momentum_buffer: Any


def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: ScalarOrSchedule = 0.1,
    momentum: ScalarOrSchedule = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: ScalarOrSchedule = EPS,
    ns_steps: int = NS_STEPS,
    adjust_lr_fn: str | None = None,
) -> Optimizer:
    r"""Muon as torch computes it: 2-D params only, the update orthogonalized in bfloat16.

    With :math:`g_t` the gradient, :math:`\mu` the momentum, :math:`\lambda` the weight decay,
    :math:`(a, b, c)` the Newton-Schulz coefficients and :math:`A \times B` the param's shape:

    .. math::

        B_t &= \operatorname{lerp}(B_{t-1}, g_t, 1 - \mu) \\
        U_t &= \operatorname{lerp}(g_t, B_t, \mu) \text{ if nesterov, else } B_t \\
        X_0 &= \operatorname{bf16}(U_t)^{(\top \text{ if } A > B)} \,/\,
            \max(\lVert \operatorname{bf16}(U_t) \rVert_F, \epsilon) \\
        G_k &= X_k X_k^\top, \quad X_{k+1} = a X_k + (b G_k + c G_k^2) X_k
            \quad (k < \text{ns\_steps}) \\
        \theta_t &= \theta_{t-1} (1 - \gamma\lambda) - \gamma r\, X_{\text{ns\_steps}}

    where :math:`r = \sqrt{\max(1, A/B)}` (``adjust_lr_fn`` None or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``). The momentum and the param update run
    in the param's dtype with torch's roundings (``lerp``'s two branches, ``mul_`` then a fused
    ``add_(alpha=)``); :math:`1 - \gamma\lambda` and :math:`\gamma r` are computed in double and
    rounded once. The orthogonalization runs in bfloat16 exactly where torch's does: the input
    is rounded to bfloat16, its Frobenius norm (float32 sum of squares, rounded to bfloat16)
    clamped at :math:`\epsilon` (rounded to bfloat16) divides it in float32, and each of
    :math:`G_k`, :math:`bG_k + cG_k^2` and :math:`X_{k+1}` is a float32-accumulated product of
    bfloat16 matrices rounded once to bfloat16 (torch's bfloat16 ``mm``/``addmm`` on CPU).

    Args:
      lr: learning rate :math:`\gamma` (number or schedule; >= 0).
      weight_decay: :math:`\lambda`, decoupled (``param.mul_(1 - lr * weight_decay)``).
      momentum: :math:`\mu` (number or schedule; >= 0).
      nesterov: use :math:`\operatorname{lerp}(g_t, B_t, \mu)` instead of :math:`B_t`.
      ns_coefficients: :math:`(a, b, c)` of the quintic iteration.
      eps: :math:`\epsilon`, the floor of the norm the input is divided by.
      ns_steps: Newton-Schulz iterations (< 100; 0 gives the normalized bfloat16 input).
      adjust_lr_fn: None / ``"original"`` or ``"match_rms_adamw"``.

    Returns:
      An :class:`~jaxopt_lab.Optimizer` with :class:`MuonState`.

    Differences from torch.optim:
      * torch checks ``ns_steps`` and ``ns_coefficients`` at the first ``step()``; here at
        construction, with torch's messages. A non-2-D params leaf is rejected by ``init`` and
        ``update`` (torch: by the constructor), naming the leaf.
      * The bfloat16 matrix products accumulate in float32 in an order XLA chooses, and torch's
        (oneDNN) in another: an element can round to another bfloat16 value when its float32
        accumulation error straddles a rounding boundary (2e-5 to 8e-5 of the elements of each
        product, measured), and that propagates. Everything else --
        the momentum buffer, the bfloat16 rounding and normalization, the param update -- is
        torch's bit for bit; ``tests/test_muon.py`` measures and bounds the difference.
      * optax's ``contrib.muon`` is another algorithm in the details: its buffer is the same
        moving average but bias-corrected, and its Nesterov mix is
        :math:`\mu \hat B_t + (1 - \mu)\hat g_t` with separate bias corrections; it runs the
        iteration in the param dtype (not bfloat16), divides by
        :math:`\lVert X\rVert_F + 10^{-8}`, scales by :math:`\sqrt{\max(1, B/A)}` (fan-out over
        fan-in of an ``(in, out)`` kernel, where torch's weights are ``(out, in)``), decays
        nothing by default (torch: 0.1) and sends non-2-D leaves to AdamW. Measured in
        ``tests/test_muon.py`` (float64, 10 steps): square leaf, plain momentum, same decay --
        0.5% apart (the precision alone); with Nesterov 5%; a 37 x 11 leaf 39%, 11 x 37 63%.
    """
    check_hyperparams(
        at_least("lr", lr, 0, "Learning rate"),
        at_least("momentum", momentum, 0),
        at_least("weight_decay", weight_decay, 0, "weight decay"),
        Bound("eps", eps),
    )
    require(
        adjust_lr_fn in ADJUST_LR_FNS,
        f"Adjust learning rate function {adjust_lr_fn} is not supported",
    )
    require(
        isinstance(ns_steps, int) and not isinstance(ns_steps, bool),
        f"ns_steps must be an int, got {ns_steps!r}",
        TypeError,
    )
    require(ns_steps < 100, "Number of steps must be less than 100 for computational efficiency")
    require(
        isinstance(ns_coefficients, (tuple, list)) and len(ns_coefficients) == 3,
        "Coefficients must be a tuple of exactly 3 values",
    )
    coefficients = tuple(float(v) for v in ns_coefficients)

    def scalars(math_: ScalarMath) -> dict[str, Any]:
        mom = math_.resolve(momentum)
        lr_wd = math_.resolve(lr) * math_.resolve(weight_decay)
        if isinstance(lr_wd, jax.Array):  # float64 under jit: keep lr * wd out of an FMA
            lr_wd = lr_wd + opaque_zero(math_.count, lr_wd.dtype)
        return {
            "one_minus_momentum": 1 - mom,
            "momentum": mom,
            "decay": 1 - lr_wd,  # param.mul_(1 - lr * weight_decay), in Python doubles
            "eps": math_.resolve(eps),
        }

    def init(params: Params) -> MuonState:
        check_params(params)
        check_2d(params)
        return MuonState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(params: Params, grads: Any, state: MuonState) -> tuple[Params, MuonState]:
        check_params(params)
        check_2d(params)
        if any(isinstance(g, sparse.BCOO) for g in _leaves_or_bcoo(grads)):
            raise RuntimeError("Muon does not support sparse gradients")
        check_grads(params, grads)
        check_state(state, MuonState, "muon")
        check_buffers(params, state.momentum_buffer, "momentum_buffer")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = jax.tree_util.tree_leaves(grads)
        b_leaves = jax.tree_util.tree_leaves(state.momentum_buffer)
        count = jnp.asarray(state.count, jnp.int32)
        contexts: dict[Any, tuple[ScalarMath, dict[str, jax.Array], jax.Array]] = {}
        new_p, new_b = [], []
        for p, g, buf in zip(leaves, g_leaves, b_leaves, strict=True):
            md = math_dtype(p.dtype)
            if md not in contexts:  # one set of step scalars per math dtype, as in leafwise
                math_ = ScalarMath(count, wide=md == jnp.float64)
                rounded = {k: _double.round_to(v, md) for k, v in scalars(math_).items()}
                contexts[md] = (math_, rounded, opaque_zero(count, md))
            math_, s, zero = contexts[md]
            # adjusted_lr = lr * adjusted_ratio (a Python double in torch), per param shape
            ratio = adjusted_ratio(p.shape, adjust_lr_fn)
            neg_lr = _double.round_to(-(math_.resolve(lr) * ratio), md)
            buf = K.lerp(buf, g, s["one_minus_momentum"])  # buf.lerp_(grad, 1 - momentum)
            u = K.lerp(g, buf, s["momentum"]) if nesterov else buf  # grad.lerp(buf, momentum)
            o = newton_schulz(u, coefficients, ns_steps, s["eps"], zero)
            p = K.mul(p, s["decay"], zero)  # param.mul_(1 - lr * weight_decay)
            p = K.add(p, o.astype(md), neg_lr)  # param.add_(update, alpha=-adjusted_lr)
            new_p.append(p)
            new_b.append(buf)
        unflatten = jax.tree_util.tree_unflatten
        return unflatten(treedef, new_p), MuonState(count + 1, unflatten(treedef, new_b))

    return Optimizer(init, jax.jit(update))


def _leaves_or_bcoo(tree: Any) -> list[Any]:
    return jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, sparse.BCOO))


def check_2d(params: Any) -> None:
    """torch's Muon takes 2-D params only."""
    for path, p in jax.tree_util.tree_leaves_with_path(params):
        if p.ndim != 2:
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{tuple(p.shape)} (params leaf {jax.tree_util.keystr(path) or '<root>'})"
            )


def adjusted_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """torch's ``_adjust_lr`` factor for a param of this shape, in Python doubles."""
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, a / b))
    return 0.2 * math.sqrt(max(a, b))


def _mm(x: jax.Array, y: jax.Array) -> jax.Array:
    """A bfloat16 matrix product accumulated in float32 (torch's bfloat16 CPU gemm)."""
    return jnp.matmul(x, y, preferred_element_type=jnp.float32, precision="highest")


def normalize(x: jax.Array, eps: jax.Array, zero: jax.Array) -> jax.Array:
    """``ortho_grad.div_(ortho_grad.norm().clamp(min=eps))`` on ``x.bfloat16()``.

    The input goes to bfloat16 through float32 (c10's double -> BFloat16 conversion does); the
    norm is a float32 sum of squares, square-rooted and rounded to bfloat16, clamped at ``eps``
    rounded to bfloat16; the division runs in float32 (a true division, see
    :func:`jaxopt_lab.optim.kernels.div`) and rounds to bfloat16.
    """
    f32, bf16 = jnp.float32, jnp.bfloat16
    ortho = x.astype(f32).astype(bf16)
    norm = jnp.sqrt(jnp.sum(jnp.square(ortho.astype(f32)))).astype(bf16)
    norm = jnp.maximum(norm, eps.astype(f32).astype(bf16))
    return K.div(ortho, norm.astype(f32), zero.astype(f32))


def gram(x: jax.Array) -> jax.Array:
    """``ortho_grad @ ortho_grad.T`` in bfloat16."""
    return _mm(x, x.T).astype(jnp.bfloat16)


def gram_update(g: jax.Array, b: float, c: float) -> jax.Array:
    """``torch.addmm(gram, gram, gram, beta=b, alpha=c)`` in bfloat16 (float32 inside)."""
    return (jnp.float32(c) * _mm(g, g) + jnp.float32(b) * g.astype(jnp.float32)).astype(g.dtype)


def ns_next(x: jax.Array, update: jax.Array, a: float) -> jax.Array:
    """``torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)`` in bfloat16."""
    return (_mm(update, x) + jnp.float32(a) * x.astype(jnp.float32)).astype(x.dtype)


def newton_schulz(
    x: jax.Array,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: jax.Array,
    zero: jax.Array,
) -> jax.Array:
    """torch's ``_zeropower_via_newtonschulz``, its bfloat16 roundings in place (bfloat16 out).

    ``x`` is a 2-D array of any float dtype, ``eps`` a scalar in its math dtype and ``zero`` an
    opaque ``-0.0`` (:func:`jaxopt_lab.optim.kernels.opaque_zero`). A tall ``x`` is orthogonalized
    through its transpose, as torch does. Each product is accumulated in float32 and rounded
    once to bfloat16 (with ``addmm``'s ``alpha``/``beta`` applied in float32), where torch's
    bfloat16 ``mm``/``addmm`` round.
    """
    a, b, c = coefficients
    tall = x.shape[0] > x.shape[1]
    ortho = normalize(x.T if tall else x, eps, zero)

    def iteration(_: int, x: jax.Array) -> jax.Array:
        return ns_next(x, gram_update(gram(x), b, c), a)

    ortho = jax.lax.fori_loop(0, steps, iteration, ortho) if steps > 0 else ortho
    return ortho.T if tall else ortho
