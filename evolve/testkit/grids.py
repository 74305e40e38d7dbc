"""A small grid for tests: cells a reader can work out by hand (runs use RunConfig's grid)."""

from __future__ import annotations

from evolve.archive.grid import Descriptor, Grid


def small_grid() -> Grid:
    """log10 parameters over [4, 9) × code lines over [50, 600), 10 bins each: 100 cells."""
    return Grid([Descriptor("model_size", 4.0, 9.0, 10), Descriptor("code_size", 50.0, 600.0, 10)])
