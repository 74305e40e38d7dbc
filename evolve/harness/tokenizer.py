"""Turn corpus bytes into token ids: `byte` (built in) or `bpe-<N>` (optional).

Bits per byte stays exact for both: a byte token is one byte, and a BPE token's
byte length is recorded in a `token_bytes` table that the evaluator uses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evolve.durable import atomic_write_bytes
from evolve.errors import UserError

BPE_MIN_VOCAB = 257  # the 256 single bytes plus at least one merge
BPE_MAX_VOCAB = 1 << 16  # ids are stored as uint16
ENCODE_CHUNK = 1 << 20  # encode this many bytes per batch item, cut at a newline


@dataclass(frozen=True)
class Encoded:
    """Token ids for both splits, plus what is needed to score them in bits per byte."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    token_bytes: np.ndarray | None  # int32 bytes per token id; None: every token is 1 byte
    tokenizer_json: str | None  # the trained BPE, for humans and later decoding


def check_name(name: str) -> int | None:
    """Validate a tokenizer name; return the BPE vocab size, or None for `byte`."""
    if name == "byte":
        return None
    match = re.fullmatch(r"bpe-(\d+)", name)
    if not match:
        raise UserError(
            f"unknown tokenizer {name!r}",
            "the tokenizer is either 'byte' or 'bpe-<vocab size>'",
            "use --tokenizer byte, or e.g. --tokenizer bpe-4096",
        )
    vocab = int(match.group(1))
    if not BPE_MIN_VOCAB <= vocab <= BPE_MAX_VOCAB:
        raise UserError(
            f"tokenizer {name!r} has an unusable vocab size",
            f"a BPE vocab must be between {BPE_MIN_VOCAB} and {BPE_MAX_VOCAB}",
            "pick a size such as bpe-4096 or bpe-8192",
        )
    return vocab


def encode(name: str, train: bytes, val: bytes, cache_dir: Path) -> Encoded:
    """Tokenize both splits; a BPE is trained on `train` only (cached in `cache_dir`)."""
    vocab = check_name(name)
    if vocab is None:
        return Encoded(_bytes_ids(train), _bytes_ids(val), 256, None, None)
    return _encode_bpe(vocab, train, val, Path(cache_dir))


def _bytes_ids(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _require_tokenizers():
    """Import the optional `tokenizers` package or explain how to get it."""
    try:
        import tokenizers
    except ImportError as exc:
        raise UserError(
            "the BPE tokenizer needs the 'tokenizers' package",
            "it is an optional dependency and is not installed",
            "run `pip install -e .[bpe]`, or use --tokenizer byte",
        ) from exc
    return tokenizers


def _encode_bpe(vocab: int, train: bytes, val: bytes, cache_dir: Path) -> Encoded:
    tok = _load_or_train_bpe(vocab, train, cache_dir)
    size = tok.get_vocab_size()
    return Encoded(
        train=_bpe_ids(tok, train),
        val=_bpe_ids(tok, val),
        vocab_size=size,
        token_bytes=_bpe_token_bytes(tok, size),
        tokenizer_json=tok.to_str(),
    )


def _load_or_train_bpe(vocab: int, train: bytes, cache_dir: Path):
    """Training takes a while, so a BPE is cached by vocab size and training text."""
    tokenizers = _require_tokenizers()
    key = hashlib.sha256(f"bpe-{vocab}\n{tokenizers.__version__}\n".encode() + train)
    path = cache_dir / "tokenizers" / f"bpe-{vocab}-{key.hexdigest()[:16]}.json"
    if path.exists():
        return tokenizers.Tokenizer.from_file(str(path))
    tok = _train_bpe(tokenizers, vocab, train)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, tok.to_str().encode(), mode=0o600)
    return tok


def _train_bpe(tokenizers, vocab: int, train: bytes):
    """Byte-level BPE (GPT-2 style): every byte is in the alphabet, so encoding is lossless."""
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = byte_level
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_text_chunks(train), trainer=trainer)
    return tok


def _text_chunks(data: bytes) -> list[str]:
    """Split text at newlines into ~1 MiB pieces so encoding can run in parallel."""
    pieces, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + ENCODE_CHUNK)
        end = len(data) if end == -1 else end + 1
        pieces.append(data[start:end].decode("utf-8", errors="replace"))
        start = end
    return pieces


def _bpe_ids(tok, data: bytes) -> np.ndarray:
    encodings = tok.encode_batch(_text_chunks(data), add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.uint16) for e in encodings]
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint16)


def _bpe_token_bytes(tok, size: int) -> np.ndarray:
    """Bytes per token id: each ByteLevel symbol stands for exactly one byte."""
    alphabet = set(_require_tokenizers().pre_tokenizers.ByteLevel.alphabet())
    lengths = np.zeros(size, dtype=np.int32)
    for token_id in range(size):
        token = tok.id_to_token(token_id) or ""
        assert set(token) <= alphabet, f"token {token_id} is not byte-level: {token!r}"
        lengths[token_id] = len(token)
    return lengths
