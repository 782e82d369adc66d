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
* the bucket keeps its objects in memory (made again when a restarted server forgot it) with a
  time to live (:data:`CHUNK_TTL`), so an object whose receiver never came (a crashed process, a
  call that timed out) is dropped by the server; a sender whose request found nobody serving it
  deletes its object itself;
* deleting purges the object's metadata too (nats-py's ``delete`` leaves a tombstone), so the
  bucket is empty again once every message is taken.

Memory: a sender streams its message from the bytes it already holds (no copy), a receiver reads
the object into one buffer of the announced size; a payload thus costs a process no more copies
than when it rode in one NATS message (tests/e2e/test_large_payloads.py measures it).
"""

from __future__ import annotations

import base64
import hashlib
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
PIECE_TIMEOUT = 5.0  # seconds a reader waits for the next piece of an object


def grants(lattice: str) -> tuple[str, ...]:
    """What an instance must be allowed to publish to use the bucket (mlcloud/host/permissions.py):
    its objects' subjects and the JetStream API calls that read the bucket's info, an object's
    metadata, read its pieces (an ordered consumer) and purge it, and make the bucket (the first
    to need it does, and again after a restarted nats-server forgot it); not to remove it."""
    bucket = subjects.chunk_bucket(lattice)
    stream, api = _stream(bucket), "$JS.API"
    return (f"{_objects(bucket)}.>", *(f"{api}.{call}.{stream}" for call in ("STREAM.INFO", "STREAM.CREATE",
            "STREAM.MSG.GET", "STREAM.PURGE", "CONSUMER.CREATE")),
            *(f"{api}.{call}.{stream}.>" for call in ("CONSUMER.CREATE", "CONSUMER.DELETE", "CONSUMER.INFO")))


def _stream(bucket: str) -> str:
    """The JetStream stream of an object store bucket (nats-py's OBJ_STREAM_TEMPLATE)."""
    return f"OBJ_{bucket}"


def _objects(bucket: str) -> str:
    """The subjects' prefix of an object store bucket: ``.C.{nuid}`` pieces, ``.M.{name}`` metadata."""
    return f"$O.{bucket}"


def is_chunked(msg: Msg) -> bool:
    """Whether ``msg`` only names an object holding the real message."""
    return bool(msg.headers) and NAME_HEADER in msg.headers  # type: ignore[operator]


class Chunks:
    """The lattice's chunk bucket as one connection uses it; opened at its first large message."""

    def __init__(self, nc: NATS, lattice: str) -> None:
        self.nc = nc
        self.bucket = subjects.chunk_bucket(lattice)
        self._store: ObjectStore | None = None

    def needed(self, data: bytes) -> bool:
        return len(data) > self.nc.max_payload

    async def open(self) -> ObjectStore:
        """The bucket, made if missing: by whoever first needs it, and again after a restarted
        nats-server forgot it."""
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
        name = uuid.uuid4().hex
        piece = min(PIECE_SIZE, max(self.nc.max_payload // 2, 1024))
        meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=piece))
        store = await self.open()
        with nats_errors(f"storing a message of {len(data)} bytes", self.bucket):
            try:
                await store.put(name, data, meta)
            except (nats.js.errors.NoStreamResponseError, nats.js.errors.NotFoundError):
                # A restarted nats-server has forgotten the bucket (its objects live in memory):
                # the pieces found no stream, then nats-py's clean-up no stream to purge.
                self._store = None
                await (await self.open()).put(name, data, meta)
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
        nuid = ""
        try:
            with nats_errors(f"reading chunked message {name}", self.bucket, timeout=PIECE_TIMEOUT):
                try:
                    info = await store.get_info(name)
                except nats.js.errors.ObjectNotFoundError:
                    raise LatticeUnavailable(f"chunked message {name} is gone from {self.bucket} "
                                             "(its sender gave up, or it outlived the bucket's time to live)") from None
                nuid = info.nuid or ""
                data = await self._read(nuid, size, info.digest or "")
        finally:
            await self._remove(name, nuid)
        return data

    async def _read(self, nuid: str, size: int, digest: str) -> bytearray:
        """The object's pieces, copied into one buffer as they arrive: nats-py's ``ObjectStore.get``
        appends to a bytes object (a copy per piece) or hands each piece to a thread, which let
        pieces pile up in the subscription's queue (a second copy of the message, measured)."""
        data = bytearray(size)
        view = memoryview(data)
        written = 0
        hashed = hashlib.sha256()
        sub = await self.nc.jetstream().subscribe(f"{_objects(self.bucket)}.C.{nuid}", stream=_stream(self.bucket),
                                                  ordered_consumer=True)
        try:
            while written < size:
                piece = await sub.next_msg(timeout=PIECE_TIMEOUT)
                end = written + len(piece.data)
                if end > size:
                    break
                view[written:end] = piece.data
                hashed.update(piece.data)
                written = end
        finally:
            await sub.unsubscribe()
        expected = digest.removeprefix("SHA-256=").removeprefix("sha-256=")
        if written != size or base64.urlsafe_b64encode(hashed.digest()).decode() != expected:
            raise MalformedMessage(f"a chunked message in {self.bucket} does not match its size ({size}) or digest")
        return data

    async def discard(self, headers: Mapping[str, str]) -> None:
        """Delete the object ``headers`` name, whose message nobody will take (the send failed)."""
        await self._remove(headers[NAME_HEADER])

    async def _remove(self, name: str, nuid: str = "") -> None:
        """Purge the object's pieces (stored under ``nuid``, looked up when not given) and its
        metadata; a failure only leaves it to the time to live."""
        store = await self.open()
        js = self.nc.jetstream()
        stream, objects = _stream(self.bucket), _objects(self.bucket)
        meta = f"{objects}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        try:
            with nats_errors(f"deleting chunked message {name}", self.bucket):
                if not nuid:
                    try:
                        nuid = (await store.get_info(name)).nuid or ""
                    except nats.js.errors.ObjectNotFoundError:
                        return
                await js.purge_stream(stream, subject=f"{objects}.C.{nuid}")
                await js.purge_stream(stream, subject=meta)
        except MLCloudError as err:
            log.warning("could not delete chunked message %s from %s (%s); it expires in %g s",
                        name, self.bucket, err.message, CHUNK_TTL)
