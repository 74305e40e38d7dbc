"""`evolve report`: the files it writes, and the page as a real headless browser renders it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evolve.testkit.grids import small_grid
from tests.test_browse import D, E, build_run, evolve

CHROMIUM = Path("/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    build_run(base / "archive")
    result = evolve(base / "archive", "report", "r1", "-o", str(base / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {base / 'out' / 'index.html'}"
    return base / "out"


def test_report_writes_the_page_pictures_sources_and_diffs(report: Path) -> None:
    for name in ("progress.png", "grid.png"):
        data = (report / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    assert (report / "genomes" / "e000007.py.txt").read_text() == D
    assert (report / "genomes" / "e000010.py.txt").read_text() == E
    diff = (report / "diffs" / "e000007.diff.txt").read_text()
    assert "+WEIGHT_DECAY = 0.05" in diff
    page = (report / "index.html").read_text()
    assert re.findall(r'<tr class="elite" data-id="(e\d+)"', page) == [
        "e000010",
        "e000007",
        "e000004",
    ]
    for link in re.findall(r'(?:href|src)="([^"]+)"', page):  # every link resolves next to the page
        assert (report / link).is_file(), link
    assert "http" not in page  # nothing to fetch: it opens from disk
    assert "1.7100 ± 0.0100 (n=3)" in page and "ok 9, crashed 1" in page


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120
    )


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


@needs_chromium
def test_report_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    url = (report / "index.html").resolve().as_uri()
    done = chromium("--virtual-time-budget=10000", "--dump-dom", url, profile=tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert 'data-images="loaded"' in dom  # set by the page once every image decoded
    assert re.findall(r'<tr class="elite" data-id="(e\d+)"', dom) == [
        "e000010",
        "e000007",
        "e000004",
    ]
    assert "less weight decay" in dom and 'id="stats"' in dom

    shot = tmp_path / "shot.png"
    done = chromium(
        f"--screenshot={shot}", "--window-size=1200,2000", url, profile=tmp_path / "profile"
    )
    assert done.returncode == 0 and shot.read_bytes().startswith(PNG)


@needs_chromium
def test_a_broken_picture_is_detected(report: Path, tmp_path: Path) -> None:
    """The images check itself: a page whose picture is missing must not report loaded."""
    copy = tmp_path / "copy"
    shutil.copytree(report, copy)
    (copy / "grid.png").unlink()
    done = chromium(
        "--virtual-time-budget=10000",
        "--dump-dom",
        (copy / "index.html").as_uri(),
        profile=tmp_path / "profile",
    )
    assert 'data-images="broken"' in done.stdout


def test_the_progress_line_follows_the_best_as_show_picks_it(tmp_path: Path) -> None:
    """A lucky single score leads only until a genome is confirmed; then the line follows the
    confirmed mean, as `evolve show` and the statistics do, and ends on the same number."""
    from evolve.archive import EliteRule, RunArchive
    from evolve.browse.queries import best, running_best
    from evolve.record import EvalResult

    steady, lucky = "import torch\nX = 1\n", "import torch\nX = 2\n"

    def ok(bpb: float, params: int) -> EvalResult:
        return EvalResult("ok", val_bpb=bpb, params=params, tokens=10**7, training_seconds=10.0)

    with RunArchive.create(
        tmp_path / "r1", {}, rule=EliteRule(confirm_n=2), grid=small_grid()
    ) as archive:
        archive.add_evaluation(ok(2.0, 10**5), steady, generation=0)
        archive.add_evaluation(ok(1.5, 10**8), lucky, generation=1)  # another cell, once
        archive.add_evaluation(ok(2.0, 10**5), steady, generation=1)  # steady is confirmed
        records = sorted(archive.evaluations(), key=lambda r: (r.seq, r.id))
        assert len({tuple(r.cell) for r in records}) == 2
        steps = running_best(archive, records)
        assert steps == [(1, 2.0), (2, 1.5), (3, 2.0)]
        assert steps[-1][1] == best(archive)[0].mean
