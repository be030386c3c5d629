"""Sparse weighted graphs."""
