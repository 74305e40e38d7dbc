"""The README's config examples are real: each TOML block loads and passes RunConfig's checks
(a stale key or an unclosed list in the docs fails here, not in a user's first run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evolve.config import RunConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_config_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_readme_config_example_is_valid(block: str) -> None:
    data = tomllib.loads(block)
    config = RunConfig.from_dict(data).validate()
    for key, value in data.items():
        if key != "llm":
            assert getattr(config, key) == value, key
