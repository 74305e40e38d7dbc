"""Imports a module that does not exist."""
import evolve_no_such_module  # noqa: F401
