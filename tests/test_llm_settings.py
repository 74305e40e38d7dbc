"""The [llm] config table and the --llm-* flags: merged, checked, and refused when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evolve.cli import cli
from evolve.config import build_config
from evolve.errors import UserError
from evolve.operators.llm.settings import LLM_OPERATORS, parse_llm
from evolve.operators.llm.wiring import build_llm


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_flags_override_the_file_and_keep_its_per_model_settings(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """
[llm]
base_url = "http://file/v1"
timeout = 30
[[llm.models]]
name = "a"
weight = 3
temperature = 0.5
price_in = 1.0
price_out = 2.0
[[llm.models]]
name = "b"
""",
    )
    config = build_config(
        path,
        {
            "llm_models": ("a", "gpt-4o-mini"),
            "llm_base_url": "http://flag/v1",
            "max_llm_cost": 2.5,
            "llm_concurrency": None,
        },
    )
    settings = parse_llm(config.llm)
    assert [m.name for m in settings.models] == ["a", "gpt-4o-mini"]
    assert (settings.models[0].weight, settings.models[0].temperature) == (3.0, 0.5)
    assert (settings.base_url, settings.timeout, settings.max_cost) == ("http://flag/v1", 30.0, 2.5)
    assert config.operators == LLM_OPERATORS  # an LLM and no operators table: the LLM mix


def test_without_an_llm_the_builtin_operators_stay_and_a_note_says_so(tmp_path: Path) -> None:
    config = build_config(None, {"llm_models": ()})
    assert "llm_mutate" not in config.operators
    llm, _, notes = build_llm(config.llm, config.operators, {}, tmp_path)
    assert llm is None and "no LLM configured" in notes[0]
    with pytest.raises(UserError, match="need an LLM"):
        build_llm({}, {"llm_mutate": 1, "hyper_mutate": 1}, {}, tmp_path)


def test_an_explicit_operators_table_is_respected(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[operators]\nllm_mutate = 1\nhyper_mutate = 2\n")
    config = build_config(path, {"llm_models": ("m",), "llm_base_url": "http://x/v1"})
    assert config.operators == {"llm_mutate": 1, "hyper_mutate": 2}
    llm, options, notes = build_llm(config.llm, config.operators, {}, tmp_path)
    assert options["llm_mutate"]["llm"] is llm and "hyper_mutate" not in options
    assert "m (w=1" in notes[0] and "llm_mutate 1" in notes[0]


@pytest.mark.parametrize(
    "table, message",
    [
        ({"models": ["m"], "max_cost": -1}, "max_cost is -1"),
        ({"models": ["m"], "tiemout": 5}, "unknown \\[llm\\] key"),
        ({"models": [{"name": "m", "temprature": 0.3}]}, "unknown key\\(s\\) temprature"),
        ({"models": [{"weight": 1}]}, "each model needs a name"),
        ({"models": ["m", "m"]}, "listed twice"),
        ({"models": ["m"], "max_cost": 1}, "has no price"),
        ({"models": ["m"], "api_key": "sk-123"}, "holds an API key"),
        ({"models": ["m"], "rewrite_share": 1.5}, "rewrite_share"),
        ({"models": [{"name": "m", "weight": 0}]}, "positive weight"),
        ({"models": ["m"], "concurrency": 0}, "concurrency"),
    ],
)
def test_bad_llm_settings_are_user_errors(table: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_llm(table)


def test_known_models_have_prices_so_a_cap_works_from_the_command_line() -> None:
    settings = parse_llm({"models": ["gpt-4.1-mini"], "max_cost": 1})
    assert settings.models[0].price_in is not None


def test_the_cli_refuses_a_negative_cost_cap_with_exit_code_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["start", "--llm-model", "m", "--max-llm-cost", "-1", "--archive-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "max_cost is -1.0" in result.output and "Traceback" not in result.output


def test_a_missing_api_key_is_caught_at_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="no API key"):
        build_llm({"models": ["gpt-4.1-mini"]}, {"llm_mutate": 1}, {}, tmp_path)
