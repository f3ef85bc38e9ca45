"""Bridges to the two ecosystems: ``optax_bridge`` (``as_optax``/``from_optax``, both ways) and
``torch_state`` (optimizer state to and from ``torch.optim``'s ``state_dict``)."""
