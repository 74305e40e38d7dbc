"""The sealed test split as the browsing views show it: the test score beside the val score.

Selection reads the val split only, so a search of thousands of genomes can fit
val's particular tokens. The engine scores each confirmed best once on a test
split that took no part in selection; a test score well above the val mean says
the search overfitted val. "Well above" is measured in the run's own noise: one
test evaluation against a mean of n val evaluations differs by chance with std
noise * sqrt(1 + 1/n), so the gap is flagged when it exceeds z times that, the
same z the replacement rule uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from evolve.archive import Elite, EliteRule, RunArchive
from evolve.record import Evaluation


def test_records(archive: RunArchive, genomes: Iterable[str]) -> dict[str, Evaluation]:
    """genome -> its newest test-split evaluation, for those of `genomes` that have one.

    Reads only the shards that hold one of the genomes, each once.
    """
    wanted = set(genomes)
    found: dict[str, Evaluation] = {}
    for shard, members in sorted(archive.shards.index().items()):
        if wanted.isdisjoint(members.values()):
            continue
        for stored in archive.shards.read_shard(shard).values():
            if stored.get("genome") not in wanted:
                continue  # not parsed: most records of the shard are someone else's
            record = Evaluation.from_dict(stored)
            if record.sealed:
                found[record.genome] = record  # id order: a later one replaces an earlier
    return found


def gap_threshold(rule: EliteRule, n: int) -> float:
    """The val-to-test gap that chance explains at z sigma, for a val mean over n evaluations."""
    return rule.z * rule.noise_std * math.sqrt(1 + 1 / max(1, n))


def test_view(record: Evaluation | None, elite: Elite, rule: EliteRule) -> dict[str, Any] | None:
    """What `show`, `runs` and the report say about an elite's test score (None: not scored)."""
    if record is None:
        return None
    bpb = record.val_bpb  # of the test split here
    gap = None if bpb is None else bpb - elite.mean
    threshold = gap_threshold(rule, elite.n)
    return {
        "id": record.id,
        "status": record.status.value,
        "bpb": bpb,
        "gap": gap,
        "threshold": threshold,
        "overfit": gap is not None and gap > threshold,
        "reason": record.result.reason,
    }


def test_text(test: dict[str, Any] | None) -> str:
    """One cell of a table: `1.7400 (+0.0300 !)`, the ! marking a gap beyond chance."""
    if test is None:
        return "-"
    if test["bpb"] is None:
        return test["status"] or "?"
    return f"{test['bpb']:.4f} ({test['gap']:+.4f}{' !' if test['overfit'] else ''})"


def best_test_line(archive: RunArchive) -> str | None:
    """The line `evolve start` / `resume` end with: the confirmed best's val and test scores."""
    from evolve.archive.elites import best_elite

    best = best_elite(archive.elites(), archive.rule.confirm_n)
    if best is None or best.n < archive.rule.confirm_n:
        return None
    test = test_view(test_records(archive, [best.genome]).get(best.genome), best, archive.rule)
    val = f"{best.mean:.4f} ± {best.std:.4f} (n={best.n})"
    if test is None:
        return f"confirmed best: val {val}; test split not scored yet (resume scores it)"
    flag = f"; {OVERFIT_NOTE[2:]}" if test["overfit"] else ""
    return f"confirmed best: val {val}, test {test_text(test)}{flag}"


OVERFIT_NOTE = (
    "! test − val gap beyond z × noise × √(1 + 1/n): the search may have overfitted the val split"
)
