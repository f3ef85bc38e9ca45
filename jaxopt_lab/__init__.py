"""jaxopt_lab."""
