"""evolve: evolutionary population search over training scripts."""

__version__ = "0.1.0"
