"""The LLM goes down in the middle of a run and comes back: the run says both, on lines of
their own, and carries on with the built-in operators meanwhile; a failed proposal is retried
with another operator and is never a child.

A real engine run (tiny genomes, 1 s budget) against a local server that is stopped and
restarted on the same port while the run goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

from evolve.archive import RunArchive
from evolve.config import RunConfig
from evolve.engine import start
from evolve.executors.factory import build_executor
from evolve.testkit.llm_server import FakeLLM, tweaker
from evolve.testkit.tiny import tiny_genome
from tests.test_llm_run import corpus


class Outage:
    """Drives the server from the engine's progress hook: up, down after the first LLM child,
    up again once the run said so and evaluated two children made meanwhile (test-split and
    re-evaluations of the best do not count), stop once an LLM child made
    after that is evaluated."""

    def __init__(self, fake: FakeLLM) -> None:
        self.fake, self.phase = fake, "up"
        self.ids = (0, 0)  # eval ids handed out while the LLM was down: [first, last)

    def __call__(self, engine) -> None:
        notices = " ".join(engine.state.notices)
        stats = engine.llm.stats()
        if self.phase == "up" and stats["calls"] - stats["failures"] >= 1 and engine.state.done:
            self.fake.down()
            self.phase = "going down"
        elif self.phase == "going down" and "LLM down" in notices:
            self.phase = "down"
            self.ids = (engine.archive._next, 0)
        elif self.phase == "down" and self._children_since(engine, self.ids[0]) >= 2:
            self.ids = (self.ids[0], engine.archive._next)
            self.fake.up()
            self.phase = "coming back"
        elif self.phase == "coming back" and "LLM answers again" in notices:
            self.phase = "back"
        elif self.phase == "back":
            with engine.lock:
                records = list(engine.archive.evaluations())
            if any(r.operator == "llm_mutate" and int(r.id[1:]) >= self.ids[1] for r in records):
                self.phase = "done"  # an LLM child made after the outage is evaluated
                engine.stop(hard=False)

    @staticmethod
    def _children_since(engine, first: int) -> int:
        with engine.lock:
            records = list(engine.archive.evaluations())
        return sum(
            1 for r in records if int(r.id[1:]) >= first and r.operator not in ("reeval", "test")
        )


def test_the_llm_goes_down_mid_run_and_comes_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(tiny_genome())
    (tmp_path / "program.md").write_text("Lower val_bpb.\n")
    corpus(tmp_path / "corpus.txt")
    with FakeLLM(responder=tweaker(latency=0.2)) as fake:
        config = RunConfig(
            name="outage",
            archive_dir=str(tmp_path / "archive"),
            seed_genomes=["tiny.py"],
            pop=2,
            time_limit=150,
            budget=1.0,
            eval_tokens=2048,
            device="cpu",
            devices="cpu:2",
            data="corpus.txt",
            noise_repeats=1,
            confirm=1,
            operators={"llm_mutate": 3.0, "hyper_mutate": 1.0},
            llm={
                "models": ["fake"],
                "base_url": fake.url,
                "timeout": 3,
                "max_retries": 0,
                "concurrency": 1,
                "failures_before_cooldown": 1,
                "cooldown": 1.0,
            },
        ).validate()
        outage = Outage(fake)
        prepared = start(config, build_executor, outage)
        state = prepared.run_to_end()
    assert outage.phase == "done", (outage.phase, state.stop_reason, state.notices)
    down, back = state.notices
    assert down.startswith("LLM down: 1 failed calls in a row, the last APIConnectionError")
    assert "the built-in operators carry on; trying the LLM again every 1 s" in down
    assert back.startswith("LLM answers again after") and "LLM operators resume" in back
    first, last = outage.ids
    assert state.failed_proposals >= 1  # the LLM call that failed, retried with hyper_mutate
    stats = json.loads((tmp_path / "archive" / "outage" / "llm.json").read_text())
    assert stats["outages"] == 1 and stats["errors"].get("connection", 0) >= 1
    with RunArchive.open(tmp_path / "archive" / "outage") as archive:
        rows = list(archive.logbook())
        records = list(archive.evaluations())
    during = {
        r.operator
        for r in records
        if first <= int(r.id[1:]) < last and r.operator not in ("reeval", "test")
    }  # children made while it was down
    assert during == {"hyper_mutate"}  # built-in only
    llm_children = [int(r.id[1:]) for r in records if r.operator == "llm_mutate"]
    assert min(llm_children) < first and max(llm_children) >= last  # before and after it
    assert rows and all(row["children"] == 2 for row in rows)
    assert sum(row["failed_proposals"] for row in rows) <= state.failed_proposals
