"""Export files in a NATS JetStream object store, written and read a chunk at a time.

nats-py's ``ObjectStore.put`` reads a whole file object and ``get`` gathers the whole object in memory;
these write and read the same wire layout (128 KiB chunks on ``$O.<bucket>.C.<nuid>``, then the
object's metadata with its SHA-256 on ``$O.<bucket>.M.<name>``) as data comes and as the client reads,
so a file of any size costs one chunk of memory. Objects stay readable by nats-py and the ``nats``
CLI. The chunk subject is named by the caller (job and attempt), so a writer that died half-way
leaves chunks that the next attempt can purge.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import AsyncIterator

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_DIGEST_TYPE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)

CHUNK_BYTES = 128 * 1024


class ObjectCorrupt(Exception):
    """An object's chunks do not match its metadata (missing chunk or digest mismatch)."""


async def open_store(js: JetStreamContext, bucket: str, replicas: int = 1) -> ObjectStore:
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(
            bucket, config=api.ObjectStoreConfig(description="vlb exports", replicas=replicas)
        )


def chunk_subject(bucket: str, nuid: str) -> str:
    return OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)


class ObjectWriter:
    """``await write(data)`` as data comes, then ``await close()`` (publishes the metadata: the object
    exists from then on) or ``await abort()`` (purges what was written)."""

    def __init__(self, js: JetStreamContext, bucket: str, name: str, nuid: str) -> None:
        self._js = js
        self._bucket = bucket
        self._name = name
        self._nuid = nuid
        self._subject = chunk_subject(bucket, nuid)
        self._pending = bytearray()
        self._digest = hashlib.sha256()
        self.size = 0
        self.chunks = 0

    async def write(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= CHUNK_BYTES:
            await self._publish(bytes(self._pending[:CHUNK_BYTES]))
            del self._pending[:CHUNK_BYTES]

    async def _publish(self, chunk: bytes) -> None:
        await self._js.publish(self._subject, chunk)
        self._digest.update(chunk)
        self.size += len(chunk)
        self.chunks += 1

    async def close(self) -> api.ObjectInfo:
        if self._pending:
            await self._publish(bytes(self._pending))
            self._pending.clear()
        info = api.ObjectInfo(
            name=self._name,
            bucket=self._bucket,
            nuid=self._nuid,
            size=self.size,
            chunks=self.chunks,
            mtime=datetime.datetime.now(datetime.UTC).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(
                digest=base64.urlsafe_b64encode(self._digest.digest()).decode()
            ),
            options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
        )
        meta = OBJ_META_PRE_TEMPLATE.format(
            bucket=self._bucket, obj=base64.urlsafe_b64encode(self._name.encode()).decode()
        )
        await self._js.publish(
            meta, json.dumps(info.as_dict()).encode(), headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT}
        )
        return info

    async def abort(self) -> None:
        await purge_chunks(self._js, self._bucket, self._nuid)


async def purge_chunks(js: JetStreamContext, bucket: str, nuid: str) -> None:
    await js.purge_stream(OBJ_STREAM_TEMPLATE.format(bucket=bucket), subject=chunk_subject(bucket, nuid))


async def read_object(js: JetStreamContext, bucket: str, info: api.ObjectInfo) -> AsyncIterator[bytes]:
    """The object's chunks in order, each fetched when the previous one was taken (a direct get of the
    next message on the chunk subject), checked against the stored size and digest at the end."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    subject = chunk_subject(bucket, info.nuid or "")
    digest = hashlib.sha256()
    seq = 1
    size = 0
    for _ in range(info.chunks or 0):
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            raise ObjectCorrupt(f"{info.name}: chunk missing") from None
        data = msg.data or b""
        digest.update(data)
        size += len(data)
        seq = (msg.seq or seq) + 1
        yield data
    expected = (info.digest or "").removeprefix(OBJ_DIGEST_TYPE)
    if size != (info.size or 0) or base64.urlsafe_b64encode(digest.digest()).decode() != expected:
        raise ObjectCorrupt(f"{info.name}: size or digest does not match")


async def object_info(store: ObjectStore, name: str) -> api.ObjectInfo | None:
    try:
        return await store.get_info(name)
    except (ObjectNotFoundError, NotFoundError):
        return None


async def delete_object(store: ObjectStore, name: str) -> bool:
    """Delete ``name``; False when it was not there."""
    try:
        await store.delete(name)
    except (ObjectNotFoundError, NotFoundError):
        return False
    return True
