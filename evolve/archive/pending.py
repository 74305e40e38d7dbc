"""Planned evaluations that have not finished yet, one small JSON file each.

The engine writes a task here (with its genome already stored) before it
starts the evaluation, and removes it once the result is in the evaluation
shards. After kill -9 the files that remain are exactly the work in flight;
`evolve resume` runs them again under the same ids.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evolve.archive.atomic import atomic_write_json, read_json


@dataclass
class Task:
    """One planned evaluation of one genome."""

    id: str  # the evaluation id its record will carry
    gen: int
    kind: str  # seed | child | reeval | import | test
    genome: str  # sha256 of the source, stored in the archive's genomes/
    seed: int  # evaluation seed, chosen by the engine
    parents: list[str] = field(default_factory=list)  # parent genome hashes
    operator: str = ""
    idea: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. LLM prompt and response
    attempts: list[dict[str, Any]] = field(default_factory=list)  # interrupted or lost tries
    split: str = "val"  # the held-out split that scores it; "test" only for kind "test"


class PendingTasks:
    """The `pending/` folder of a run."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "pending"

    def put(self, task: Task) -> None:
        self.folder.mkdir(exist_ok=True)
        atomic_write_json(self.folder / f"{task.id}.json", asdict(task))

    def done(self, task_id: str) -> None:
        try:
            os.unlink(self.folder / f"{task_id}.json")
        except FileNotFoundError:
            pass

    def all(self) -> list[Task]:
        if not self.folder.is_dir():
            return []
        tasks = []
        for path in sorted(self.folder.glob("*.json")):
            tasks.append(Task(**read_json(path)))
        return tasks
