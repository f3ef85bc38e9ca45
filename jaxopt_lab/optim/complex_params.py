"""Complex params, stepped as torch steps them.

torch's Adam, AdamW, RMSprop and Adagrad (and Adamax, NAdam, RAdam, Adadelta, ASGD, Rprop) view a
complex param, its grad and its state as real (``torch.view_as_real``: a trailing axis of length
2 holding the real and imaginary parts) and run their real arithmetic on that view. Only what
comes before the view runs on the complex tensors: the weight decay (``grad.add(param,
alpha=wd)``, or AdamW's ``param.mul_(1 - lr * wd)``). SGD never takes the view: all of its
arithmetic is complex.

:func:`~jaxopt_lab.leafwise` hands a rule the real view of a complex leaf (and of its buffers,
which stay complex in the state, as torch's do) with ``ctx.complex`` set; the rule uses the
functions here for the ops torch runs on complex tensors. ATen's complex kernels round unlike its
real ones (measured on torch 2.13 CPU, vectorized and scalar paths, signed zeros included; see
``tests/test_complex.py``):

=====================================  ========================================================
torch op on complex tensors            result, per part (``s`` real, ``0`` a +0.0)
=====================================  ========================================================
``a.mul(s)``                           ``(ar*s - ai*0,  ar*0 + ai*s)``: times ``s + 0i``
``a.add(b, alpha=s)``                  ``a + b * (s + 0i)``: the product rounded, then added
                                       (no fused multiply-add, unlike the real ``add``)
``-a`` (``maximize``)                  a sign flip here; torch's vectorized loop computes
                                       ``0 - a``, so a zero part may come out +0.0 where this
                                       gives -0.0 (values are equal)
=====================================  ========================================================

The ``x * 0`` terms change no finite value, but they fix the sign of zero results and turn an
infinite part into NaN exactly where torch does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def view_as_real(x: jax.Array) -> jax.Array:
    """``torch.view_as_real``: ``(..., 2)`` real and imaginary parts (exact)."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def view_as_complex(v: jax.Array) -> jax.Array:
    """``torch.view_as_complex``, :func:`view_as_real`'s inverse (exact)."""
    return jax.lax.complex(v[..., 0], v[..., 1])


def _times_real(re: jax.Array, im: jax.Array, s: jax.Array, zero: jax.Array):
    """``(re + im i) * (s + 0i)`` as ATen computes it: ``(re*s - im*0, re*0 + im*s)``.

    ``zero`` is the opaque ``-0.0`` of the step (``ctx.zero``): ``-zero`` is a +0.0 the compiler
    cannot fold away.
    """
    plus_zero = -zero
    return re * s - im * plus_zero, re * plus_zero + im * s


def mul(a: jax.Array, s: jax.Array, zero: jax.Array) -> jax.Array:
    """``a.mul(s)`` for a complex ``a`` (given as its real view) and a real scalar ``s``."""
    re, im = _times_real(a[..., 0], a[..., 1], s, zero)
    return jnp.stack([re, im], axis=-1).astype(a.dtype)


def add(a: jax.Array, b: jax.Array, alpha: jax.Array, zero: jax.Array) -> jax.Array:
    """``a.add(b, alpha=alpha)`` for complex ``a``, ``b`` (real views), a real scalar ``alpha``."""
    re, im = _times_real(b[..., 0], b[..., 1], alpha, zero)
    return jnp.stack([a[..., 0] + re, a[..., 1] + im], axis=-1).astype(a.dtype)
