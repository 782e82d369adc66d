"""Request/reply over NATS: the client side (:class:`RpcClient`) and the server side (:class:`RpcServer`).

Every call carries an invocation id, the id of the request it serves (by default the one being
served, :func:`mlcloud.tracing.current`, so it is kept across every hop), its trace context and
a deadline; nats-py's errors become
:mod:`mlcloud.errors` (``RpcTimeout``, ``NoResponders``) through :mod:`mlcloud.lattice.natserrors`,
and a call while the connection to NATS is down fails at once with ``LatticeUnavailable``. A handler's
:class:`~mlcloud.errors.MLCloudError` travels back as ``{kind, message}``; any other exception is
logged with its traceback on the serving side and travels as a generic ``MLCloudError`` naming
the exception's type and text.

Who called is what the subject says (``wasmbus.rpc.{target}.{caller}``, a token nats-server's
permissions let only that caller publish), or for a chain's forwarded call the originator its
verified grant names (:mod:`mlcloud.lattice.grants`): :attr:`Invocation.caller`.

Given a :class:`~mlcloud.lattice.chunks.Chunks`, a client and a server send every message larger
than the server's ``max_payload`` (request, forwarded request, reply) through the lattice's
object store, and take such messages from it (:mod:`mlcloud.lattice.chunks`); without one, such a
message is a ``PayloadTooLarge`` (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mlcloud import tracing
from mlcloud.errors import (
    ClaimsError,
    InstanceDied,
    LatticeUnavailable,
    MLCloudError,
    NoResponders,
    RpcTimeout,
)
from mlcloud.lattice import subjects, wire
from mlcloud.lattice.chunks import Chunks, is_chunked
from mlcloud.lattice.connect import flush, while_connected
from mlcloud.lattice.grants import Signer, Verifier
from mlcloud.lattice.lifecycle import Service
from mlcloud.lattice.natserrors import nats_errors
from mlcloud.lattice.wire import Forward, Invocation
from mlcloud.settings import DEFAULT_FORWARD_ACK_TIMEOUT

T = TypeVar("T")
log = logging.getLogger(__name__)

Handler = Callable[[Invocation], Awaitable[Any]]


def new_invocation_id() -> str:
    return uuid.uuid4().hex


class Died(msgspec.Struct, frozen=True):
    """What a host publishes on :func:`subjects.instance_died` when an instance's process exits unasked."""

    instance_id: str
    targets: list[str]  # every target the instance served (its key and call alias, or its provider link)


# While nobody serves an idempotent call (its lone instance restarts), it is tried again after
# these many seconds, doubling up to the maximum, until its deadline. The maximum bounds how long
# a call waits after the instance is back (a request per waiting call every 0.2 s costs nothing).
RETRY_PAUSE = 0.05
RETRY_PAUSE_MAX = 0.2
# nats-server drops a killed instance's subscriptions when its socket closes, which can be a few
# milliseconds before its host sees the exit and sends the death notice: an idempotent call that
# nobody serves waits this long, once, for a notice before it gives up.
DEATH_NOTICE_GRACE = 0.1


class RpcClient:
    """Makes calls on the lattice as ``caller`` (a component's or host's public key), which the
    connection's credentials must let it publish as; chains it starts carry ``signer``'s grant.

    After :meth:`follow_deaths`, a call in flight to a target (or to any stage of its chain) fails
    with :class:`InstanceDied` as soon as a host says an instance serving that target died, rather
    than at its deadline. A call goes to a queue group, so the caller does not know which instance
    took it: every call in flight to that target fails, also one a surviving replica holds. That
    costs nothing per call on the wire (no receipt naming the instance), and an idempotent call
    loses nothing by it: within its deadline, it is made again up to ``retries`` times after
    :class:`InstanceDied` (the budget guards against a request that kills each instance it
    reaches), and tried again while :class:`NoResponders` says nobody serves it if an instance
    serving it died within the call's deadline (a lone instance restarting; a component stopped on
    purpose still fails, after waiting ``DEATH_NOTICE_GRACE`` once for a notice that may trail
    nats-server's own news of the death).
    """

    def __init__(
        self, nc: NATS, *, caller: str, timeout: float, signer: Signer | None = None, retries: int = 0,
        chunks: Chunks | None = None,
    ) -> None:
        self.nc = nc
        self.chunks = chunks
        self.caller = caller
        self.timeout = timeout
        self.signer = signer
        self.retries = retries
        self._in_flight: dict[str, set[_Watch]] = {}  # target → calls to fail if it dies
        self._died_at: dict[str, float] = {}  # target → when an instance serving it last died (loop time)

    async def follow_deaths(self, lattice: str) -> None:
        """Hear from now on of the instances of ``lattice`` that die (see the class)."""
        subject = subjects.instance_died(lattice)
        with nats_errors("following instance deaths", subject):
            await self.nc.subscribe(subject, cb=self._on_died)
            await flush(self.nc)

    async def _on_died(self, msg: Msg) -> None:
        try:
            died = msgspec.json.decode(msg.data, type=Died)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed instance death notice on %s", msg.subject)
            return
        now = asyncio.get_running_loop().time()
        for target in died.targets:
            self._died_at[target] = now
            for call in self._in_flight.get(target, ()):
                call.fail(died.instance_id, now)

    async def call(
        self,
        target: str,
        op: str,
        message: Any,
        result_type: type[T] | None = None,
        *,
        timeout: float | None = None,
        invocation_id: str | None = None,
        forward: Forward | None = None,
        idempotent: bool = False,
    ) -> T | Any:
        """Call ``op`` on ``target``; with ``forward``, the answer is the forwarded call's.

        ``idempotent`` (the call and every stage of ``forward`` are): retry as the class says.
        ``invocation_id``: by default the id of the request being served, else a new one.
        """
        trace = tracing.current()
        invocation_id = invocation_id or trace.request_id or new_invocation_id()
        deadline = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        retries = self.retries if idempotent else 0
        pause = RETRY_PAUSE
        left = deadline
        awaited_notice = not idempotent
        while True:
            try:
                return await self._attempt(target, op, message, result_type, left, invocation_id, forward,
                                           trace.traceparent)
            except InstanceDied as err:
                if retries <= 0 or loop.time() >= end:
                    raise
                retries -= 1
                log.info("%s on %s: %s; making it again", op, target, err.message)
            except NoResponders as err:
                # Whom nobody serves: this call's target, or a stage of its chain. A death up to a
                # deadline before the call began may still be restarting.
                subject = err.details.get("subject")
                unserved = subjects.target_of(subject) if isinstance(subject, str) else target
                since = end - 2 * deadline
                if not awaited_notice and self._died_at.get(unserved, -1.0) < since \
                        and loop.time() + DEATH_NOTICE_GRACE < end:
                    awaited_notice = True
                    await asyncio.sleep(DEATH_NOTICE_GRACE)
                died_lately = self._died_at.get(unserved, -1.0) >= since
                if not (idempotent and died_lately) or loop.time() + pause >= end:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)
            left = end - loop.time()

    async def _attempt(
        self, target: str, op: str, message: Any, result_type: type[T] | None, deadline: float,
        invocation_id: str, forward: Forward | None, traceparent: str,
    ) -> T | Any:
        grant = None
        if forward is not None and self.signer is not None:
            grant = self.signer.grant(invocation_id, forward.stages(), deadline)
        data = wire.encode_request(op, message, invocation_id=invocation_id, forward=forward, grant=grant,
                                   trace=traceparent)
        subject = subjects.call(target, self.caller)
        targets = {target, *(t for t, _ in (forward.stages() if forward else ()))}
        # The request runs in this task, inside a scope a death notice expires (no task of its
        # own to wait on: a call costs no more event-loop turns than nats-py's request).
        watch = _Watch(asyncio.timeout(None))
        try:
            async with watch.scope:
                for t in targets:  # only an entered scope can be expired
                    self._in_flight.setdefault(t, set()).add(watch)
                reply = await request(self.nc, subject, op, data, timeout=deadline, invocation_id=invocation_id,
                                      forward=forward, chunks=self.chunks)
        except TimeoutError:
            if watch.died is None or not watch.scope.expired():
                raise
            raise InstanceDied(f"{wire.describe_chain(op, forward)} on {subject}: instance "
                               f"{watch.died[:8]} serving it died", subject=subject,
                               invocation_id=invocation_id) from None
        finally:
            for t in targets:
                calls = self._in_flight.get(t)
                if calls is not None:
                    calls.discard(watch)
                    if not calls:
                        del self._in_flight[t]
        return wire.decode_reply(reply, result_type)


class _Watch:
    """A call in flight that a death notice for its target ends at once (:meth:`RpcClient.follow_deaths`)."""

    __slots__ = ("died", "scope")

    def __init__(self, scope: asyncio.Timeout) -> None:
        self.scope = scope
        self.died: str | None = None  # the instance whose death ended it

    def fail(self, instance_id: str, now: float) -> None:
        if self.died is None:
            self.died = instance_id
            self.scope.reschedule(now)


async def request(
    nc: NATS, subject: str, op: str, data: bytes, *, timeout: float, invocation_id: str = "",
    forward: Forward | None = None, chunks: Chunks | None = None,
) -> bytes | bytearray:
    """``nc.request`` with nats-py's errors converted into :mod:`mlcloud.errors` (by :func:`nats_errors`);
    the reply's bytes.

    While the connection is down it fails at once, and when it drops during the wait it fails
    then, with :class:`LatticeUnavailable` (503) rather than an :class:`RpcTimeout` (504) at the
    deadline (:func:`while_connected`). ``forward`` (the rest of a chain) only names the chain's
    stages in a timeout's message. With ``chunks``, a request or reply too large for one NATS
    message goes through the object store; ``timeout`` counts from when the request is sent.
    """
    what = wire.describe_chain(op, forward)
    headers = await chunks.stow(data) if chunks is not None and chunks.needed(data) else None
    try:
        with nats_errors(what, subject, timeout=timeout, size=len(data), limit=nc.max_payload,
                         invocation_id=invocation_id):
            async with while_connected(nc, f"{what} on {subject}"):
                reply = await nc.request(subject, b"" if headers else data, timeout=timeout, headers=headers)
    except NoResponders:
        if chunks is not None and headers is not None:  # nobody will take it (after a timeout the
            await chunks.discard(headers)                 # receiver may be reading it: it stays)
        raise
    if chunks is not None and is_chunked(reply):
        return await chunks.take(reply)
    return reply.data


class RpcServer(Service):
    """Serves one target: decodes invocations, runs ``handler`` concurrently, replies.

    It takes the calls to ``target`` and the forwarded calls to it; a forwarded call is served
    only with a grant ``verifier`` accepts. ``identity`` is the token its own forwarded calls
    carry (the server's component key).

    nats-py runs a subscription's callback one message at a time, so each invocation gets its
    own task (bounded by ``max_in_flight``) to let independent requests proceed in parallel.

    A chain's stage (an invocation with a ``forward``) sends its result on to the next stage as a
    request of its own, which that stage confirms at once with an empty reply before it works;
    the answer itself goes to the original caller (``reply_to``). NATS answers "no responders"
    only to the connection that made a request, so without the receipt a stage nobody serves
    would leave the caller waiting for its deadline; with it the caller hears at once.

    Use it as an async context manager (or ``await server.start()`` … ``await server.stop()``).
    """

    def __init__(
        self, nc: NATS, target: str, handler: Handler, *, identity: str, queue: str = "",
        verifier: Verifier | None = None, max_in_flight: int = 256, ack_timeout: float = DEFAULT_FORWARD_ACK_TIMEOUT,
        chunks: Chunks | None = None,
    ) -> None:
        super().__init__()
        self.nc = nc
        self.chunks = chunks
        self.target = target
        self.subject = subjects.call(target, "*")  # for messages
        self.identity = identity
        self.verifier = verifier
        self.queue = queue
        self.handler = handler
        self.ack_timeout = ack_timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Subscribe; on return the NATS server knows the subscription (callers can reach it)."""
        with nats_errors(f"serving {self.subject}", self.subject):
            stack.push_async_callback(self._finish)
            for subject in subjects.served(self.target):
                self._subs.append(await self.nc.subscribe(subject, queue=self.queue, cb=self._on_message))
            await flush(self.nc)

    async def _finish(self) -> None:
        """Stop taking new calls and let the ones in flight finish."""
        for sub in self._subs:
            # A closed connection took the subscription with it already.
            with contextlib.suppress(LatticeUnavailable), nats_errors(f"leaving {self.subject}", self.subject):
                await sub.unsubscribe()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg), name=f"rpc:{self.subject}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        try:
            receipted = False
            try:
                data: bytes | bytearray = msg.data
                if self.chunks is not None and is_chunked(msg):
                    if msg.reply and subjects.sender(msg.subject)[1]:
                        # A forwarded call: confirm it before reading it, which may take longer
                        # than the forwarding stage waits for the receipt.
                        await self._receipt(msg.reply, "a chunked call")
                        receipted = True
                    data = await self.chunks.take(msg)
                invocation = wire.decode_request(data)
                del data  # the invocation holds what it needs (Invocation.take_payload lets it go)
            except MLCloudError as err:  # malformed, or its chunks cannot be read
                if not receipted:
                    await self._answer(msg.reply, wire.encode_error(err))
                else:
                    log.warning("a chunked call on %s is lost: %s", self.subject, err.message)
                return
            # The call's request id and trace, on every log line and call made while serving it.
            with tracing.serving(invocation.op, invocation.id, invocation.trace) as served:
                result, error = await self._invoke(msg, invocation, receipted)
                answer_to = invocation.reply_to or msg.reply
                try:
                    if error is not None:
                        served.failed(error.kind, error.message)
                        await self._answer(answer_to, wire.encode_error(error))
                    elif invocation.forward is not None:
                        await self._forward(invocation, result, answer_to)
                    else:
                        await self._answer(answer_to, wire.encode_reply(result))
                except MLCloudError as err:  # the next stage is not there, or cannot be built from this result
                    served.failed(err.kind, err.message)
                    await self._answer(answer_to, wire.encode_error(err))
                except (TypeError, ValueError, msgspec.EncodeError) as exc:
                    # The answer cannot be encoded: say so now rather than let the caller time out.
                    log.exception("%s on %s: cannot send the answer", invocation.op, self.subject)
                    await self._answer(answer_to, wire.encode_error(
                        MLCloudError(f"{invocation.op}: cannot send the answer: {exc}")))
        except Exception:  # the connection went away mid-reply; nothing else to tell
            log.exception("could not reply on %s", self.subject)
        finally:
            self._slots.release()

    async def _answer(self, to: str, data: bytes) -> None:
        if to:  # a message published without a reply subject wants no answer
            await self._publish(to, data, f"the answer from {self.subject}")

    async def _publish(self, to: str, data: bytes, what: str) -> None:
        """Publish ``data``, through the chunk bucket when it is too large for one message (nobody
        may take it: the bucket's time to live removes it then)."""
        headers = await self.chunks.stow(data) if self.chunks is not None and self.chunks.needed(data) else None
        with nats_errors(what, to, size=len(data), limit=self.nc.max_payload):
            await self.nc.publish(to, b"" if headers else data, headers=headers)

    async def _forward(self, invocation: Invocation, result: Any, answer_to: str) -> None:
        """Send ``result`` on to the chain's next stage, which answers ``answer_to``."""
        forward = invocation.forward
        assert forward is not None
        data = wire.encode_forwarded(forward, result, invocation_id=invocation.id, reply_to=answer_to,
                                     grant=invocation.grant, trace=tracing.current().traceparent)
        subject = subjects.forwarded(forward.target, self.identity)
        if not answer_to:  # nobody waits for the answer, so nobody to tell that a stage is missing
            await self._publish(subject, data, wire.describe_chain(forward.op, forward.then))
            return
        # No responders, too large, NATS away: raised as mlcloud errors, which _serve answers the
        # caller with (a small error still fits a reconnect buffer).
        try:
            receipt = await request(self.nc, subject, forward.op, data, timeout=self.ack_timeout,
                                    invocation_id=invocation.id, chunks=self.chunks)
        except RpcTimeout:  # taken but not confirmed in time: the caller's deadline decides
            log.warning("%s on %s did not confirm the forwarded call within %g s",
                        forward.op, subject, self.ack_timeout)
            return
        if receipt:
            # A stage of an older mlcloud answers its request instead of reply_to: pass it on.
            await self._answer(answer_to, bytes(receipt))

    async def _receipt(self, to: str, op: str) -> None:
        """The empty reply a forwarding stage waits for; failing to send it must not fail the call."""
        try:
            with nats_errors(f"the receipt for {op}", to):
                await self.nc.publish(to, b"")
        except MLCloudError as err:
            log.warning("%s on %s: could not confirm the forwarded call (%s)", op, self.subject, err.message)

    def _caller(self, subject: str, invocation: Invocation) -> str:
        """The subject's caller, or for a forwarded call the originator its grant names."""
        sender, forwarded = subjects.sender(subject)
        if not forwarded:
            return sender
        if self.verifier is None:
            raise ClaimsError(f"{invocation.op}: {self.target} takes no forwarded calls")
        return self.verifier.caller(invocation.grant, invocation_id=invocation.id, target=self.target,
                                    op=invocation.op)

    async def _invoke(self, msg: Msg, invocation: Invocation, receipted: bool) -> tuple[Any, MLCloudError | None]:
        """(result, None), or (None, the error to send back); ``receipted``: the receipt is sent."""
        try:
            if invocation.reply_to and msg.reply and msg.reply != invocation.reply_to and not receipted:
                await self._receipt(msg.reply, invocation.op)
            invocation.caller = self._caller(msg.subject, invocation)
            return await self.handler(invocation), None
        except MLCloudError as err:
            return None, err
        except Exception as exc:
            log.exception("%s on %s failed", invocation.op, self.subject)
            return None, MLCloudError(f"{invocation.op} failed: {type(exc).__name__}: {exc}")
