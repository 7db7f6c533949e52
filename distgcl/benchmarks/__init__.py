"""Benchmarks that ship with the package (``distgcl bench ...``): :mod:`distgcl.benchmarks.scale`."""
