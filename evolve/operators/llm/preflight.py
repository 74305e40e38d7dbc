"""One cheap request per model before the first evaluation: endpoint, key and model name.

A rejected key or an unknown model is a bad setting (`UserError`: exit 2, before
the run folder exists); an endpoint that does not answer is reported back so the
caller can stop, or go on with the LLM marked down when the user asked for that.

The check is `GET /models/{name}` (free; OpenAI, Ollama and most proxies have it).
Servers without that route (vLLM, llama.cpp, LM Studio answer 404 for any name)
get a 1-token chat completion instead, whose 404 then does mean an unknown model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from evolve.errors import UserError
from evolve.operators.llm.client import BAD_REPLY, LLM, _describe
from evolve.operators.llm.settings import ModelSpec

# Seconds per attempt (one retry): "unreachable" must be said at once, not in minutes.
PROBE_CONNECT = 5.0
PROBE_TIMEOUT = 30.0
PROBE_MESSAGES = [{"role": "user", "content": "Reply with the word OK."}]
LISTED = 12  # model names shown when the server does not know the one asked for
# How servers that answer 400 rather than 404 say they do not know a model ("max_tokens is not
# supported with this model" must not match: the model is fine, the probe's option is not).
NO_SUCH_MODEL = re.compile(
    r"model_not_found|unknown model|invalid model|no such model|"
    r"model\b[^.]{0,80}\b(not found|does not exist|not exist|not available)",
    re.I,
)


@dataclass(frozen=True)
class Down:
    """A model whose endpoint did not answer: what to show the user."""

    model: str
    url: str
    error: str

    def message(self) -> str:
        return f"the LLM endpoint {self.url} does not answer for {self.model} ({self.error})"


def check(llm: LLM) -> list[Down]:
    """Probe every model of the ensemble; raise UserError for a bad key or model name."""
    down = []
    for model in llm.settings.models:
        problem = _probe(llm, model)
        if problem is not None:
            down.append(problem)
    return down


def down_error(down: list[Down], resume: bool = False) -> UserError:
    """The exit-2 error for an unreachable endpoint, when the user did not ask to go on without."""
    urls = sorted({d.url for d in down})
    flag = (
        "evolve resume RUN --llm-fallback"
        if resume
        else "--llm-fallback (or fallback = true in [llm])"
    )
    return UserError(
        "; ".join(d.message() for d in down),
        "no LLM call can succeed, so the LLM operators would only fail",
        f"check that the server at {', '.join(urls)} is running and the URL (host, "
        "port, the /v1 suffix) is right; or pass "
        + flag
        + " to start with the built-in operators and retry the LLM during the run",
    )


def _probe(llm: LLM, model: ModelSpec) -> Down | None:
    import openai

    url = (
        model.base_url
        or llm.settings.base_url
        or os.environ.get("OPENAI_BASE_URL")
        or "https://api.openai.com/v1"
    )
    key_env = model.api_key_env or llm.settings.api_key_env
    client = openai.OpenAI(
        api_key=os.environ.get(key_env) or "unused",
        base_url=url,
        timeout=openai.Timeout(
            min(llm.settings.timeout, PROBE_TIMEOUT),
            connect=min(llm.settings.timeout, PROBE_CONNECT),
        ),
        max_retries=1,
    )
    try:
        client.models.retrieve(model.name)
        return None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise _bad_key(model, url, key_env, exc) from None
    except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
        return Down(model.name, url, _describe(exc))
    except (openai.OpenAIError, *BAD_REPLY):
        pass  # no such route here, or an odd answer: ask the chat endpoint itself
    try:
        response = client.chat.completions.create(
            model=model.name, messages=PROBE_MESSAGES, max_tokens=1
        )
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise _bad_key(model, url, key_env, exc) from None
    except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
        return Down(model.name, url, _describe(exc))
    except openai.NotFoundError as exc:
        raise _unknown_model(client, model, url, exc) from None
    except openai.APIStatusError as exc:  # 400, 422...: the server answered, the model may be fine
        if NO_SUCH_MODEL.search(str(exc)):
            raise _unknown_model(client, model, url, exc) from None
        return None
    except (openai.OpenAIError, *BAD_REPLY) as exc:
        raise UserError(
            f"{url} does not answer like an OpenAI-compatible API",
            _describe(exc),
            "check --llm-base-url: it is the API root, usually ending in /v1",
        ) from None
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if None not in tokens:
        llm.count_probe(model, int(tokens[0]), int(tokens[1]))
    return None


def _bad_key(model: ModelSpec, url: str, key_env: str, exc: Exception) -> UserError:
    where = f"the key in {key_env}" if os.environ.get(key_env) else f"no key ({key_env} is unset)"
    return UserError(
        f"the LLM endpoint {url} refused {where} for model {model.name}",
        _describe(exc),
        f"export {key_env}=<a valid key> (or name another variable with api_key_env in [llm])",
    )


def _unknown_model(client, model: ModelSpec, url: str, exc: Exception) -> UserError:
    offered = ""
    try:
        names = sorted(m.id for m in client.models.list())
        if names:
            more = f", … ({len(names)} in all)" if len(names) > LISTED else ""
            offered = f"; it offers: {', '.join(names[:LISTED])}{more}"
    except Exception:  # noqa: BLE001 - the list is a courtesy; the error stands without it
        pass
    return UserError(
        f"the LLM endpoint {url} does not know model {model.name!r}{offered}",
        _describe(exc),
        "fix --llm-model (or name in [[llm.models]]); if the name is right, check "
        "that --llm-base-url is the API root (usually ending in /v1)",
    )
