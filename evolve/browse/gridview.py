"""The MAP-Elites grid as a 2-D picture: the first two descriptors, best elite over the rest.

Shared by the terminal map and the report's heatmap so both show the same cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evolve.archive import Descriptor, Elite, Grid


@dataclass
class GridView:
    """cells[(col, row)]: the best elite among those with that x bin (and y bin)."""

    x: Descriptor
    y: Descriptor | None
    hidden: list[str]
    cells: dict[tuple[int, int], Elite] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.y.bins if self.y is not None else 1

    @property
    def note(self) -> str:
        """Says what is not shown, for grids of more than two descriptors."""
        if not self.hidden:
            return ""
        shown = self.x.name + (f" × {self.y.name}" if self.y else "")
        return (
            f"the grid has {2 + len(self.hidden)} descriptors; showing {shown}, "
            f"each cell the best elite over {', '.join(self.hidden)}"
        )


def grid_view(grid: Grid, elites: list[Elite]) -> GridView:
    x, y = grid.descriptors[0], (grid.descriptors[1] if len(grid.descriptors) > 1 else None)
    view = GridView(x, y, [d.name for d in grid.descriptors[2:]])
    for elite in elites:
        key = (elite.cell[0], elite.cell[1] if y is not None else 0)
        held = view.cells.get(key)
        if held is None or elite.mean < held.mean:
            view.cells[key] = elite
    return view


def bin_labels(descriptor: Descriptor) -> list[str]:
    edges = descriptor.edges
    return [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(descriptor.bins)]


def view_json(grid: Grid, view: GridView, first: dict[str, str]) -> dict[str, Any]:
    """--json of `evolve map`: every descriptor's bins and the cells shown."""
    return {
        "descriptors": grid.to_list(),
        "shown": [view.x.name] + ([view.y.name] if view.y else []),
        "note": view.note,
        "cells": [
            {
                "x": k[0],
                "y": k[1],
                "cell": list(e.cell),
                "genome": e.genome,
                "id": first.get(e.genome, e.eval_ids[0]),
                "mean": e.mean,
                "std": e.std,
                "n": e.n,
            }
            for k, e in sorted(view.cells.items())
        ],
    }
