"""Request/reply over NATS: the client side (:class:`RpcClient`) and the server side (:class:`RpcServer`).

Every call carries an invocation id for tracing and a deadline; nats-py's errors are converted
here, at one boundary, into :mod:`mlcloud.errors` (``RpcTimeout``, ``NoResponders``). A handler's
:class:`~mlcloud.errors.MLCloudError` travels back as ``{kind, message}``; any other exception is
logged with its traceback on the serving side and travels as a generic ``MLCloudError`` naming
the exception's type and text.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mlcloud.errors import LatticeUnavailable, MLCloudError, NoResponders, PayloadTooLarge, RpcTimeout
from mlcloud.lattice import wire
from mlcloud.lattice.wire import Forward, Invocation

T = TypeVar("T")
log = logging.getLogger(__name__)

Handler = Callable[[Invocation], Awaitable[Any]]


def new_invocation_id() -> str:
    return uuid.uuid4().hex


class RpcClient:
    """Makes calls on the lattice as ``origin`` (the caller's public key or name)."""

    def __init__(self, nc: NATS, *, origin: str, timeout: float) -> None:
        self.nc = nc
        self.origin = origin
        self.timeout = timeout

    async def call(
        self,
        subject: str,
        op: str,
        message: Any,
        result_type: type[T] | None = None,
        *,
        timeout: float | None = None,
        invocation_id: str | None = None,
        forward: Forward | None = None,
    ) -> T | Any:
        """Call ``op`` on ``subject``; with ``forward``, the answer is the forwarded call's."""
        invocation_id = invocation_id or new_invocation_id()
        data = wire.encode_request(op, message, invocation_id=invocation_id, origin=self.origin, forward=forward)
        deadline = self.timeout if timeout is None else timeout
        try:
            reply = await self.nc.request(subject, data, timeout=deadline)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"nobody serves {subject} ({op})", subject=subject) from exc
        except nats.errors.TimeoutError as exc:
            raise RpcTimeout(
                f"{op} on {subject} did not answer within {deadline:g} s",
                subject=subject,
                invocation_id=invocation_id,
            ) from exc
        except nats.errors.MaxPayloadError as exc:
            raise PayloadTooLarge(
                f"{op}: {len(data)} bytes is more than this NATS server carries "
                f"({self.nc.max_payload} bytes; raise its max_payload)"
            ) from exc
        except nats.errors.Error as exc:  # closed, draining, reconnect buffer full, …
            raise LatticeUnavailable(f"{op} on {subject}: NATS cannot carry the call now ({exc})") from exc
        return wire.decode_reply(reply.data, result_type)


class RpcServer:
    """Serves one subject: decodes invocations, runs ``handler`` concurrently, replies.

    nats-py runs a subscription's callback one message at a time, so each invocation gets its
    own task (bounded by ``max_in_flight``) to let independent requests proceed in parallel.
    """

    def __init__(
        self, nc: NATS, subject: str, handler: Handler, *, queue: str = "", max_in_flight: int = 256
    ) -> None:
        self.nc = nc
        self.subject = subject
        self.queue = queue
        self.handler = handler
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._sub: Subscription | None = None

    async def start(self) -> RpcServer:
        self._sub = await self.nc.subscribe(self.subject, queue=self.queue, cb=self._on_message)
        return self

    async def stop(self) -> None:
        """Stop taking new calls and let the ones in flight finish."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg), name=f"rpc:{self.subject}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            invocation, result, error = await self._invoke(msg.data)
            try:
                if error is not None:
                    if msg.reply:
                        await msg.respond(wire.encode_error(error))
                elif invocation.forward is not None:
                    # The next stage answers the caller: our reply inbox travels with the request.
                    # NATS tells the caller when nobody serves it ("no responders"), as for a call.
                    data = wire.encode_forwarded(invocation.forward, result, invocation_id=invocation.id)
                    await self.nc.publish(invocation.forward.subject, data, reply=msg.reply)
                elif msg.reply:
                    await msg.respond(wire.encode_reply(result))
            except MLCloudError as err:  # a chain's next stage cannot be built from this result
                if msg.reply:
                    await msg.respond(wire.encode_error(err))
            except (TypeError, ValueError, msgspec.EncodeError, nats.errors.MaxPayloadError) as exc:
                # The answer cannot be encoded or sent: say so now rather than let the caller time out.
                op = invocation.op if invocation else "?"
                log.exception("%s on %s: cannot send the answer", op, self.subject)
                if msg.reply:
                    kind = PayloadTooLarge if isinstance(exc, nats.errors.MaxPayloadError) else MLCloudError
                    await msg.respond(wire.encode_error(kind(f"{op}: cannot send the answer: {exc}")))
        except Exception:  # the connection went away mid-reply; nothing else to tell
            log.exception("could not reply on %s", self.subject)
        finally:
            self._slots.release()

    async def _invoke(self, data: bytes) -> tuple[Invocation | None, Any, MLCloudError | None]:
        """(invocation, result, None), or (…, None, the error to send back)."""
        invocation = None
        try:
            invocation = wire.decode_request(data)
            return invocation, await self.handler(invocation), None
        except MLCloudError as err:
            return invocation, None, err
        except Exception as exc:
            op = invocation.op if invocation else "?"
            log.exception("%s on %s failed", op, self.subject)
            return invocation, None, MLCloudError(f"{op} failed: {type(exc).__name__}: {exc}")
