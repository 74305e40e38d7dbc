"""Live progress of a run: a rich panel on a terminal, plain lines in logs and pipes.

It reads only the engine's public `snapshot()` and `notices`."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from evolve.engine.snapshot import Snapshot


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def headline(s: Snapshot) -> str:
    best = s.best
    best_text = "-" if best is None else f"{best.mean:.4f} ± {best.std:.4f} (n={best.n})"
    planned = s.planned if s.planned is not None else "∞"
    line = (
        f"gen {s.gen} | evals {s.evals}/{planned} | best {best_text} | "
        f"coverage {s.coverage:.1%} | QD {s.qd_score:.2f} | "
        f"elapsed {_fmt_time(s.elapsed)} | ETA {_fmt_time(s.eta)}"
    )
    if s.llm:
        llm = s.llm
        line += f" | LLM {llm['calls']} calls, {llm['failures']} failed, ${llm['cost']:.3f}"
        if llm.get("down"):
            line += " (down)"
    return line


class Progress:
    """Call `update(engine)` often; it redraws at most a few times per second."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self._printed = 0
        self._noticed = 0  # notices already printed
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, engine: Any) -> None:
        notices = engine.notices
        while self._noticed < len(notices):  # never throttled: these lines must be seen
            self.say(notices[self._noticed])
            self._noticed += 1
        now = time.monotonic()
        if now - self._last < 0.25:
            return
        self._last = now
        s = engine.snapshot()
        if self.live is not None:
            self.live.update(self._panel(s))
            return
        done = s.evals
        if done != self._printed:  # one plain line per new evaluation
            self._printed = done
            event = s.events[-1] if s.events else ""
            print(f"{headline(s)}\n  {event}", file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        """A line of its own that stays: above the live panel, or on stderr."""
        if self.live is not None:
            self.live.console.print(Text(line, style="bold yellow"))
        else:
            print(line, file=sys.stderr, flush=True)

    def _panel(self, s: Snapshot) -> Group:
        slots = Table(show_header=True, header_style="bold", box=None)
        slots.add_column("slot")
        slots.add_column("running")
        for name in s.slot_names:
            slots.add_row(Text(name), Text(s.slots.get(name, "idle")))
        events = Text("\n".join(s.events) or "waiting for the first result…", style="dim")
        return Group(Text(headline(s), style="bold"), slots, events)
