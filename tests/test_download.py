"""download(): resume, retry and give-up, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evolve.errors import UserError
from evolve.harness.download import download

FAST = {"backoff": 0.01, "timeout": 5.0}
BODY = bytes(range(256)) * 400  # 100 KiB, every byte value


class FlakyServer(ThreadingHTTPServer):
    """Serves `files`; can misbehave on purpose, and records each request's Range header."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None  # first request: send this many body bytes, then hang up
        self.fail_503: int = 0  # answer 503 to this many requests first
        self.stall_first: float = 0.0  # first request: wait this long before answering
        self.ignore_range = False  # answer 200 with the whole file even when asked for a range
        self.ranges: list[str | None] = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        """A client that timed out and hung up is part of the test, not a failure."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RangeHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def log_message(self, *args) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            first = not srv.ranges
            srv.ranges.append(self.headers.get("Range"))
            fail = srv.fail_503 > 0
            srv.fail_503 -= fail
        if first and srv.stall_first:
            time.sleep(srv.stall_first)
        if fail:
            return self.send_error(503, "try later")
        body = srv.files.get(self.path)
        if body is None:
            return self.send_error(404, "no such file")
        start = self._range_start()
        if start is not None and start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if start is None:
            self.send_response(200)
            start = 0
        else:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if first and srv.drop_after is not None:
            payload = payload[: srv.drop_after]  # then the connection closes mid-body
        self.wfile.write(payload)

    def _range_start(self) -> int | None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if self.server.ignore_range or not match:
            return None
        return int(match.group(1))


@pytest.fixture
def server():
    srv = FlakyServer()
    srv.files["/data.bin"] = BODY
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_plain_download(server, tmp_path):
    dest = download(f"{server.url}/data.bin", tmp_path / "d" / "data.bin", **FAST)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "d" / "data.bin.part").exists()
    assert server.ranges == [None]


def test_resumes_after_dropped_connection(server, tmp_path):
    server.drop_after = 30_000
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges == [None, "bytes=30000-"]


def test_restarts_when_server_ignores_range(server, tmp_path):
    server.drop_after = 30_000
    server.ignore_range = True
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges == [None, "bytes=30000-"]


def test_retries_after_503(server, tmp_path):
    server.fail_503 = 1
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", **FAST)
    assert dest.read_bytes() == BODY
    assert len(server.ranges) == 2


def test_retries_after_timeout(server, tmp_path):
    server.stall_first = 1.0
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", backoff=0.01, timeout=0.3)
    assert dest.read_bytes() == BODY
    assert len(server.ranges) == 2


def test_gives_up_after_retries_with_clear_error(server, tmp_path):
    server.fail_503 = 100
    dest = tmp_path / "data.bin"
    with pytest.raises(UserError) as err:
        download(f"{server.url}/data.bin", dest, retries=3, **FAST)
    assert len(server.ranges) == 4
    message = str(err.value)
    assert "could not download" in message and "4 attempts" in message and "503" in message
    assert err.value.exit_code == 2
    assert not dest.exists()


def test_partial_bytes_survive_give_up_and_resume_later(server, tmp_path):
    server.drop_after = 10_000
    server.fail_503 = 0
    dest = tmp_path / "data.bin"
    url = f"{server.url}/data.bin"
    with pytest.raises(UserError):
        download(url, dest, retries=0, **FAST)  # one attempt, cut short
    assert (tmp_path / "data.bin.part").stat().st_size == 10_000
    download(url, dest, **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges[-1] == "bytes=10000-"


def test_complete_part_file_is_finished_via_416(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(BODY)
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", **FAST)
    assert dest.read_bytes() == BODY
    assert server.ranges == [f"bytes={len(BODY)}-"]


def test_missing_file_fails_at_once(server, tmp_path):
    with pytest.raises(UserError) as err:
        download(f"{server.url}/nope.bin", tmp_path / "nope.bin", **FAST)
    assert "404" in str(err.value)
    assert len(server.ranges) == 1


def test_existing_destination_is_not_fetched(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"already here")
    assert download(f"{server.url}/data.bin", dest, **FAST).read_bytes() == b"already here"
    assert server.ranges == []


def test_unreachable_server_gives_up(tmp_path):
    with socket.socket() as sock:  # find a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError) as err:
        download(f"http://127.0.0.1:{port}/x", Path(tmp_path, "x"), retries=2, **FAST)
    assert "3 attempts" in str(err.value)
