"""Every row of ``cases.INVALID`` raises its exception with its (torch's) message."""

import re

import pytest
from cases import INVALID


@pytest.mark.parametrize(
    ("make", "error", "message"), [r[1:] for r in INVALID], ids=[r[0] for r in INVALID]
)
def test_invalid_input(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert re.search(message, str(info.value)), str(info.value)
    assert type(info.value) is error  # not a subclass such as an XLA error


def test_check_finite_accepts_finite_trees():
    import jax.numpy as jnp

    import jaxopt_lab as jol

    assert jol.check_finite({"w": jnp.ones((2, 3)), "step": jnp.int32(3)}, "grads") is None
