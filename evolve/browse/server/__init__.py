"""`evolve serve`: the elite archive as a live local web page (read-only, never takes a lock).

Starlette routes, Jinja2 templates (autoescaped) and Pygments highlighting, served
by uvicorn; the page polls a small version endpoint and swaps its live blocks when
a run writes. Every asset ships in this package (templates/, static/): no CDN.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from evolve.errors import UserError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: any free port), or a UserError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot resolve host {host!r}", str(e), "give an IP address") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}",
            e.strerror or str(e),
            "pick another --port (0 picks a free one)",
        ) from None
    sock.listen(128)
    return sock


def serve(
    archive_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    announce: Callable[[str], None] = print,
    poll_seconds: float = 2.0,
    access_log: bool = False,
) -> None:
    """Serve the viewer until interrupted. Binding a non-loopback address is the caller's
    choice; the Host check against DNS rebinding is only on for loopback binds."""
    import uvicorn

    from evolve.browse.server.app import create_app

    if Path(archive_dir).exists() and not Path(archive_dir).is_dir():
        raise UserError(f"{archive_dir} is not a directory", fix="give the archive directory")
    sock = bind(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    shown = "127.0.0.1" if shown == "localhost" else shown
    app = create_app(archive_dir, loopback=is_loopback(host), poll_seconds=poll_seconds)
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=app.state.cache.warm, name="warm-index", daemon=True).start()
    announce(f"serving {archive_dir} at http://{shown}:{bound[1]}/ (Ctrl-C stops)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.cache.close()


__all__ = ["bind", "is_loopback", "serve"]
