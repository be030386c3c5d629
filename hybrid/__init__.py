"""Learned closures inside the `solvers` systems."""
