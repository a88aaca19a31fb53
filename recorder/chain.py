"""Snapshot bodies stored as chains: a full body, then deltas against the previous.

Consecutive status bodies differ in a few numbers and items, so each body is
stored as a zstd delta against the one stored just before it, and every
``CHAIN_LENGTH`` bodies a full one starts a new chain. Reading a body decodes
its chain forward from the nearest full body (or the nearest body still in
the cache); a delta decodes in about a tenth of a millisecond, so even the
longest chain reads back in a few milliseconds.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from recorder import codec
from recorder.models import Snapshot

# A new full body every this many snapshots of a source (an hour at 30 s).
CHAIN_LENGTH = 120


class BodyCache:
    """The most recently read or written bodies, by sha256.

    Keyed by content, not by row id, so that it stays right across databases.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self.bodies: OrderedDict[str, bytes] = OrderedDict()

    def get(self, sha256: str) -> bytes | None:
        body = self.bodies.get(sha256)
        if body is not None:
            self.bodies.move_to_end(sha256)
        return body

    def put(self, sha256: str, body: bytes) -> None:
        self.bodies[sha256] = body
        self.bodies.move_to_end(sha256)
        while len(self.bodies) > self.size:
            self.bodies.popitem(last=False)


body_cache = BodyCache()
_TABLE = Snapshot.__table__.c
# Built once: building it costs more than running it.
_RECENT = (
    select(_TABLE.id, _TABLE.encoding, _TABLE.sha256)
    .where(_TABLE.source_id == bindparam("source_id"))
    .order_by(_TABLE.id.desc())
    .limit(CHAIN_LENGTH)
)
_compressor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zuul-status-zstd")


def encode_in_background(
    session: Session, source_id: int, body: bytes, sha: str
) -> Future[dict]:
    """Encoding, base and stored bytes for a new body of ``source_id``.

    The database is read here; the compression itself runs in a worker
    thread, and the returned future gives the ``Snapshot`` column values.
    """
    recent = session.connection().execute(_RECENT, {"source_id": source_id}).all()
    fulls = [i for i, row in enumerate(recent) if row.encoding == codec.FULL]
    if not fulls or fulls[0] + 1 >= CHAIN_LENGTH:
        base_id, base = None, None
    else:
        base_id = recent[0].id
        base = body_cache.get(recent[0].sha256)
        if base is None:
            base = read_body(session, session.get(Snapshot, base_id))
    body_cache.put(sha, body)
    return _compressor.submit(_encode, body, base_id, base)


def _encode(body: bytes, base_id: int | None, base: bytes | None) -> dict:
    if base is None:
        full = codec.compress_full(body)
        return {"encoding": codec.FULL, "base_id": None, "body": full}
    delta = codec.compress_delta(body, base)
    return {"encoding": codec.DELTA, "base_id": base_id, "body": delta}


def read_body(session: Session, snapshot: Snapshot) -> bytes:
    """The body of a snapshot, byte for byte as it was received."""
    cached = body_cache.get(snapshot.sha256)
    if cached is not None:
        return cached
    links = _chain(session, snapshot)
    body = body_before = None
    for link in links:
        body = body_cache.get(link.sha256)
        if body is None:
            body = codec.decompress(link.encoding, link.body, body_before)
        body_before = body
    if codec.sha256_hex(body) != snapshot.sha256:
        raise ValueError(f"snapshot {snapshot.id}: body does not match its sha256")
    body_cache.put(snapshot.sha256, body)
    return body


def _chain(session: Session, snapshot: Snapshot) -> list:
    """The rows to decode, oldest first: from a full or cached body to ``snapshot``."""
    if snapshot.encoding == codec.FULL:
        return [snapshot]
    # The nearest full body before: at most CHAIN_LENGTH rows back on the index.
    start = session.scalar(
        select(Snapshot.id)
        .where(
            Snapshot.source_id == snapshot.source_id,
            Snapshot.id < snapshot.id,
            Snapshot.encoding == codec.FULL,
        )
        .order_by(Snapshot.id.desc())
        .limit(1)
    )
    rows = {
        row.id: row
        for row in session.execute(
            select(
                Snapshot.id,
                Snapshot.base_id,
                Snapshot.encoding,
                Snapshot.body,
                Snapshot.sha256,
            ).where(
                Snapshot.source_id == snapshot.source_id,
                Snapshot.id >= (start or 0),
                Snapshot.id < snapshot.id,
            )
        )
    }
    links, base_id = [snapshot], snapshot.base_id
    while base_id is not None:
        link = rows.get(base_id)
        if link is None:
            raise ValueError(
                f"snapshot {snapshot.id}: its chain lacks snapshot {base_id}"
            )
        links.append(link)
        if link.encoding == codec.FULL or body_cache.get(link.sha256) is not None:
            break
        base_id = link.base_id
    return links[::-1]
