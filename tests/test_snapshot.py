"""`Engine.snapshot()`: the public picture the progress display reads, checked against the
archive the same run wrote (real engine, real archive, surrogate evaluations)."""

from __future__ import annotations

from pathlib import Path

from evolve.archive import RunArchive
from evolve.archive.elites import best_elite
from evolve.cli.progress import headline
from evolve.config import RunConfig
from evolve.engine import start
from evolve.executors.surrogate import SurrogateExecutor
from evolve.runner import RunSettings
from tests.test_search import SEED, known_surface


def test_snapshot_agrees_with_the_archive(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seed.py").write_text(SEED)
    (tmp_path / "data.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4000)
    config = RunConfig.from_dict(
        {
            "name": "r",
            "archive_dir": str(tmp_path),
            "pop": 4,
            "seed_genomes": [str(tmp_path / "seed.py")],
            "generations": 5,
            "data": str(tmp_path / "data.txt"),
            "budget": 2.0,
        }
    ).validate()
    seen = []

    def build(cfg, dataset):
        return SurrogateExecutor(known_surface(p_fail=0.2), 2), RunSettings(
            budget=2.0, device="cpu"
        )

    prepared = start(config, build, on_update=lambda engine: seen.append(engine.snapshot()))
    try:
        prepared.engine.run()
        final = prepared.engine.snapshot()
    finally:
        prepared.executor.shutdown()
        prepared.archive.close()

    assert len(seen) > 1 and [s.evals for s in seen] == sorted(s.evals for s in seen)
    with RunArchive.open(tmp_path / "r") as archive:
        records = list(archive.evaluations())
        best = best_elite(archive.elites(), archive.rule.confirm_n)
    assert final.evals == final.done_here == len(records)
    assert final.planned == 5 * 4 and final.run == "r"
    assert sum(final.statuses.values()) == len(records)
    assert final.statuses.get("crashed", 0) == sum(r.status == "crashed" for r in records) > 0
    assert best is not None and final.best is not None
    assert (final.best.mean, final.best.n) == (best.mean, best.n)
    assert f"n={best.n}" in headline(final) and final.eta is not None
