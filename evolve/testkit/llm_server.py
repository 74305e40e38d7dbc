"""A local OpenAI-compatible chat server with scripted replies, for tests, benchmarks, demos.

It speaks just enough of `POST /v1/chat/completions`, `GET /v1/models` and
`GET /v1/models/{name}` for the real `openai` client: each chat request takes the
next scripted step (a reply, an HTTP error, a dropped connection, a delay), or
asks a `responder` function when the script is empty. Every chat request body is
kept in `requests` so tests can read prompts; GET paths go to `gets`.

Like a real server it can refuse a wrong key (`api_key`: 401), not know a model
(`models`: 404), lack the model-retrieve route (`retrieve=False`, as vLLM and
llama.cpp do), and go down and come back on the same port (`down()`, `up()`).
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One scripted answer. `status` other than 200 sends an error; `drop` closes the socket."""

    content: str = ""
    status: int = 200
    delay: float = 0.0
    drop: bool = False
    usage: tuple[int, int] | None = (1000, 200)  # prompt, completion tokens; None: omitted
    retry_after_ms: int | None = 20  # keeps the client's backoff short in tests
    raw: bytes | None = None  # sent as the 200 body instead of a chat completion


def say(content: str, delay: float = 0.0, usage: tuple[int, int] | None = (1000, 200)) -> Step:
    return Step(content=content, delay=delay, usage=usage)


def fail(status: int, delay: float = 0.0) -> Step:
    return Step(status=status, delay=delay)


def drop(delay: float = 0.0) -> Step:
    return Step(drop=True, delay=delay)


def garbage(body: bytes = b"<html>502 bad gateway</html>") -> Step:
    return Step(raw=body)


Responder = Callable[[dict[str, Any]], Step]
TUNABLE = (
    "LEARNING_RATE",
    "WEIGHT_DECAY",
    "WARMUP_FRAC",
    "WARMDOWN_FRAC",
    "FINAL_LR_FRAC",
    "GRAD_CLIP",
)
PROGRAM = re.compile(r"## The current program.*?```python\n(.*?)```", re.S)


def tweaker(latency: float, seed: int = 0) -> Responder:
    """A fake LLM: after `latency` s, the prompt's program with one constant rescaled."""
    rng, lock = random.Random(seed), threading.Lock()

    def reply(body: dict[str, Any]) -> Step:
        source = PROGRAM.search(body["messages"][-1]["content"]).group(1)
        with lock:
            name, factor = rng.choice(TUNABLE), rng.uniform(0.5, 1.5)
        match = re.search(rf"^{name} = ([0-9.e-]+)", source, re.M)
        value = float(match.group(1)) * factor
        child = source.replace(match.group(0), f"{name} = {value:.6g}", 1)
        return Step(content=f"IDEA: {name} x{factor:.2f}\n```python\n{child}```\n", delay=latency)

    return reply


AIM = re.compile(
    r"^- model_size: .*?: (?:about ([0-9.e+]+)x (more|fewer) parameters|keep it)", re.M
)
AIM_LINES = re.compile(
    r"^- code_size: .*?: (?:about ([0-9]+) (more|fewer) code lines|keep it)", re.M
)
PAD = re.compile(r"^_PAD_\d+ = \d+\n", re.M)


def _pad(source: str, lines: int) -> str:
    """Add (or remove) `lines` no-op code lines at the end: moves code_size, nothing else."""
    if lines < 0:
        return PAD.sub("", source, count=-lines) if PAD.search(source) else source
    start = len(PAD.findall(source))
    return source + "".join(f"_PAD_{start + i} = {i}\n" for i in range(lines))


def _constant(source: str, name: str) -> float:
    return float(re.search(rf"^{name} = ([0-9.e-]+)", source, re.M).group(1))


def _params(width: int, layers: int, seq_len: int, vocab: int = 256) -> int:
    """About what the seed genome's GPT has: tied embeddings, positions, 12 E^2 per block."""
    return (vocab + seq_len) * width + 12 * layers * width * width


def sizer(
    latency: float = 0.0,
    seed: int = 0,
    sizes: tuple[float, ...] = (0.25, 0.5, 2, 4),
    resize_share: float = 0.7,
    lines: tuple[int, ...] = (),
) -> Responder:
    """A fake LLM that changes the model's size (N_EMBD, N_LAYER) of a seed-style genome.

    When the prompt names a target niche it reads the factor the aim asks for ("about 3.2x
    fewer parameters") and picks the width and depth closest to it; otherwise it resizes by a
    random factor from `sizes` (`resize_share` of the time). The learning rate is jittered
    every time, so every reply is a new program. With `lines`, it also moves code_size: by the
    lines an aim asks for, or otherwise by a random entry of `lines` (added or removed no-op
    lines). It measures plumbing, not an LLM's skill.
    """
    rng, lock = random.Random(seed), threading.Lock()

    def reply(body: dict[str, Any]) -> Step:
        first = body["messages"][1]["content"]  # later turns are feedback on the first
        source = PROGRAM.search(first).group(1)
        retry = len(body["messages"]) > 2
        aim = AIM.search(first)
        with lock:
            if aim:
                factor = (
                    1.0
                    if aim.group(1) is None
                    else float(aim.group(1)) ** (1 if aim.group(2) == "more" else -1)
                )
            else:
                factor = rng.choice(sizes) if rng.random() < resize_share else 1.0
            jitter = rng.uniform(0.8, 1.25)
            aim_lines = AIM_LINES.search(first)
            if aim_lines:
                more = 0 if aim_lines.group(1) is None else int(aim_lines.group(1))
                more = more if aim_lines.group(2) == "more" else -more
            else:
                more = rng.choice(lines) if lines and rng.random() < resize_share else 0
            pick = rng.randrange(3) if retry else 0
        width, layers = int(_constant(source, "N_EMBD")), int(_constant(source, "N_LAYER"))
        seq_len = int(_constant(source, "SEQ_LEN"))
        heads = int(_constant(source, "N_HEAD"))
        wanted = _params(width, layers, seq_len) * factor
        shapes = sorted(
            (abs(math.log(_params(w, n, seq_len) / wanted)), abs(n - layers), w, n)
            for w in range(4 * heads, 1025, 4 * heads)
            for n in range(1, 7)
        )
        _, _, width, layers = shapes[pick]
        lr = _constant(source, "LEARNING_RATE") * jitter
        child = re.sub(r"^N_EMBD = [^#\n]+", f"N_EMBD = {width}  ", source, count=1, flags=re.M)
        child = re.sub(r"^N_LAYER = [^#\n]+", f"N_LAYER = {layers}  ", child, count=1, flags=re.M)
        child = re.sub(
            r"^LEARNING_RATE = [^#\n]+", f"LEARNING_RATE = {lr:.6g}  ", child, count=1, flags=re.M
        )
        child = _pad(child, more)
        idea = f"IDEA: resize to N_EMBD={width}, N_LAYER={layers} (x{factor:.2g} parameters)"
        return Step(content=f"{idea}\n```python\n{child}```\n", delay=latency)

    return reply


class FakeLLM:
    """Start with `with FakeLLM([...]) as llm:`; point the client at `llm.url`."""

    def __init__(
        self,
        script: list[Step] | None = None,
        responder: Responder | None = None,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        retrieve: bool = True,
        started: bool = True,
    ) -> None:
        """`api_key`: the only key accepted (None: any); `models`: the models it knows (None:
        any); `started=False`: the port is reserved but nothing listens until `up()`."""
        self.script: deque[Step] = deque(script or [])
        self.responder = responder
        self.api_key, self.models, self.retrieve = api_key, models, retrieve
        self.requests: list[dict[str, Any]] = []
        self.gets: list[str] = []
        self.active = self.max_active = 0  # requests being answered now, and the most at once
        self.is_down = True
        self._lock = threading.Lock()
        self._server: _Server | None = _Server(("127.0.0.1", 0), _handler(self))
        self.port = self._server.server_address[1]
        self._serving = False  # a thread runs serve_forever on self._server
        self._started = started
        if not started:
            self.down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLM:
        if self._started:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Listen (again) on the same port."""
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), _handler(self))
        self.is_down = False
        if not self._serving:
            self._serving = True
            threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening (connections are refused) and drop the connections kept alive."""
        self.is_down = True
        if self._server is not None:
            if self._serving:
                self._server.shutdown()
            self._server.server_close()
            self._server, self._serving = None, False

    def add(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)

    def arrived(self, change: int) -> None:
        with self._lock:
            self.active += change
            self.max_active = max(self.max_active, self.active)

    def next_step(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            if self.script:
                return self.script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Step(status=500, content="script exhausted", retry_after_ms=None)

    @property
    def prompts(self) -> list[str]:
        """The last user message of every request, in arrival order."""
        return [r["messages"][-1]["content"] for r in self.requests]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or hang up are part of the script, not errors


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _refused(self) -> bool:
            """Down: drop the connection. A wrong key: 401."""
            if fake.is_down:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return True
            if (
                fake.api_key is not None
                and self.headers.get("authorization") != f"Bearer {fake.api_key}"
            ):
                self._send(401, _error("Incorrect API key provided.", "invalid_api_key"))
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            fake.gets.append(self.path)
            if self._refused():
                return
            if self.path.rstrip("/") == "/v1/models":
                names = fake.models or ["fake"]
                self._send(200, {"object": "list", "data": [_model(n) for n in names]})
                return
            name = self.path.removeprefix("/v1/models/")
            if not self.path.startswith("/v1/models/") or not fake.retrieve:
                self._send(404, {"detail": "Not Found"})  # a route the server does not have
            elif fake.models is not None and name not in fake.models:
                self._send(404, _error(f"The model `{name}` does not exist.", "model_not_found"))
            else:
                self._send(200, _model(name))

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            if self._refused():
                return
            if fake.models is not None and body.get("model") not in fake.models:
                self._send(
                    404,
                    _error(f"The model `{body.get('model')}` does not exist.", "model_not_found"),
                )
                return
            step = fake.next_step(body)
            fake.arrived(+1)
            try:
                time.sleep(step.delay)
                self._answer(step, body)
            finally:
                fake.arrived(-1)

        def _answer(self, step: Step, body: dict[str, Any]) -> None:
            if step.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if step.status != 200:
                payload = {
                    "error": {
                        "message": step.content or f"scripted {step.status}",
                        "type": "server_error",
                        "code": None,
                    }
                }
                headers = {}
                if step.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(step.retry_after_ms)
                if step.content == "script exhausted":
                    headers["x-should-retry"] = "false"
                self._send(step.status, payload, headers)
                return
            reply = step.raw if step.raw is not None else _completion(body.get("model"), step)
            self._send(200, reply)

        def _send(
            self,
            status: int,
            payload: dict[str, Any] | bytes,
            headers: dict[str, str] | None = None,
        ) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to do

    return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def _completion(model: str | None, step: Step) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "fake",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": step.content},
            }
        ],
    }
    if step.usage is not None:
        prompt, completion = step.usage
        reply["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return reply
