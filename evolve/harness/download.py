"""HTTP downloads that survive flaky networks: retries, resume, atomic finish.

A download goes to `<dest>.part` first. Each attempt asks the server for the
bytes after what the `.part` file already holds (a `Range` request); a server
that ignores `Range` answers with the whole file and we start over. Only a
complete file is renamed to `dest`, so a file at `dest` can always be trusted.
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from evolve.errors import UserError

CHUNK = 1 << 20
USER_AGENT = "evolve-data/1"
# Statuses worth asking again for; any other HTTP error is final (404, 403, ...).
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""


def download(
    url: str,
    dest: Path,
    *,
    retries: int = 5,
    timeout: float = 30.0,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
) -> Path:
    """Fetch `url` to `dest` unless `dest` already exists; return `dest`.

    Tries `1 + retries` times with exponential backoff (`backoff * 2**n`, at most
    `max_backoff` seconds), resuming from the `.part` file each time.
    Raises UserError when the server refuses for good or every attempt failed.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(max_backoff, backoff * 2 ** (attempt - 1)))
        try:
            _attempt(url, part, timeout)
        except _Retryable as exc:
            last_error = str(exc)
            continue
        os.replace(part, dest)
        return dest
    raise UserError(
        f"could not download {url}",
        f"{retries + 1} attempts failed; last error: {last_error}",
        f"check the network and run again; the {part.stat().st_size if part.exists() else 0} "
        f"bytes already fetched in {part} are kept and the download resumes from there",
    )


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One request: append the missing bytes to `part`, or raise _Retryable."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            start, total = _plan(response, have)
            _receive(response, part, start, total)
    except urllib.error.HTTPError as exc:
        _on_http_error(exc, url, part, have)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _plan(response: http.client.HTTPResponse, have: int) -> tuple[int, int | None]:
    """Decide where the body goes: (offset to write at, expected final size)."""
    length = response.headers.get("Content-Length")
    size = int(length) if length is not None and length.isdigit() else None
    if response.status == 206:
        first, total = _content_range(response.headers.get("Content-Range", ""))
        if first != have:
            raise _Retryable(f"server resumed at byte {first}, expected {have}")
        if total is None and size is not None:
            total = have + size
        return have, total
    # 200: the server ignored Range (or we asked for none); start from zero.
    return 0, size


def _receive(response: http.client.HTTPResponse, part: Path, start: int, total: int | None) -> None:
    """Copy the body into `part` at `start`; a short body means a dropped connection."""
    mode = "r+b" if start else "wb"
    with open(part, mode) as out:
        out.seek(start)
        out.truncate()
        while chunk := response.read(CHUNK):
            out.write(chunk)
        size = out.tell()
    if total is not None and size < total:
        raise _Retryable(f"connection dropped after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise _Retryable(f"got {size} bytes, more than the {total} announced; starting over")


def _on_http_error(exc: urllib.error.HTTPError, url: str, part: Path, have: int) -> None:
    """Sort an HTTP error into: already complete, retry, or give up now."""
    exc.close()
    if exc.code == 416:
        _, total = _content_range(exc.headers.get("Content-Range", ""))
        if total == have:
            return  # the .part file already holds the whole file
        part.unlink(missing_ok=True)
        raise _Retryable(f"range not satisfiable at byte {have}; starting over")
    if exc.code in RETRYABLE_STATUS:
        raise _Retryable(f"HTTP {exc.code} {exc.reason}")
    raise UserError(
        f"could not download {url}",
        f"the server answered HTTP {exc.code} {exc.reason}",
        "check the dataset name and the base URL (env EVOLVE_DATA_BASE_URL), then run again",
    )


def _content_range(value: str) -> tuple[int | None, int | None]:
    """Parse `bytes 100-199/200` or `bytes */200` into (first byte, total size)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)
