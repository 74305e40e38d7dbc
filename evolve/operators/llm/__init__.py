"""LLM-driven variation: `llm_mutate` and `llm_crossover`, through any OpenAI-compatible endpoint.

Importing this package registers both operators. They need an `LLM` handle
(built from the `[llm]` config table by the engine's setup) passed as the
`llm` option; the openai client itself is imported only when a call is made.
"""

from evolve.operators.llm.client import LLM, LLMError, Reply
from evolve.operators.llm.context import RunContext, gather
from evolve.operators.llm.edits import EditError, apply_reply
from evolve.operators.llm.operators import LLMCrossover, LLMMutation, RunView
from evolve.operators.llm.settings import LLM_OPERATORS, LLMSettings, ModelSpec, parse_llm
from evolve.operators.mix import known_operators, register_operator

for _name, _factory in (("llm_mutate", LLMMutation), ("llm_crossover", LLMCrossover)):
    if _name not in known_operators():
        register_operator(_name, _factory)

__all__ = [
    "LLM",
    "LLM_OPERATORS",
    "EditError",
    "LLMCrossover",
    "LLMError",
    "LLMMutation",
    "LLMSettings",
    "ModelSpec",
    "Reply",
    "RunContext",
    "RunView",
    "apply_reply",
    "gather",
    "parse_llm",
]
