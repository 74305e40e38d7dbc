"""Where evaluations run: local slots (one per GPU, or CPU slots) or a Ray cluster."""

from evolve.executors.base import EvalRequest, Executor
from evolve.executors.local import LocalExecutor

__all__ = ["EvalRequest", "Executor", "LocalExecutor"]
