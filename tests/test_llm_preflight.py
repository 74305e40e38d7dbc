"""The start-up check of the LLM endpoint, through the real openai client and a local server.

A refused key or an unknown model is a bad setting: exit 2 and no run folder.
An endpoint that does not answer stops the start too, unless --llm-fallback asks
to go on with the built-in operators; a resume follows the same rules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.archive import RunArchive
from evolve.cli import cli
from evolve.errors import UserError
from evolve.operators.llm import LLM, parse_llm
from evolve.operators.llm.preflight import check, down_error
from evolve.testkit.llm_server import FakeLLM, Step, say
from evolve.testkit.tiny import tiny_genome
from tests.test_llm_run import corpus


def handle(url: str, model: str = "m", **table) -> LLM:
    return LLM(parse_llm({"models": [model], "base_url": url, "timeout": 5, **table}))


def test_a_known_model_passes_with_one_free_request_and_no_completion() -> None:
    with FakeLLM(models=["m"]) as fake:
        assert check(handle(fake.url)) == []
    assert fake.gets == ["/v1/models/m"] and fake.requests == []


def test_a_refused_key_is_a_bad_setting(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with FakeLLM(api_key="sk-right") as fake, pytest.raises(UserError) as info:
        check(handle(fake.url))
    assert "refused the key in OPENAI_API_KEY" in info.value.what
    assert "export OPENAI_API_KEY" in info.value.fix and fake.requests == []


def test_an_unknown_model_is_a_bad_setting_and_the_offered_ones_are_named() -> None:
    with FakeLLM(models=["qwen-coder", "llama-3"]) as fake, pytest.raises(UserError) as info:
        check(handle(fake.url, model="qwen-codr"))
    assert "does not know model 'qwen-codr'" in info.value.what
    assert "it offers: llama-3, qwen-coder" in info.value.what


def test_without_a_retrieve_route_a_one_token_completion_decides() -> None:
    """vLLM and llama.cpp answer 404 to GET /v1/models/NAME for any name."""
    with FakeLLM([say("OK", usage=(12, 1))], models=["m"], retrieve=False) as fake:
        llm = handle(fake.url, model={"name": "m", "price_in": 1.0, "price_out": 1.0})
        assert check(llm) == []
        assert fake.requests[0]["max_tokens"] == 1
        assert llm.stats()["tokens"] == 13  # the probe is counted
        with pytest.raises(UserError, match="does not know model 'n'"):
            check(handle(fake.url, model="n"))
        # a 400 about the probe's own option is not a verdict on the model; one about it is
        fake.add(
            Step(
                status=400,
                content="Unsupported parameter: 'max_tokens' is not supported "
                "with this model. Use 'max_completion_tokens'.",
            )
        )
        assert check(handle(fake.url)) == []
    with (
        FakeLLM(
            [Step(status=400, content='model "m" not found, try pulling it first')], retrieve=False
        ) as fake,
        pytest.raises(UserError, match="does not know model"),
    ):
        check(handle(fake.url))


def test_an_endpoint_that_does_not_answer_is_said_at_once_with_what_to_check() -> None:
    fake = FakeLLM(started=False)  # the port is reserved, nothing listens
    began = time.monotonic()
    down = check(handle(fake.url))
    assert time.monotonic() - began < 10
    assert [d.url for d in down] == [fake.url] and "APIConnectionError" in down[0].error
    error = down_error(down)
    assert fake.url in error.what and "--llm-fallback" in error.fix and "/v1" in error.fix


def evolve(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evolve.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    (tmp_path / "tiny.py").write_text(tiny_genome())
    (tmp_path / "program.md").write_text("Lower val_bpb.\n")
    (tmp_path / "run.toml").write_text(
        "noise_repeats = 1\nconfirm = 1\n[llm]\nmax_retries = 0\ncooldown = 2\n"
    )
    corpus(tmp_path / "corpus.txt")
    return tmp_path


FAST = [
    "--name",
    "r",
    "--seed-genome",
    "tiny.py",
    "--config",
    "run.toml",
    "--budget",
    "1",
    "--eval-tokens",
    "2048",
    "--devices",
    "cpu:2",
    "--data",
    "corpus.txt",
]


@pytest.mark.parametrize(
    "server, args, expected",
    [
        ({"api_key": "sk-right"}, ["--llm-model", "m"], "refused the key in OPENAI_API_KEY"),
        ({"models": ["m"]}, ["--llm-model", "mm"], "does not know model 'mm'; it offers: m"),
        ({"started": False}, ["--llm-model", "m"], "does not answer for m"),
        ({}, ["--llm-model", "m", "--selection", "foo"], "unknown selection method 'foo'"),
        ({}, ["--llm-model", "m", "--config", "ops.toml"], "unknown operator 'llm_mutat'"),
        (
            {"started": False},
            ["--llm-model", "m", "--config", "llm_only.toml", "--llm-fallback"],
            "only LLM operators have a weight",
        ),
    ],
)
def test_bad_settings_exit_2_and_leave_no_run_folder(
    workspace: Path, server, args, expected, monkeypatch
) -> None:
    monkeypatch.chdir(workspace)
    (workspace / "ops.toml").write_text("[operators]\nllm_mutat = 1\nhyper_mutate = 1\n")
    (workspace / "llm_only.toml").write_text("[operators]\nllm_mutate = 1\n")
    with FakeLLM(**server) as fake:
        result = CliRunner().invoke(
            cli,
            ["start", "--pop", "2", "--generations", "1", *FAST, *args, "--llm-base-url", fake.url],
        )
    assert result.exit_code == 2, result.output[-2000:]
    assert expected in result.output and "Traceback" not in result.output
    assert not (workspace / "archive" / "r").exists()
    if server.get("started") is False and "--llm-fallback" not in args:
        assert fake.url in result.output and "--llm-fallback" in result.output


def test_down_at_start_with_fallback_runs_on_builtins_and_says_when_the_llm_is_back(
    workspace: Path,
) -> None:
    """The run starts with the LLM marked down (a line says so), the built-in operators make
    the children, the server comes up mid-run, a line says so, and LLM children follow."""
    (workspace / "run.toml").write_text(
        "noise_repeats = 1\nconfirm = 1\n[operators]\nllm_mutate = 4\nhyper_mutate = 1\n"
        "[llm]\nmax_retries = 0\ncooldown = 1\nconcurrency = 1\ntimeout = 5\n"
    )
    from evolve.testkit.llm_server import tweaker

    fake = FakeLLM(responder=tweaker(latency=0.0), started=False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evolve.cli",
            "start",
            "--pop",
            "2",
            "--generations",
            "4",
            *FAST,
            "--llm-model",
            "m",
            "--llm-base-url",
            fake.url,
            "--llm-fallback",
        ],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shard = workspace / "archive" / "r" / "evals"
        deadline = time.monotonic() + 120
        while not any(shard.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        fake.up()  # the first evaluation is in: the endpoint comes up
        out, err = proc.communicate(timeout=240)
    finally:
        fake.down()
    assert proc.returncode == 0, err[-3000:]
    assert "LLM down: the LLM endpoint" in err and "the built-in operators carry on" in err
    assert "LLM answers again" in err and err.index("LLM down") < err.index("LLM answers again")
    assert "LLM: " in out and "down 1 time(s)" in out and "spent $" in out
    run = workspace / "archive" / "r"
    stats = json.loads((run / "llm.json").read_text())
    assert stats["outages"] == 1 and [e["what"][:8] for e in stats["events"]] == [
        "LLM down",
        "LLM answ",
    ]
    with RunArchive.open(run) as archive:
        operators = [r.operator for r in archive.evaluations()]
        rows = list(archive.logbook())
    assert "llm_mutate" in operators and "hyper_mutate" in operators
    assert [row["gen"] for row in rows] == [0, 1, 2, 3]
    assert all(row["children"] == 2 for row in rows)  # pop evaluated children, whatever failed


def test_a_resume_with_the_llm_down_stops_unless_told_to_go_on(
    workspace: Path, monkeypatch
) -> None:
    monkeypatch.chdir(workspace)
    with FakeLLM() as fake:
        first = evolve(
            "start",
            "--pop",
            "1",
            "--generations",
            "1",
            *FAST,
            "--llm-model",
            "m",
            "--llm-base-url",
            fake.url,
            cwd=workspace,
        )
    assert first.returncode == 0, first.stderr[-2000:]
    config = (workspace / "archive" / "r" / "config.json").read_text()
    refused = CliRunner().invoke(cli, ["resume", "r"])  # the server is down now
    assert refused.exit_code == 2 and "does not answer for m" in refused.output
    assert "evolve resume RUN --llm-fallback" in refused.output
    assert (workspace / "archive" / "r" / "config.json").read_text() == config
    resumed = evolve("resume", "r", "--llm-fallback", cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "LLM down: the LLM endpoint" in resumed.stderr and "down 1 time(s)" in resumed.stdout
    # the run's LLM account is listed with the runs and under its elites
    [row] = json.loads(CliRunner().invoke(cli, ["runs", "--json"]).output)
    assert row["llm"]["outages"] == 1 and row["llm"]["calls"] == 0 and row["llm"]["cost"] == 0
    shown = CliRunner().invoke(cli, ["show", "r"]).output
    assert "LLM: 0 call(s), 0 failed, spent $0.0000, down 1 time(s), still down" in shown
