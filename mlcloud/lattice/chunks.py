"""Messages larger than NATS's ``max_payload`` travel through the lattice's JetStream object store.

As wasmCloud 0.x does (``ChunkEndpoint`` in wasmcloud-core): the sender puts the encoded message
into the bucket ``CHUNKS_{lattice}`` and sends, in its place, an empty NATS message whose headers
name the object and its size; the receiver reads the object and deletes it. :mod:`mlcloud.lattice.rpc`
does this for every request, forwarded request and reply it sends, so every component, chain stage
and retry gets it; a message that fits (the common case) is sent as before, and costs one length
comparison and, on receipt, one look at ``msg.headers``.

Where we differ from wasmCloud, and why:

* the threshold is the ``max_payload`` the connected server announced, not a fixed 900 KB, so a
  lattice chunks exactly what its NATS server would refuse;
* an object is named by a fresh id per message, not by the invocation id: a request id is kept
  across a chain's stages and a call's retries (:mod:`mlcloud.tracing`), each of which sends a
  message of its own;
* the bucket keeps its objects in memory with a time to live (:data:`CHUNK_TTL`), so an object
  whose receiver never came (a crashed process, a call that timed out) is dropped by the server;
  a sender whose request failed deletes its object itself;
* deleting purges the object's metadata too (nats-py's ``delete`` leaves a tombstone), so the
  bucket is empty again once every message is taken.

Memory: a sender streams its message from the bytes it already holds (no copy), a receiver reads
the object into one buffer of the announced size; a payload thus costs a process no more copies
than when it rode in one NATS message (tests/e2e/test_large_payloads.py measures it).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Mapping

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ObjectMeta, ObjectMetaOptions, ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from mlcloud.errors import LatticeUnavailable, MalformedMessage, MLCloudError
from mlcloud.lattice import subjects
from mlcloud.lattice.natserrors import nats_errors

log = logging.getLogger(__name__)

NAME_HEADER = "Mlcloud-Chunk"
SIZE_HEADER = "Mlcloud-Chunk-Size"
# How long the server keeps an object nobody took: longer than any call waits for its answer.
CHUNK_TTL = 600.0
# The pieces an object is stored in (nats-py's default is 128 KiB): fewer, larger pieces are fewer
# acknowledged publishes; each must still fit the server's max_payload.
PIECE_SIZE = 512 * 1024


def is_chunked(msg: Msg) -> bool:
    """Whether ``msg`` only names an object holding the real message."""
    return bool(msg.headers) and NAME_HEADER in msg.headers  # type: ignore[operator]


class _Sink:
    """Where nats-py's ``ObjectStore.get`` writes an object: one buffer of the announced size."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self._view = memoryview(self.data)
        self.written = 0

    def write(self, piece: bytes) -> int:
        end = self.written + len(piece)
        if end > len(self.data):
            raise MalformedMessage(f"a chunked message is larger than the {len(self.data)} bytes announced")
        self._view[self.written:end] = piece
        self.written = end
        return len(piece)


class Chunks:
    """The lattice's chunk bucket as one connection uses it; opened at its first large message."""

    def __init__(self, nc: NATS, lattice: str) -> None:
        self.nc = nc
        self.bucket = subjects.chunk_bucket(lattice)
        self._store: ObjectStore | None = None

    def needed(self, data: bytes) -> bool:
        return len(data) > self.nc.max_payload

    async def open(self) -> ObjectStore:
        """The bucket, made if missing (by a host at its start; an instance may not make one)."""
        if self._store is None:
            js = self.nc.jetstream()
            with nats_errors("opening the chunk bucket", self.bucket):
                try:
                    self._store = await js.object_store(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._store = await js.create_object_store(self.bucket, ObjectStoreConfig(
                        description="messages larger than max_payload, each until its receiver takes it",
                        ttl=CHUNK_TTL, storage=StorageType.MEMORY))
        return self._store

    async def stow(self, data: bytes) -> dict[str, str]:
        """Put ``data`` in the bucket; the headers of the message that stands for it."""
        store = await self.open()
        name = uuid.uuid4().hex
        piece = min(PIECE_SIZE, max(self.nc.max_payload // 2, 1024))
        with nats_errors(f"storing a message of {len(data)} bytes", self.bucket):
            await store.put(name, data, ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=piece)))
        return {NAME_HEADER: name, SIZE_HEADER: str(len(data))}

    async def take(self, msg: Msg) -> bytearray:
        """The message ``msg`` stands for, read from the bucket and deleted there."""
        headers = msg.headers or {}
        name = headers.get(NAME_HEADER, "")
        try:
            size = int(headers.get(SIZE_HEADER, ""))
        except ValueError:
            raise MalformedMessage(f"chunked message {name!r} without a valid {SIZE_HEADER}") from None
        store = await self.open()
        sink = _Sink(size)
        nuid = ""
        try:
            with nats_errors(f"reading chunked message {name}", self.bucket):
                try:
                    result = await store.get(name, writeinto=sink)  # type: ignore[arg-type]
                    nuid = result.info.nuid or ""
                except nats.js.errors.ObjectNotFoundError:
                    raise LatticeUnavailable(f"chunked message {name} is gone from {self.bucket} "
                                             "(its sender gave up, or it outlived the bucket's time to live)") from None
                except nats.js.errors.DigestMismatchError:
                    raise MalformedMessage(f"chunked message {name} does not match its digest") from None
        finally:
            await self._remove(name, nuid)
        if sink.written != size:
            raise MalformedMessage(f"chunked message {name} has {sink.written} bytes, not the {size} announced")
        return sink.data

    async def discard(self, headers: Mapping[str, str]) -> None:
        """Delete the object ``headers`` name, whose message nobody will take (the send failed)."""
        await self._remove(headers[NAME_HEADER])

    async def _remove(self, name: str, nuid: str = "") -> None:
        """Purge the object's pieces (stored under ``nuid``, looked up when not given) and its
        metadata; a failure only leaves it to the time to live."""
        store = await self.open()
        js = self.nc.jetstream()
        stream = f"OBJ_{self.bucket}"
        meta = f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        try:
            with nats_errors(f"deleting chunked message {name}", self.bucket):
                if not nuid:
                    try:
                        nuid = (await store.get_info(name)).nuid or ""
                    except nats.js.errors.ObjectNotFoundError:
                        return
                await js.purge_stream(stream, subject=f"$O.{self.bucket}.C.{nuid}")
                await js.purge_stream(stream, subject=meta)
        except MLCloudError as err:
            log.warning("could not delete chunked message %s from %s (%s); it expires in %g s",
                        name, self.bucket, err.message, CHUNK_TTL)
