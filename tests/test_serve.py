"""`evolve serve`: the real server on 127.0.0.1, read over HTTP and in headless Chromium.

The browser tests drive Debian's Chromium (/usr/bin/chromium, which .ci/run installs)
through Playwright's Python package; they skip with a reason when either is absent.
One run carries hostile text (script tags, attribute injections, javascript: links)
in its source, idea, operator, log, failure reason and LLM exchange: the test
detects execution positively (a global the payload sets, requests it makes, CSP
reports) rather than only reading the HTML.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve.archive import RunArchive
from evolve.archive.pending import PendingTasks, Task
from evolve.browse.server import is_loopback
from evolve.record import EvalResult
from evolve.testkit.grids import small_grid
from evolve.testkit.tiny import set_constants
from tests.test_browse import ROOT, S0, D, E, build_run, ok, stored_config

CHROMIUM = Path("/usr/bin/chromium")
MARK = "pwned"
PAYLOAD = (
    f'<script>window.__{MARK}=1;fetch("/{MARK}-script")</script>'
    f'<img src="/{MARK}-img" onerror="window.__{MARK}=2">'
    f'<a id="jslink" href="javascript:window.__{MARK}=3">x</a>'
    f"\" onmouseover=\"window.__{MARK}=4\" x='' onfocus='window.__{MARK}=5' autofocus "
    f'<svg onload="window.__{MARK}=6"></svg></pre></textarea><!--'
)
HOSTILE = S0 + f"\n# {PAYLOAD}\nNOTE = '''{PAYLOAD}'''\n"


def build_hostile(archive_dir: Path) -> Path:
    """A run whose child genome carries PAYLOAD everywhere a genome or an LLM writes text."""
    path = archive_dir / "hostile"
    with RunArchive.create(path, stored_config("hostile"), grid=small_grid()) as archive:
        seed = archive.add_evaluation(
            ok(2.0, 10**5), S0, generation=0, operator="seed", idea="seed genome"
        )
        child = archive.add_evaluation(
            ok(1.9, 10**5),
            HOSTILE,
            generation=1,
            operator=f"llm_mutate{PAYLOAD}",
            parents=[seed.genome],
            idea=f"idea {PAYLOAD}",
            prompt=f"prompt {PAYLOAD}",
            response=f"reply {PAYLOAD}",
        )
        archive.add_evaluation(
            EvalResult("crashed", reason=f"boom {PAYLOAD}"),
            HOSTILE,
            generation=1,
            operator="reeval",
            parents=[child.genome],
        )
        for record in (seed, child):
            archive.log_path(record.id).write_text(
                f"{PAYLOAD}\nstep 1 | loss 5.0\nstep 2 | loss 4.0 {PAYLOAD}\nstep 3 | loss 3.5\n"
            )
        in_flight = archive.new_eval_id()  # an LLM child still training: no record yet
        PendingTasks(path).put(
            Task(
                id=in_flight,
                gen=2,
                kind="child",
                genome=child.genome,
                seed=1,
                parents=[seed.genome],
                operator="llm_mutate",
                idea=f"pending {PAYLOAD}",
                meta={"prompt": f"prompt {PAYLOAD}", "response": f"reply {PAYLOAD}"},
            )
        )
        archive.log_path(in_flight).write_text(f"step 1 | loss 6.0\n{PAYLOAD}\n")
    return path


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("serve") / "archive"
    build_run(base)
    shutil.copytree(base / "r1", base / "live")
    build_hostile(base)
    RunArchive.create(base / "empty", stored_config("empty"), grid=small_grid()).close()
    return base


def start_server(archive_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evolve.cli",
            "serve",
            "--archive-dir",
            str(archive_dir),
            "--port",
            "0",
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    found = re.search(r"http://\S+/", line)
    if not found:
        server.kill()
        raise AssertionError(f"no URL in {line!r}: {server.communicate()[1][-2000:]}")
    return server, found.group(0)


@pytest.fixture(scope="module")
def base_url(archive_dir: Path) -> Iterator[str]:
    server, url = start_server(archive_dir, "--poll", "0.3")
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(url: str, host: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


# --- over HTTP --------------------------------------------------------------------------------


def test_pages_show_runs_grid_elites_genome_lineage_and_diff(base_url: str) -> None:
    status, page, headers = get(base_url)
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    assert 'href="/runs/r1"' in page and "1.7100 ± 0.0100 (n=3)" in page and "finished" in page

    status, page, _ = get(base_url + "runs/r1")
    assert status == 200
    assert re.findall(r'<tr class="elite" data-id="(e\d+)"', page) == [
        "e000010",
        "e000007",
        "e000004",
    ]
    assert sorted(re.findall(r'<a class="cell" href="/runs/r1/g/(e\d+)"', page)) == [
        "e000004",
        "e000007",
        "e000010",
    ]
    assert "ok 9, crashed 1" in page and "3 of 100 cells" in page and "0.001" in page
    _, by_params, _ = get(base_url + "runs/r1?sort=params&order=desc")
    assert re.findall(r'<tr class="elite" data-id="(e\d+)"', by_params)[0] == "e000010"

    status, page, _ = get(base_url + "runs/r1/g/e000007")
    assert status == 200 and "WEIGHT_DECAY" in page and "less weight decay" in page
    assert re.search(r'<span class="gi">\+WEIGHT_DECAY = 0.05', page)  # highlighted diff line
    steps = re.findall(r'<li class="step[^"]*" data-id="(e\d+)"', page)
    assert steps == ["e000001", "e000004", "e000006", "e000007"]
    assert "Δ -0.0900" in page and "log of e000007" in page
    _, against, _ = get(base_url + "runs/r1/g/e000004?against=e000010")
    assert "Diff against e000010" in against and "MLP_RATIO" in against

    status, page, _ = get(base_url + "runs/r1/compare?a=e000004&b=e000010")
    assert status == 200 and page.count('class="source"') == 2 and "+MLP_RATIO = 2" in page
    status, page, _ = get(base_url + "runs/empty")
    assert status == 200 and "no elites yet" in page
    status, raw, headers = get(base_url + "runs/r1/raw/e000007")
    assert status == 200 and raw == D and headers["content-type"].startswith("text/plain")


def test_ids_paths_and_hosts_are_validated(base_url: str) -> None:
    for path in (
        "runs/..%2F..%2Fetc",
        "runs/r1/g/..%2Fconfig.json",
        "runs/r1/g/e000099",
        "runs/r1/raw/..%2F..%2Fconfig.json",
        "runs/nope",
        "runs/r1/g/12ab",
        "static/..%2F__init__.py",
        "static/%2e%2e/app.py",
        "runs/r1/g/%3Cscript%3E",
    ):
        status, page, _ = get(base_url + path)
        assert status == 404, path
        assert "<script>" not in page.replace('<script src="/static/app.js" defer></script>', "")
    status, _, _ = get(base_url + "runs/r1", host="evil.example")  # DNS rebinding
    assert status == 400
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_hostile_text_is_escaped_in_the_html(base_url: str) -> None:
    for path in (
        "",
        "runs/hostile",
        "runs/hostile/g/e000002",
        "runs/hostile/g/e000003",
        "runs/hostile/g/e000004",
        "runs/hostile/compare?a=e000001&b=e000002",
    ):
        status, page, _ = get(base_url + path)
        assert status == 200, path
        assert page.count("<script") == 1, path  # ours: <script src="/static/app.js">
        assert 'onerror="' not in page and 'onmouseover="' not in page, path
        assert f'<img src="/{MARK}' not in page and "<svg onload" not in page, path
    _, page, _ = get(base_url + "runs/hostile/g/e000002")
    assert "&lt;script&gt;window.__pwned=1" in page  # shown as text
    assert 'id="log-curve"' in page and "(3 points)" in page  # the loss curve of its log
    assert 'id="reply"' in page and "reply &lt;script&gt;" in page  # the LLM exchange
    _, page, _ = get(base_url + "runs/hostile/g/e000004")  # in flight: prompt and log shown
    assert "in flight" in page and "reply &lt;script&gt;" in page and "step 1 | loss 6.0" in page


def test_binding_elsewhere_warns(archive_dir: Path) -> None:
    server, url = start_server(archive_dir, "--host", "0.0.0.0")
    try:
        assert get(url.replace("0.0.0.0", "127.0.0.1"))[0] == 200  # no Host check off loopback
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "warning: listening on 0.0.0.0" in err and "no login" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "evolve.cli",
                "serve",
                "--archive-dir",
                str(archive_dir),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


# --- in headless Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until(page: object, expression: str, timeout: float = 20.0) -> None:
    """Poll from the test side: wait_for_function evaluates strings in the page, which the
    page's CSP (no unsafe-eval) rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def test_clicking_a_grid_cell_opens_the_elite_with_source_and_diff(browser, base_url: str) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + "runs/r1")
    page.click('#grid-map a.cell[data-id="e000007"]')
    page.wait_for_url("**/runs/r1/g/e000007")
    assert "WEIGHT_DECAY = 0.05" in page.inner_text("#source")
    diff = page.inner_text("#diff")
    assert "-WEIGHT_DECAY = 0.1" in diff and "+WEIGHT_DECAY = 0.05" in diff
    assert "less weight decay" in page.inner_text("#lineage")

    page.goto(base_url + "runs/r1")  # sorting by a column header
    page.click("#elites th >> text=params")
    page.wait_for_url("**sort=params**")
    first = page.get_attribute("#elites tbody tr.elite", "data-id")
    assert first == "e000004"  # fewest parameters first
    page.close()
    assert not errors


def test_the_run_page_updates_while_the_run_writes(
    browser, base_url: str, archive_dir: Path
) -> None:
    page = browser.new_page()
    page.goto(base_url + "runs/live")
    wait_until(page, "document.getElementById('live-status').dataset.state === 'on'")
    assert page.locator("#grid-map a.cell").count() == 3
    with RunArchive.open(archive_dir / "live", writer=True) as writer:
        big = set_constants(E, MLP_RATIO=3)
        writer.add_evaluation(
            ok(1.5, 10**8),
            big,
            generation=3,
            operator="hyper_mutate",
            idea="a much bigger model",
            parents=[],
        )
    wait_until(page, "document.querySelectorAll('#grid-map a.cell').length === 4")
    assert int(page.get_attribute("body", "data-updates") or 0) >= 1
    assert "ok 10, crashed 1" in page.inner_text("#summary") and "1.5000" in page.inner_text(
        "#elites"
    )
    assert page.url.endswith("/runs/live")  # no reload: the same document was updated
    page.close()


def test_hostile_text_never_runs_in_the_browser(browser, base_url: str) -> None:
    page = browser.new_page()
    requests: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: console.append(m.text))
    for path in (
        "runs/hostile",
        "runs/hostile/g/e000002",
        "runs/hostile/g/e000003",
        "runs/hostile/g/e000004",
        "runs/hostile/compare?a=e000001&b=e000002",
        "",
    ):
        page.goto(base_url + path)
        page.wait_for_load_state("load")
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        for selector in ("#idea", "#source", "#log", "#reply", "#elites"):  # where text lands
            if page.locator(selector).count():
                page.hover(selector)
        assert page.evaluate(f"window.__{MARK}") is None, path
        assert page.evaluate("Array.from(document.scripts).map(s => s.getAttribute('src'))") == [
            "/static/app.js"
        ], path
        handlers = page.evaluate("""Array.from(document.querySelectorAll('*')).flatMap(
            e => Array.from(e.attributes).filter(a => a.name.startsWith('on')
                 || /^\\s*javascript:/i.test(a.value)).map(a => e.tagName + ' ' + a.name))""")
        assert handlers == [], (path, handlers)
    page.goto(base_url + "runs/hostile/g/e000002")
    assert "<script>window.__pwned=1" in page.inner_text("#idea")  # shown as text
    assert "onerror=" in page.inner_text("#source") and "onerror=" in page.inner_text("#log")
    assert "reply <script>" in page.inner_text("#reply")
    time.sleep(0.5)
    assert not [u for u in requests if MARK in u], requests
    assert not [m for m in console if "Content Security Policy" in m], console  # CSP had no work
    page.close()
