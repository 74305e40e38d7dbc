"""Runs one genome in a sandbox and returns its result record."""

from evolve.runner.run import RunSettings, run_genome

__all__ = ["RunSettings", "run_genome"]
