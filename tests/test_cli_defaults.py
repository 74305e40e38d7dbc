"""Every run default is written once, in RunConfig: the command line, the runner's RunSettings and
the operator mix read theirs from it. Changed in RunConfig, each one changes everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

# RunConfig's defaults are replaced before anything else imports it, in a fresh interpreter;
# a command that kept its own literal would still show the old value.
SCRIPT = """
import dataclasses, json, sys
from evolve import config
fields = {f.name: f for f in dataclasses.fields(config.RunConfig)}
for name, value in json.loads(sys.argv[1]).items():
    if fields[name].default_factory is dataclasses.MISSING:
        fields[name].default = value
        setattr(config.RunConfig, name, value)
    else:
        fields[name].default_factory = lambda value=value: value
from click.testing import CliRunner
from evolve.cli import cli
from evolve.operators import DEFAULT_CXPB, DEFAULT_OPERATORS
from evolve.runner import RunSettings
shown = {name: " ".join(CliRunner().invoke(cli, [name, "--help"]).output.split())
         for name in ("start", "eval", "resume", "runs", "serve", "prompt")}
settings = RunSettings(device="cpu")
shown["settings"] = [settings.budget, settings.eval_tokens, settings.max_source_bytes,
                     settings.max_log_bytes]
shown["operators"] = [DEFAULT_OPERATORS, DEFAULT_CXPB]
print(json.dumps(shown))
"""
CHANGED = {
    "budget": 123.5,
    "eval_tokens": 4321,
    "max_source_bytes": 777,
    "max_log_bytes": 999,
    "pop": 9,
    "z": 1.5,
    "archive_dir": "runs-here",
    "data": "tinystories",
    "tokenizer": "bpe-512",
    "device": "cpu",
    "executor": "ray",
    "prune": "shadow",
    "strategy": "greedy",
    "seed_genomes": ["seed.py"],
    "cxpb": 0.7,
    "operators": {"hyper_mutate": 2.0},
}


def test_help_and_settings_show_what_run_config_declares() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CHANGED)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    for text in (
        "Children per generation [default: 9]",
        "evaluation [default: 123.5]",
        "Where runs live [default: runs-here]",
        "[default: seed.py, none with",
        "the CPU [default: cpu]",
        "evaluations run [default: ray]",
        "Held-out tokens scored [default: 4321]",
        "would have [default: shadow]",
        "before they run [default: 777]",
        "[default: greedy]",
        "wins [default: 1.5]",
    ):
        assert text in shown["start"], text
    for text in (
        "[default: 123.5;",
        "[default: tinystories]",
        "[default: bpe-512]",
        "[default: cpu]",
        "[default: 4321;",
        "[default: 777;",
    ):
        assert text in shown["eval"], text
    for command in ("resume", "runs", "serve", "prompt"):
        assert "Where runs live. [default: runs-here]" in shown[command], command
    assert shown["settings"] == [123.5, 4321, 777, 999]
    assert shown["operators"] == [{"hyper_mutate": 2.0}, 0.7]
