"""What a run directory must contain, and listing the runs of an archive directory.

Every check here turns a missing or unreadable file into a UserError that names
the file; nothing here deletes anything except the writer's own stale temp files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.archive.atomic import corrupt, read_json
from evolve.durable import TMP_MARK
from evolve.errors import UserError

FORMAT = 1
SHARD_SIZE = 500  # records per evaluation shard: an insert rewrites at most this many
DIRS = ("evals", "genomes", "texts", "logs")


def check_run_dir(path: Path) -> dict[str, Any]:
    """The run's config, or a UserError saying why `path` is not a readable run."""
    if not path.exists():
        raise UserError(
            f"no run at {path}", fix="check the path; list the runs of the archive directory"
        )
    if not path.is_dir():
        raise UserError(
            f"{path} is not a run directory",
            "it is a file",
            fix="give the directory <archive>/<run-name>",
        )
    try:
        config = read_json(path / "config.json")
    except FileNotFoundError:
        raise UserError(
            f"{path} is not an evolve run",
            "it has no config.json (not a run directory, or its creation was interrupted)",
            "give the directory <archive>/<run-name> of an existing run",
        ) from None
    if not isinstance(config, dict):
        raise corrupt(path / "config.json", "it does not hold a JSON object")
    return config


def load_meta(path: Path) -> dict[str, Any]:
    file = path / "archive.json"
    try:
        meta = read_json(file)
    except FileNotFoundError:
        raise corrupt(file, "the file is missing") from None
    if not isinstance(meta, dict) or "grid" not in meta or "shard_size" not in meta:
        raise corrupt(file, "it lacks the grid or shard size")
    if meta.get("format", 0) > FORMAT:
        raise UserError(
            f"the run {path} was written by a newer evolve (format {meta['format']})",
            fix="upgrade evolve to read it",
        )
    return meta


def make_dirs(path: Path) -> None:
    for name in DIRS:
        (path / name).mkdir(exist_ok=True)


def remove_stale_temp_files(path: Path) -> None:
    """Temp files of a writer killed mid-write: never data, since os.replace never happened."""
    for folder in (path, *(path / d for d in DIRS if d != "logs")):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(".") and TMP_MARK in name:
                (folder / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class RunInfo:
    """A run found in an archive directory; config is None and error says why when unreadable."""

    name: str
    path: Path
    config: dict[str, Any] | None
    error: str | None = None


def list_runs(archive_dir: str | Path) -> list[RunInfo]:
    """The runs under `archive_dir`, by name. A missing archive directory has no runs."""
    archive_dir = Path(archive_dir)
    if archive_dir.exists() and not archive_dir.is_dir():
        raise UserError(f"{archive_dir} is not a directory", fix="give the archive directory")
    if not archive_dir.exists():
        return []
    runs = []
    for entry in sorted(archive_dir.iterdir()):
        if not entry.is_dir() or not (entry / "config.json").exists():
            continue
        try:
            runs.append(RunInfo(entry.name, entry, check_run_dir(entry)))
        except UserError as e:
            runs.append(RunInfo(entry.name, entry, None, e.message()))
    return runs
