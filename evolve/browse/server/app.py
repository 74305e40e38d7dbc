"""The viewer's Starlette app: routes, templates, security headers, errors.

Sync endpoints run in Starlette's thread pool; each holds its run's lock while it
reads, since TinyDB handles and the index caches are not thread-safe.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evolve.browse.server import pages
from evolve.browse.server.index import RunCache
from evolve.errors import UserError

HIGHLIGHT_LIMIT = 400_000  # characters; longer texts are shown plain (still escaped)
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """A strict Content-Security-Policy (no inline script or style) and friends on every answer:
    defence in depth behind Jinja's autoescaping, for text written by untrusted genomes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def highlighted(text: str, lexer: str = "python") -> Markup:
    """Pygments HTML (which escapes the text); plain escaped text when it is very long."""
    if len(text) > HIGHLIGHT_LIMIT:
        return Markup('<div class="hl"><pre>') + text + Markup("</pre></div>")
    chosen = DiffLexer() if lexer == "diff" else PythonLexer()
    return Markup(highlight(text, chosen, _formatter(lexer == "python")))


@lru_cache(maxsize=2)
def _formatter(numbers: bool) -> HtmlFormatter:
    return HtmlFormatter(
        cssclass="hl", linenos="inline" if numbers else False, lineanchors="L" if numbers else ""
    )


def _bpb(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("evolve.browse.server", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(bpb=_bpb, delta=_delta, num=_num, highlight=highlighted)
    return env


def create_app(
    archive_dir: str | Path, *, loopback: bool = True, poll_seconds: float = 2.0
) -> Starlette:
    """The viewer over `archive_dir`. loopback=True accepts only local Host headers (against
    DNS rebinding: a page elsewhere must not read the archive through the user's browser)."""
    cache = RunCache(Path(archive_dir))
    templates = Jinja2Templates(env=environment())

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("poll_ms", int(poll_seconds * 1000))
        return templates.TemplateResponse(request, name, context, status_code=status)

    def locked(request: Request, work: Any) -> Any:
        index = cache.get(pages.check_name(request.path_params["run"]))
        with index.lock:
            index.refresh()
            return work(index)

    def home(request: Request) -> Response:
        return render(
            request, "runs.html", runs=pages.runs_page(cache), archive_dir=str(cache.archive_dir)
        )

    def run(request: Request) -> Response:
        q = request.query_params
        page = int(q["page"]) if q.get("page", "").isdigit() else 1
        data = locked(
            request, lambda i: pages.run_page(i, q.get("sort", "mean"), q.get("order", "asc"), page)
        )
        return render(request, "run.html", run=request.path_params["run"], **data)

    def genome(request: Request) -> Response:
        against = request.query_params.get("against") or None
        data = locked(
            request, lambda i: pages.genome_page(i, request.path_params["ident"], against)
        )
        return render(request, "genome.html", run=request.path_params["run"], **data)

    def compare(request: Request) -> Response:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        data = locked(request, lambda i: pages.compare_page(i, a.strip(), b.strip()))
        return render(request, "compare.html", run=request.path_params["run"], **data)

    def raw(request: Request) -> Response:
        text = locked(
            request,
            lambda i: pages.source_of(i, pages.subject(i, request.path_params["ident"]).genome),
        )
        return PlainTextResponse(text, headers={"content-disposition": "inline"})

    def version(request: Request) -> Response:
        """What the page polls: only stats, no lock, no parsing."""
        log = request.query_params.get("log")
        if "run" not in request.path_params:
            names = cache.names()
            return JSONResponse(
                {"version": str(abs(hash(tuple((n, pages.version(cache.get(n))) for n in names))))}
            )
        log_id = log if log and pages.EVAL_ID.fullmatch(log) else None
        index = cache.get(pages.check_name(request.path_params["run"]))
        return JSONResponse({"version": pages.version(index, log_id)})

    def pygments_css(request: Request) -> Response:
        return Response(_formatter(True).get_style_defs(".hl"), media_type="text/css")

    async def not_found(request: Request, exc: Exception) -> Response:
        message = exc.message() if isinstance(exc, UserError) else "no such page"
        return render(request, "error.html", status=404, message=message)

    async def unreadable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UserError)
        return render(request, "error.html", status=500, message=exc.message())

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        return render(
            request, "error.html", status=code, message=str(getattr(exc, "detail", "error"))
        )

    middleware = [Middleware(SecurityHeaders)]
    if loopback:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS))
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/runs/{run}", run),
            Route("/runs/{run}/compare", compare),
            Route("/runs/{run}/g/{ident}", genome),
            Route("/runs/{run}/raw/{ident}", raw),
            Route("/api/version", version),
            Route("/api/runs/{run}/version", version),
            Route("/static/pygments.css", pygments_css),
            Mount(
                "/static", StaticFiles(packages=[("evolve.browse.server", "static")]), name="static"
            ),
        ],
        middleware=middleware,
        exception_handlers={
            pages.NotFound: not_found,
            UserError: unreadable,
            HTTPException: http_error,
        },
    )
    app.state.cache = cache
    return app
