"""Compression of snapshot bodies: whole bodies, and deltas against a base body."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import zstandard

FULL = "zstd"
DELTA = "zstd-delta"
# A full body starts each chain (one in a hundred or so), so it can afford a
# higher level; a delta against the previous body is as small at level 3 as at
# 6 (consecutive bodies share nearly everything) and takes a third less time.
FULL_LEVEL = 9
DELTA_LEVEL = 3
# zstd frames say how large their content is; refuse to inflate anything
# that claims more than this, whatever the database holds.
MAX_BODY_BYTES = 512 * 1024 * 1024


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def compress_full(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=FULL_LEVEL).compress(body)


def compress_delta(body: bytes, base: bytes) -> bytes:
    """Compress ``body`` with ``base`` as a raw-content prefix dictionary."""
    return _delta_compressor(base).compress(body)


def decompress(encoding: str, data: bytes, base: bytes | None = None) -> bytes:
    """The original bytes of a body stored with ``encoding``."""
    if encoding == FULL:
        return zstandard.ZstdDecompressor().decompress(
            data, max_output_size=MAX_BODY_BYTES
        )
    if encoding == DELTA:
        if base is None:
            raise ValueError("a delta body needs its base body to be read")
        dictionary = zstandard.ZstdCompressionDict(
            base, dict_type=zstandard.DICT_TYPE_RAWCONTENT
        )
        return zstandard.ZstdDecompressor(dict_data=dictionary).decompress(
            data, max_output_size=MAX_BODY_BYTES
        )
    raise ValueError(f"unknown body encoding {encoding!r}")


@lru_cache(maxsize=2)
def _delta_compressor(base: bytes) -> zstandard.ZstdCompressor:
    # Building the compressor digests the whole base; consecutive snapshots
    # share a base, so the last couple are kept.
    dictionary = zstandard.ZstdCompressionDict(
        base, dict_type=zstandard.DICT_TYPE_RAWCONTENT
    )
    return zstandard.ZstdCompressor(level=DELTA_LEVEL, dict_data=dictionary)
