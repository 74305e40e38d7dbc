"""Test doubles that ship with the package: a fake LLM endpoint and tiny genomes.

`llm_server.FakeLLM` is a local OpenAI-compatible HTTP server with scripted replies, and
`tiny` shrinks the seed genome (and the GPU-scale one) to train in a couple of seconds on
a CPU. Tests, the scripts under `benchmarks/` and offline demos all use them, so they
live here rather than under `tests/`, which nothing outside the test suite should import.
Nothing in the rest of `evolve` imports this package.
"""
