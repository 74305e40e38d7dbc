"""The loop: select parents, vary, evaluate, insert. See loop.py."""

from evolve.engine.loop import Engine, RunState
from evolve.engine.setup import Prepared, resume, start

__all__ = ["Engine", "Prepared", "RunState", "resume", "start"]
