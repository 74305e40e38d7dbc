"""`evolve map`: the grid in the terminal, each filled cell coloured by its val_bpb.

Green is the lowest val_bpb of the map, red the highest; the colours are only
a ranking aid, the number in the cell is the elite's mean.
"""

from __future__ import annotations

from rich.color import Color
from rich.style import Style
from rich.table import Table
from rich.text import Text

from evolve.browse.gridview import GridView, bin_labels


def shade(value: float, low: float, high: float) -> Color:
    """Green (low, good) through yellow to red (high, bad)."""
    t = 0.0 if high <= low else (value - low) / (high - low)
    red = int(255 * min(1.0, 2 * t))
    green = int(255 * min(1.0, 2 * (1 - t)))
    return Color.from_rgb(red * 0.8, green * 0.7, 40)


def map_table(view: GridView, total_cells: int, filled: int) -> Table:
    """A rich Table: rows = y bins (high at the top), columns = x bins."""
    means = [e.mean for e in view.cells.values()]
    low, high = (min(means), max(means)) if means else (0.0, 0.0)
    y_name = view.y.name if view.y is not None else ""
    table = Table(
        title=f"{y_name + ' (rows) × ' if y_name else ''}{view.x.name} (columns)",
        caption=_caption(low, high, filled, total_cells, view.note),
        show_lines=False,
        pad_edge=False,
    )
    table.add_column(
        f"{y_name} ↓ / {view.x.name} →" if y_name else view.x.name, justify="right", style="bold"
    )
    for label in bin_labels(view.x):
        table.add_column(label, justify="center")
    y_labels = bin_labels(view.y) if view.y is not None else [""]
    for row in reversed(range(view.rows)):
        cells = [y_labels[row]]
        for col in range(view.x.bins):
            elite = view.cells.get((col, row))
            if elite is None:
                cells.append(Text("·", style="dim"))
                continue
            style = Style(color="white", bgcolor=shade(elite.mean, low, high), bold=True)
            cells.append(Text(f"{elite.mean:.4f}", style=style))
        table.add_row(*cells)
    return table


def _caption(low: float, high: float, filled: int, total: int, note: str) -> str:
    parts = [f"{filled}/{total} cells filled ({filled / total:.0%})"]
    if filled:
        parts.append(f"val_bpb: green {low:.4f} (best) … red {high:.4f}")
    if note:
        parts.append(note)
    return "\n".join(parts)
