"""prepare(): every kind of spec on real files, named downloads through a local server."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sysconfig
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evolve.errors import UserError
from evolve.harness.data import (
    BUILTIN_CAP,
    BUILTIN_HELDOUT_CAP,
    DOC_SEP,
    Dataset,
    builtin_corpus,
    default_cache_dir,
    prepare,
)

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"
HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache through the environment, as a user would set it."""
    path = tmp_path / "cache"
    monkeypatch.setenv("EVOLVE_CACHE_DIR", str(path))
    monkeypatch.delenv("EVOLVE_DATA_BASE_URL", raising=False)
    return path


def text(n: int, seed: int = 0) -> bytes:
    """`n` bytes of line-structured text, different for each seed."""
    words = [b"alpha", b"beta", b"gamma", b"delta", b"\xc3\xa9t\xc3\xa9", b"zeta"]
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < n:
        line = b" ".join(words[i] for i in rng.integers(0, len(words), 12)) + b"\n"
        lines.append(line)
        size += len(line)
    return b"".join(lines)[:n]


def lines(n: int, seed: int = 0) -> bytes:
    """Like text(), cut back to whole lines."""
    return text(n, seed).rpartition(b"\n")[0] + b"\n"


def load(ds: Dataset) -> tuple[bytes, bytes]:
    """The train split and the held-out text (the val split, then the sealed test split)."""
    train = np.load(ds.train_path, mmap_mode="r")
    val = np.load(ds.val_path, mmap_mode="r")
    test = np.load(ds.test_path, mmap_mode="r")
    assert train.dtype == np.uint8 and val.dtype == np.uint8 and test.dtype == np.uint8
    assert abs(len(val) - len(test)) <= 1 and str(ds.test_path) in ds.sealed
    return bytes(train), bytes(val) + bytes(test)


def write_parquet(path: Path, docs: list, column: str = "text") -> None:
    pq.write_table(pa.table({column: docs}), path)


# ---------------------------------------------------------------------------
# builtin


def test_builtin_is_deterministic_and_holds_out_the_stdlib_tests(tmp_path, cache):
    ds = prepare("builtin")
    again = prepare("builtin", cache_dir=tmp_path / "other-cache")
    assert ds.fingerprint == again.fingerprint and len(ds.fingerprint) == 16
    assert (ds.name, ds.tokenizer, ds.vocab_size, ds.token_bytes_path) == (
        "builtin:stdlib",
        "byte",
        256,
        None,
    )
    train, val = load(ds)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = builtin_corpus(stdlib)
    heldout = stdlib / "test"
    if str(heldout) in ds.sealed:  # the interpreter ships its test suite: hold out its start
        assert train == corpus and val == builtin_corpus(heldout, BUILTIN_HELDOUT_CAP)
        assert val.startswith(b"# file: __init__.py\n") and len(val) > BUILTIN_HELDOUT_CAP // 2
    else:  # the corpus's tail instead
        assert train + val == corpus and 0.09 < len(val) / len(corpus) < 0.11
    assert str(ds.val_path) in ds.sealed
    assert len(corpus) <= BUILTIN_CAP and len(corpus) > BUILTIN_CAP - (1 << 20)
    assert train.startswith(b"# file: __future__.py\n") and train.endswith(b"\n")
    headers = re.findall(rb"^# file: (\S+)$", corpus, re.M)
    assert headers == sorted(headers) and len(headers) > 100
    skipped = {b"test", b"tests", b"idlelib", b"lib2to3", b"site-packages"}
    assert not any(skipped & set(h.split(b"/")) for h in headers)
    assert ds.train_path.parent == cache / ds.fingerprint


def test_builtin_second_call_is_cached_and_fast(cache):
    first = prepare("builtin")
    mtime = first.train_path.stat().st_mtime_ns
    start = time.perf_counter()
    second = prepare("builtin")
    assert time.perf_counter() - start < 0.5
    assert second == first and second.train_path.stat().st_mtime_ns == mtime


def test_damaged_cache_is_rebuilt_not_trusted(cache):
    ds = prepare("builtin")
    good = ds.train_path.read_bytes()
    ds.train_path.write_bytes(good[: len(good) // 2])  # as if killed while writing
    assert prepare("builtin").train_path.read_bytes() == good
    (ds.train_path.parent / "meta.json").unlink()
    assert prepare("builtin").fingerprint == ds.fingerprint
    assert ds.val_path.read_bytes() and (ds.train_path.parent / "meta.json").exists()


def test_default_cache_dir_follows_the_environment(cache, monkeypatch):
    assert default_cache_dir() == cache
    monkeypatch.delenv("EVOLVE_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == ("evolve", "data")


def test_relative_cache_dir_gives_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_bytes(text(20_000))
    ds = prepare("c.txt", cache_dir=Path("rel-cache"))
    assert ds.train_path.is_absolute() and ds.val_path.is_absolute()


# ---------------------------------------------------------------------------
# local files


def test_txt_file(tmp_path):
    data = text(200_000)
    (tmp_path / "corpus.txt").write_bytes(data)
    ds = prepare(str(tmp_path / "corpus.txt"))
    train, val = load(ds)
    assert ds.name == "corpus.txt"
    assert train + val == data
    assert 64 << 10 <= len(val) < (64 << 10) + 4096  # 10% is less than the 64 KiB floor
    assert train.endswith(b"\n")  # the split falls on a line start


def test_big_txt_holds_out_ten_percent(tmp_path):
    data = text(2_000_000)
    (tmp_path / "big.txt").write_bytes(data)
    train, val = load(prepare(str(tmp_path / "big.txt")))
    assert train + val == data
    assert 200_000 <= len(val) < 204_096


def test_small_txt_keeps_half_for_training(tmp_path):
    data = text(20_000)
    (tmp_path / "small.txt").write_bytes(data)
    train, val = load(prepare(str(tmp_path / "small.txt")))
    assert train + val == data and 4096 <= len(val) <= 10_000 + 4096


def test_changed_file_is_prepared_again(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(text(100_000, seed=1))
    first = prepare(str(path))
    path.write_bytes(text(100_000, seed=2))
    second = prepare(str(path))
    assert first.fingerprint != second.fingerprint
    assert b"".join(load(second)) == path.read_bytes()


def test_same_content_under_two_names_shares_a_fingerprint(tmp_path):
    data = text(50_000)
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "b.txt").write_bytes(data)
    a, b = prepare(str(tmp_path / "a.txt")), prepare(str(tmp_path / "b.txt"))
    assert a.fingerprint == b.fingerprint and (a.name, b.name) == ("a.txt", "b.txt")


def test_parquet_file(tmp_path):
    docs = [text(30_000, seed=i).decode() for i in range(4)]
    write_parquet(tmp_path / "docs.parquet", [docs[0], None, docs[1], "", docs[2], docs[3]])
    ds = prepare(str(tmp_path / "docs.parquet"))
    assert ds.name == "docs.parquet"
    assert b"".join(load(ds)) == DOC_SEP.join(d.encode() for d in docs)


def test_folder_of_txt_and_parquet(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "b").mkdir(parents=True)
    a, c, d = lines(40_000, 1), lines(40_000, 2), lines(40_000, 3)
    (folder / "a.txt").write_bytes(a[:-1])  # no final newline: one is added
    (folder / "b" / "c.txt").write_bytes(c)
    write_parquet(folder / "d.parquet", [d.decode()])
    (folder / "README.md").write_text("not corpus")
    (folder / ".hidden.txt").write_text("not corpus either")
    ds = prepare(str(folder))
    assert ds.name == "corpus/"
    assert b"".join(load(ds)) == a + c + d


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not in shared/")
def test_tinyshakespeare():
    ds = prepare(str(SHAKESPEARE))
    train, val = load(ds)
    data = SHAKESPEARE.read_bytes()
    assert ds.name == "tinyshakespeare.txt" and train + val == data
    assert abs(len(val) - len(data) // 10) < 4096
    assert prepare(str(SHAKESPEARE)).fingerprint == ds.fingerprint


# ---------------------------------------------------------------------------
# errors


def user_error(spec: str, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        prepare(spec, **kwargs)
    assert err.value.exit_code == 2 and err.value.what and err.value.fix
    return str(err.value)


def test_missing_file(tmp_path):
    assert "no such data" in user_error(str(tmp_path / "nope.txt"))


def test_unknown_extension(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n" * 10_000)
    assert "unknown file type .csv" in user_error(str(tmp_path / "data.csv"))


def test_empty_txt(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert "empty corpus" in user_error(str(tmp_path / "empty.txt"))


def test_folder_without_corpus_files(tmp_path):
    (tmp_path / "notes.md").write_text("hello")
    assert "empty corpus" in user_error(str(tmp_path))


def test_too_small(tmp_path):
    (tmp_path / "tiny.txt").write_bytes(text(1000))
    message = user_error(str(tmp_path / "tiny.txt"))
    assert "corpus too small: 1000 bytes" in message and "4096" in message


def test_parquet_without_text_column(tmp_path):
    write_parquet(tmp_path / "x.parquet", ["hello"], column="content")
    message = user_error(str(tmp_path / "x.parquet"))
    assert "no 'text' column" in message and "content" in message


def test_parquet_text_column_not_strings(tmp_path):
    write_parquet(tmp_path / "x.parquet", [1, 2, 3])
    assert "not text" in user_error(str(tmp_path / "x.parquet"))


def test_not_really_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"this is not parquet" * 100)
    assert "cannot read" in user_error(str(tmp_path / "x.parquet"))


def test_bad_tokenizer_names(tmp_path):
    assert "unknown tokenizer" in user_error("builtin", tokenizer="wordpiece")
    assert "vocab size" in user_error("builtin", tokenizer="bpe-10")


def test_bad_climbmix_count():
    assert "shard count" in user_error("climbmix:zero")
    assert "shard count" in user_error("climbmix:0")


@pytest.mark.skipif(HAVE_TOKENIZERS, reason="tokenizers is installed")
def test_bpe_without_tokenizers_says_how_to_install(tmp_path):
    (tmp_path / "c.txt").write_bytes(text(50_000))
    assert "pip install -e .[bpe]" in user_error(str(tmp_path / "c.txt"), tokenizer="bpe-300")


# ---------------------------------------------------------------------------
# BPE (optional dependency)


@pytest.mark.skipif(
    not HAVE_TOKENIZERS, reason="tokenizers is not installed (pip install -e .[bpe])"
)
def test_bpe_counts_bytes_exactly(tmp_path, cache):
    import tokenizers

    data = text(200_000)
    (tmp_path / "c.txt").write_bytes(data)
    ds = prepare(str(tmp_path / "c.txt"), tokenizer="bpe-300")
    assert ds.tokenizer == "bpe-300" and 256 < ds.vocab_size <= 300
    train = np.load(ds.train_path)
    val = np.concatenate([np.load(ds.val_path), np.load(ds.test_path)])  # all held out
    token_bytes = np.load(ds.token_bytes_path)
    assert train.dtype == np.uint16 and token_bytes.dtype == np.int32
    assert token_bytes.shape == (ds.vocab_size,) and int(train.max()) < ds.vocab_size
    assert int(token_bytes[train].sum()) + int(token_bytes[val].sum()) == len(data)
    assert len(train) + len(val) < len(data)  # merges happened
    tok = tokenizers.Tokenizer.from_file(str(ds.train_path.parent / "tokenizer.json"))
    assert (tok.decode(train.tolist()) + tok.decode(val.tolist())).encode() == data
    assert list((cache / "tokenizers").glob("bpe-300-*.json"))
    assert prepare(str(tmp_path / "c.txt"), tokenizer="bpe-300") == ds


# ---------------------------------------------------------------------------
# named downloads, served from a folder on 127.0.0.1


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A plain static file server standing in for the dataset host."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    monkeypatch.setenv("EVOLVE_DATA_BASE_URL", f"http://127.0.0.1:{srv.server_address[1]}/")
    yield root
    srv.shutdown()
    srv.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Keep test output quiet."""


def test_tinystories(mirror, cache):
    data = text(300_000)
    (mirror / "TinyStoriesV2-GPT4-valid.txt").write_bytes(data)
    ds = prepare("tinystories")
    assert ds.name == "tinystories" and b"".join(load(ds)) == data
    assert (cache / "downloads" / "tinystories" / "TinyStoriesV2-GPT4-valid.txt").exists()
    (mirror / "TinyStoriesV2-GPT4-valid.txt").unlink()  # prepared: no network needed now
    assert prepare("tinystories") == ds


def test_climbmix(mirror):
    shards = {i: [text(20_000, seed=10 * i + j).decode() for j in range(3)] for i in (0, 1, 6542)}
    for i, docs in shards.items():
        write_parquet(mirror / f"shard_{i:05d}.parquet", docs)
    joined = {i: DOC_SEP.join(d.encode() for d in docs) for i, docs in shards.items()}

    one = prepare("climbmix")
    assert one.name == "climbmix" and load(one) == (joined[0], joined[6542])
    two = prepare("climbmix:2")
    assert two.name == "climbmix:2"
    assert load(two) == (joined[0] + DOC_SEP + joined[1], joined[6542])
    assert json.loads((two.train_path.parent / "meta.json").read_text())["heldout_bytes"] == len(
        joined[6542]
    )


def test_climbmix_missing_shard_is_a_user_error(mirror):
    write_parquet(mirror / "shard_00000.parquet", [text(20_000).decode()])
    message = user_error("climbmix")
    assert "shard_06542.parquet" in message and "404" in message
