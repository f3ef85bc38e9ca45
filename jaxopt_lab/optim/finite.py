"""An opt-in check that names the first non-finite leaf of a pytree.

NaN and Inf propagate through every update exactly as in torch.optim (torch does not check
either): a NaN gradient makes the touched params NaN. Call :func:`check_finite` on grads (or
params) where you want to stop instead; it runs on concrete arrays, outside ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_finite(tree: Any, what: str = "tree") -> None:
    """Raise ``ValueError`` naming the first leaf of ``tree`` holding a NaN or an Inf.

    Args:
      tree: a pytree of concrete arrays (e.g. the grads before ``opt.update``).
      what: the name used in the message (``"grads"``, ``"params"``, ...).
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError("check_finite needs concrete arrays; call it outside jax.jit")
        values = np.asarray(leaf)
        if not np.issubdtype(values.dtype, np.floating) and values.dtype.kind != "V":
            continue
        bad = ~np.isfinite(values.astype(np.float64))
        if bad.any():
            where = jax.tree_util.keystr(path) or "<root>"
            first = tuple(int(i) for i in np.argwhere(bad)[0]) if values.ndim else ()
            raise ValueError(
                f"{what} leaf {where} has {int(bad.sum())} non-finite value(s) "
                f"(first at index {first}: {values.astype(np.float64)[first]})"
            )
