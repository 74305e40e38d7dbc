"""Where evaluations run: local slots (one per GPU, or CPU slots) or a Ray cluster.

The Ray executor lives in `evolve.executors.ray` and needs the optional extra
(`pip install 'evolve[ray]'`); nothing here imports Ray.
"""

from evolve.executors.base import EvalRequest, Executor
from evolve.executors.local import LocalExecutor
from evolve.executors.slots import Slot

__all__ = ["EvalRequest", "Executor", "LocalExecutor", "Slot"]
