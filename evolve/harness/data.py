"""Prepare a corpus once: split it, tokenize it, cache it under a content fingerprint.

`prepare(spec)` turns a spec (builtin, a file, a folder, a named download) into
`train.npy`, `val.npy` and `test.npy` in `<cache>/<fingerprint>/`: the held-out
text is cut in two, a validation half that scores every evaluation (selection)
and a sealed test half that only scores what a search reports. Every file is written to a
temporary name and renamed into place, `meta.json` last, so a prepare killed
half way never leaves something that a later call trusts. A small index in
`<cache>/sources/` maps a cheap description of the source (paths, sizes, mtimes,
Python version) to its fingerprint, so a repeated `prepare` only reads JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import platformdirs

from evolve.durable import atomic_write
from evolve.errors import UserError
from evolve.harness import tokenizer as tokenizing
from evolve.harness.download import download

FORMAT = 2  # bump when the corpus recipe or the cache layout changes
BUILTIN_CAP = 8 << 20  # builtin corpus: stop adding stdlib files at 8 MiB
# builtin held-out text: the start of the stdlib's own test suite, a folder that no
# training code imports, so the sandbox can seal it (see Dataset.sealed). 16 MiB: the
# evaluator scores windows at secret offsets of it, a pool far larger than a genome
# (64 KiB of source by default) can carry.
BUILTIN_HELDOUT_DIR = "test"
BUILTIN_HELDOUT_CAP = 16 << 20
BUILTIN_HELDOUT_MIN = 2 << 20  # a test suite smaller than this: hold out the corpus's tail
TEST_FRACTION = 0.5  # of the held-out tokens: the sealed test split (the tail); the rest is val
BUILTIN_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "__pycache__",
}
VAL_FRACTION = 0.10  # held-out split: the last 10% of the corpus bytes...
VAL_MIN = 64 << 10  # ...but at least 64 KiB when the corpus is big enough...
VAL_FLOOR = 4 << 10  # ...and never less than 4 KiB, or the corpus is refused
SNAP_WINDOW = 4 << 10  # move the split back to a line start within this many bytes
DOC_SEP = b"\n\n"  # between documents (parquet rows)
TEXT_COLUMN = "text"

TINYSTORIES_BASE = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
TINYSTORIES_FILE = "TinyStoriesV2-GPT4-valid.txt"
CLIMBMIX_BASE = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # the last shard, pinned as validation (as in autoresearch)
CLIMBMIX_DEFAULT_SHARDS = 1


@dataclass(frozen=True)
class Dataset:
    """A prepared corpus: token ids on disk, ready for np.load(mmap_mode="r")."""

    name: str  # human label, e.g. "builtin:stdlib", "tinyshakespeare.txt"
    fingerprint: str  # 16 hex chars; sha256 of tokenizer name + train, val and test ids
    tokenizer: str  # "byte" (vocab 256) or "bpe-<vocab>"
    vocab_size: int
    train_path: Path  # .npy, 1-D uint8/uint16 token ids
    val_path: Path  # .npy, held-out split that scores every evaluation, never shown to a genome
    token_bytes_path: Path | None  # .npy int32 bytes per token id (None: 1 byte each)
    # Paths a genome must not read because they hold the held-out text: the source
    # files, val.npy and test.npy. The sandbox cuts them out of whatever it lets the genome read.
    sealed: tuple[str, ...] = ()
    # .npy, the other part of the held-out text: it never takes part in selection, only
    # scores what a search reports (RunSettings.split = "test").
    test_path: Path | None = None


@dataclass(frozen=True)
class _Source:
    """Where a corpus comes from: a label, a cheap identity, and how to read it."""

    name: str
    identity: dict[str, Any]  # JSON-able; equal identities mean equal corpora
    load: Callable[[], tuple[bytes, bytes]]  # -> (train text, val text)
    sealed: tuple[str, ...] = ()  # where the held-out text can be read from


def default_cache_dir() -> Path:
    """Where prepared data lives: $EVOLVE_CACHE_DIR, else the user cache dir + /data."""
    override = os.environ.get("EVOLVE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("evolve")) / "data"


def prepare(
    spec: str = "builtin", cache_dir: Path | None = None, tokenizer: str = "byte"
) -> Dataset:
    """Make `spec` ready for training and evaluation; cheap when already prepared."""
    tokenizing.check_name(tokenizer)
    # Absolute, because genomes and the evaluator run in other working directories.
    cache = Path(cache_dir or default_cache_dir()).expanduser().resolve()
    source = _resolve(spec, cache)
    index = cache / "sources" / f"{_source_key(source, tokenizer)}.json"
    entry = _read_json(index)
    meta = _complete(cache / str(entry.get("fingerprint", ""))) if entry else None
    if meta is None:
        meta = _build(cache, spec, source, tokenizer)
        _write_atomic(index, _json_writer({"fingerprint": meta["fingerprint"]}))
    return _dataset(cache / meta["fingerprint"], meta, source)


def _build(cache: Path, spec: str, source: _Source, tokenizer: str) -> dict[str, Any]:
    """Read, split and tokenize the source; store it unless that content is already there."""
    train, heldout = source.load()
    encoded = tokenizing.encode(tokenizer, train, heldout, cache)
    val, test = split_heldout(encoded.val)
    fingerprint = _fingerprint(tokenizer, encoded.train, val, test)
    meta = _complete(cache / fingerprint)
    if meta is None:
        meta = _meta(spec, source, tokenizer, fingerprint, encoded, len(train), len(heldout))
        meta |= {"val_tokens": int(val.size), "test_tokens": int(test.size)}
        _store(cache / fingerprint, encoded, meta, val, test)
    return meta


def split_heldout(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The held-out token ids cut in two: validation (the head) and the sealed test split."""
    cut = len(ids) - int(len(ids) * TEST_FRACTION)
    return ids[:cut], ids[cut:]


# ---------------------------------------------------------------------------
# Specs


def _resolve(spec: str, cache: Path) -> _Source:
    """Map a spec string to a source; bad specs become a UserError here."""
    if spec == "builtin":
        return _builtin_source()
    if spec == "tinystories":
        return _tinystories_source(cache)
    if spec == "climbmix" or spec.startswith("climbmix:"):
        return _climbmix_source(spec, cache)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_source(path)
    if not path.is_file():
        raise UserError(
            f"no such data: {spec}",
            "it is not a file, a folder, or a known dataset name",
            "pass builtin, tinystories, climbmix[:N], a .txt or .parquet file, or a folder of them",
        )
    if path.suffix not in (".txt", ".parquet"):
        raise UserError(
            f"cannot read {path.name}: unknown file type {path.suffix or '(none)'}",
            "only .txt files and .parquet files with a 'text' column are understood",
            "convert the corpus to plain text (.txt) or to parquet with a 'text' column",
        )
    return _Source(
        path.name,
        _files_identity("file", path, [path]),
        lambda: _split(_read(path)),
        sealed=(str(path.resolve()),),
    )


def _files_identity(kind: str, root: Path, files: list[Path]) -> dict[str, Any]:
    """Local files are identified by path, size and mtime: a stat, not a read."""
    stats = [(str(f.relative_to(root)) if f != root else f.name, f.stat()) for f in files]
    return {
        "kind": kind,
        "path": str(root.resolve()),
        "files": [[rel, st.st_size, st.st_mtime_ns] for rel, st in stats],
    }


def _folder_source(folder: Path) -> _Source:
    files = sorted(
        (p for p in folder.rglob("*") if _is_corpus_file(p, folder)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise UserError(
            f"empty corpus: no .txt or .parquet files in {folder}",
            "a folder spec uses the .txt and .parquet files inside it (recursively)",
            "point at a folder that holds text, or at a single file",
        )

    def load() -> tuple[bytes, bytes]:
        return _split(_concat(_read(f) for f in files))

    return _Source(
        f"{folder.name}/",
        _files_identity("folder", folder, files),
        load,
        sealed=(str(folder.resolve()),),
    )


def _is_corpus_file(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix in (".txt", ".parquet") and path.is_file()


def _read(path: Path) -> bytes:
    return _read_parquet(path) if path.suffix == ".parquet" else path.read_bytes()


def _read_parquet(path: Path) -> bytes:
    """The `text` column of a parquet file, one document after another."""
    import pyarrow as pa  # imported here: it is slow to import and only parquet needs it
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        if TEXT_COLUMN not in schema.names:
            raise UserError(
                f"{path.name} has no '{TEXT_COLUMN}' column",
                f"its columns are: {', '.join(schema.names) or '(none)'}",
                f"rename the column that holds the text to '{TEXT_COLUMN}'",
            )
        kind = schema.field(TEXT_COLUMN).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise UserError(
                f"the '{TEXT_COLUMN}' column of {path.name} is {kind}, not text",
                "documents must be strings",
                f"store the documents as strings in the '{TEXT_COLUMN}' column",
            )
        column = pq.read_table(path, columns=[TEXT_COLUMN]).column(TEXT_COLUMN)
    except pa.ArrowException as exc:
        raise UserError(f"cannot read {path}", str(exc), "check that it is a parquet file") from exc
    docs = [doc for doc in column.to_pylist() if doc]
    return DOC_SEP.join(doc.encode("utf-8") for doc in docs)


def _concat(pieces) -> bytes:
    """Join files end to end, each ending in a newline so files never run together."""
    out = []
    for piece in pieces:
        if piece:
            out.append(piece if piece.endswith(b"\n") else piece + b"\n")
    return b"".join(out)


# ---------------------------------------------------------------------------
# builtin: the standard library's own sources, so a fresh install works offline


def _builtin_source() -> _Source:
    """Train on the stdlib's modules; hold out the start of its test suite, which the
    sandbox seals. An interpreter shipped without its tests holds out the corpus's
    tail instead, which a genome could read (the stdlib must stay importable)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    heldout = stdlib / BUILTIN_HELDOUT_DIR
    identity = {"kind": "builtin", "stdlib": str(stdlib), "python": sys.version, "cap": BUILTIN_CAP}
    if sum(path.stat().st_size for _, path in _stdlib_files(heldout)) < BUILTIN_HELDOUT_MIN:
        return _Source("builtin:stdlib", identity, lambda: _split(builtin_corpus(stdlib)))

    def load() -> tuple[bytes, bytes]:
        return builtin_corpus(stdlib), builtin_corpus(heldout, BUILTIN_HELDOUT_CAP)

    identity |= {"heldout": BUILTIN_HELDOUT_DIR, "heldout_cap": BUILTIN_HELDOUT_CAP}
    return _Source("builtin:stdlib", identity, load, sealed=(str(heldout),))


def builtin_corpus(stdlib: Path, cap: int = BUILTIN_CAP) -> bytes:
    """Stdlib .py files in sorted order, each under a `# file: <path>` line, up to `cap` bytes."""
    pieces, total = [], 0
    for rel, path in _stdlib_files(stdlib):
        body = path.read_bytes()
        piece = f"# file: {rel}\n".encode() + body + (b"" if body.endswith(b"\n") else b"\n")
        if total + len(piece) > cap:
            break
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def _stdlib_files(stdlib: Path) -> list[tuple[str, Path]]:
    """Relative posix path and full path of each stdlib .py file, tests and the like left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in BUILTIN_SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath, name)
                found.append((path.relative_to(stdlib).as_posix(), path))
    return sorted(found)


# ---------------------------------------------------------------------------
# Named downloads


def _base_url(default: str) -> str:
    """Tests and mirrors point every named download at another server with one variable."""
    return os.environ.get("EVOLVE_DATA_BASE_URL", default).rstrip("/")


def _tinystories_source(cache: Path) -> _Source:
    url = f"{_base_url(TINYSTORIES_BASE)}/{TINYSTORIES_FILE}"
    dest = cache / "downloads" / "tinystories" / TINYSTORIES_FILE

    def load() -> tuple[bytes, bytes]:
        return _split(download(url, dest).read_bytes())

    return _Source("tinystories", {"kind": "tinystories", "url": url}, load)


def _climbmix_source(spec: str, cache: Path) -> _Source:
    """`climbmix[:N]`: N train shards from the start, the pinned last shard as validation."""
    count = _shard_count(spec)
    base = _base_url(CLIMBMIX_BASE)
    folder = cache / "downloads" / "climbmix"

    def fetch(index: int) -> Path:
        name = f"shard_{index:05d}.parquet"
        return download(f"{base}/{name}", folder / name)

    def load() -> tuple[bytes, bytes]:
        train = DOC_SEP.join(_read_parquet(fetch(i)) for i in range(count))
        val = _read_parquet(fetch(CLIMBMIX_VAL_SHARD))
        _check_split(len(train) + len(val), train, val)
        return train, val

    identity = {
        "kind": "climbmix",
        "base": base,
        "train_shards": count,
        "val_shard": CLIMBMIX_VAL_SHARD,
    }
    return _Source("climbmix" if count == 1 else f"climbmix:{count}", identity, load)


def _shard_count(spec: str) -> int:
    text = spec.partition(":")[2] or str(CLIMBMIX_DEFAULT_SHARDS)
    if not text.isdigit() or not 1 <= int(text) <= CLIMBMIX_VAL_SHARD:
        raise UserError(
            f"bad climbmix shard count in {spec!r}",
            f"the number after 'climbmix:' is how many train shards to fetch (1..{CLIMBMIX_VAL_SHARD})",
            "use climbmix (one shard) or e.g. climbmix:4",
        )
    return int(text)


# ---------------------------------------------------------------------------
# Split


def _split(corpus: bytes) -> tuple[bytes, bytes]:
    """Hold out the tail: 10% of the bytes (64 KiB at least, half at most), cut at a line."""
    n = len(corpus)
    val_len = min(max(int(n * VAL_FRACTION), VAL_MIN), n // 2)
    cut = _snap(corpus, n - val_len)
    train, val = corpus[:cut], corpus[cut:]
    _check_split(n, train, val)
    return train, val


def _snap(corpus: bytes, cut: int) -> int:
    """Move the cut back to a line start nearby, else forward off a UTF-8 continuation byte."""
    newline = corpus.rfind(b"\n", max(0, cut - SNAP_WINDOW), cut)
    if newline != -1:
        return newline + 1
    while cut < len(corpus) and corpus[cut] & 0xC0 == 0x80:
        cut += 1
    return cut


def _check_split(total: int, train: bytes, val: bytes) -> None:
    if total == 0:
        raise UserError(
            "empty corpus: there is no text to train on",
            "the files (or the parquet 'text' column) hold no bytes",
            "point at a corpus with text in it, or use builtin",
        )
    if len(val) < VAL_FLOOR or not train:
        raise UserError(
            f"corpus too small: {total} bytes",
            f"the held-out split would be {len(val)} bytes; it needs at least {VAL_FLOOR} "
            f"bytes, so the corpus needs at least {2 * VAL_FLOOR} bytes",
            "use a bigger corpus, or builtin",
        )


# ---------------------------------------------------------------------------
# Cache


def _source_key(source: _Source, tokenizer: str) -> str:
    text = json.dumps([FORMAT, tokenizer, source.identity], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from disk, or None when it is missing or not readable as one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _complete(folder: Path) -> dict[str, Any] | None:
    """The meta of a fully written prepared folder, else None (then it is rebuilt)."""
    meta = _read_json(folder / "meta.json")
    if meta is None or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        return None
    for file, size in meta["files"].items():
        path = folder / file
        if not path.is_file() or path.stat().st_size != size:
            return None
    return meta


def _fingerprint(tokenizer: str, *splits: np.ndarray) -> str:
    digest = hashlib.sha256(tokenizer.encode() + b"\n")
    for ids in splits:
        data = np.ascontiguousarray(ids)
        digest.update(f"{data.dtype.str}:{data.size}\n".encode())
        digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()[:16]


def _meta(
    spec: str,
    source: _Source,
    tokenizer: str,
    fingerprint: str,
    encoded: tokenizing.Encoded,
    train_bytes: int,
    heldout_bytes: int,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": source.name,
        "spec": spec,
        "source": source.identity,
        "fingerprint": fingerprint,
        "tokenizer": tokenizer,
        "vocab_size": encoded.vocab_size,
        "train_tokens": int(encoded.train.size),
        "val_tokens": int(encoded.val.size),
        "train_bytes": train_bytes,
        "heldout_bytes": heldout_bytes,  # val and test together
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {},
    }


def _store(
    folder: Path,
    encoded: tokenizing.Encoded,
    meta: dict[str, Any],
    val: np.ndarray,
    test: np.ndarray,
) -> None:
    """Write the arrays, then meta.json (listing their sizes) as the completion mark."""
    arrays = {"train.npy": encoded.train, "val.npy": val, "test.npy": test}
    if encoded.token_bytes is not None:
        arrays["token_bytes.npy"] = encoded.token_bytes
    for file, array in arrays.items():
        _write_atomic(folder / file, lambda f, a=array: np.save(f, a, allow_pickle=False))
        meta["files"][file] = (folder / file).stat().st_size
    if encoded.tokenizer_json is not None:
        text = encoded.tokenizer_json.encode()
        _write_atomic(folder / "tokenizer.json", lambda f: f.write(text))
        meta["files"]["tokenizer.json"] = len(text)
    _write_atomic(folder / "meta.json", _json_writer(meta))


def _dataset(folder: Path, meta: dict[str, Any], source: _Source) -> Dataset:
    token_bytes = folder / "token_bytes.npy"
    return Dataset(
        name=source.name,
        sealed=(*source.sealed, str(folder / "val.npy"), str(folder / "test.npy")),
        fingerprint=meta["fingerprint"],
        tokenizer=meta["tokenizer"],
        vocab_size=meta["vocab_size"],
        train_path=folder / "train.npy",
        val_path=folder / "val.npy",
        token_bytes_path=token_bytes if "token_bytes.npy" in meta["files"] else None,
        test_path=folder / "test.npy",
    )


def _json_writer(obj: Any) -> Callable[[BinaryIO], Any]:
    text = json.dumps(obj, indent=2, sort_keys=True).encode()
    return lambda f: f.write(text)


def _write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`atomic_write` into a folder made on demand; readable by this user only, since
    the folder holds the held-out splits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, mode=0o600)
