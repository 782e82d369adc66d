"""The RPC wire format: msgpack envelopes around every request and reply on the lattice.

A request is ``{op, id, msg, forward?, grant?, trace?}`` (``id``: the id of the request it serves,
which every call made for that request keeps, :mod:`mlcloud.tracing`; ``forward``: the chain of
stages its result goes on to, see :class:`Forward`; ``grant``: the originator's leave for those
stages, :mod:`mlcloud.lattice.grants`; ``trace``: the W3C traceparent of the calling stage) and a
reply is ``{ok}`` or ``{error: {kind, message, details}}``. ``msg`` and ``ok`` are decoded lazily
(``msgspec.Raw``), so a component decodes a payload straight into the type its handler wants, and
large byte fields are not re-parsed.
The caller is not in the envelope: the receiving server takes it from the subject (or the grant).
Why the trace context rides in the envelope and not in NATS headers: it is decoded with the rest
in one pass (nats-py parses headers apart, per message), and a forwarded stage's request, which
is built here from the envelope, carries it on without a second place to copy from.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from mlcloud.errors import MalformedMessage, MLCloudError, error_from_wire
from mlcloud.lattice.grants import Grant
from mlcloud.tracing import valid_request_id

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_NIL = msgspec.Raw(b"\xc0")  # msgpack nil


class Forward(msgspec.Struct, kw_only=True, frozen=True):
    """Where a server sends its result instead of answering: the next stage of a chain.

    The result (or its field ``pick``) becomes field ``field`` of a request for ``op`` to
    ``target`` (:mod:`mlcloud.lattice.subjects`), next to ``msg``; that request carries ``then``,
    the rest of the chain, and the
    last stage answers the original caller. ``carry`` names fields of the result that go on too,
    under the same wire name, when set (the ``source`` of a Predict answer: which model made it).
    """

    target: str
    op: str
    field: str
    msg: dict[str, Any] = {}  # the next request's other fields
    pick: str = ""  # forward only this attribute of the result (``tensor`` of an InferenceOutput)
    carry: tuple[str, ...] = ()  # wire names of the result's fields that go on beside ``field``
    then: Forward | None = None

    def followed_by(self, stage: Forward) -> Forward:
        """This chain with ``stage`` appended as its last stage."""
        return msgspec.structs.replace(self, then=stage if self.then is None else self.then.followed_by(stage))

    def stages(self) -> list[tuple[str, str]]:
        """(target, op) of this stage and every one after it: what a grant for the chain names."""
        stages = [(self.target, self.op)]
        return stages if self.then is None else stages + self.then.stages()


class Invocation(msgspec.Struct, kw_only=True):
    op: str
    id: str
    msg: msgspec.Raw = _NIL
    forward: Forward | None = None
    # Set on a chain's later stages: the original caller's inbox, where the answer (or the next
    # stage's) goes; the message's own reply subject then only takes the delivery receipt.
    reply_to: str = ""
    grant: Grant | None = None
    trace: str = ""  # the caller's W3C traceparent, the parent of this call's span
    # Not read from the wire: set by the receiving server from the subject, or from a verified
    # grant for a forwarded call (whatever a sender writes here is replaced).
    caller: str = ""

    def payload(self, type_: type[T]) -> T:
        try:
            return msgspec.msgpack.decode(self.msg, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedMessage(f"{self.op}: payload is not a valid {type_.__name__}: {exc}") from exc

    def take_payload(self, type_: type[T]) -> T:
        """:meth:`payload`, letting go of the raw message: it may be a whole chunked message of
        many MB (:mod:`mlcloud.lattice.chunks`), which would otherwise live as long as the call."""
        try:
            return self.payload(type_)
        finally:
            self.msg = _NIL


class _Reply(msgspec.Struct, kw_only=True):
    ok: msgspec.Raw = _NIL
    error: dict[str, Any] | None = None


_invocation_decoder = msgspec.msgpack.Decoder(Invocation)
_reply_decoder = msgspec.msgpack.Decoder(_Reply)


def encode_request(
    op: str, message: Any, *, invocation_id: str, forward: Forward | None = None, reply_to: str = "",
    grant: Grant | None = None, trace: str = "",
) -> bytes:
    request = {"op": op, "id": invocation_id, "msg": message}
    if forward is not None:
        request["forward"] = forward
    if reply_to:
        request["reply_to"] = reply_to
    if grant is not None:
        request["grant"] = grant
    if trace:
        request["trace"] = trace
    return _encoder.encode(request)


def encode_forwarded(
    forward: Forward, result: Any, *, invocation_id: str, reply_to: str, grant: Grant | None = None,
    trace: str = "",
) -> bytes:
    """The next request of a chain, with ``result`` (or its ``pick``) as ``forward.field``, encoded
    once; its answer goes to ``reply_to``, the original caller; it carries on the chain's ``grant``
    and request id, and ``trace``, the forwarding stage's traceparent."""
    value = _picked(result, forward) if forward.pick else result
    message = {**forward.msg, **_carried(result, forward.carry), forward.field: value}
    return encode_request(forward.op, message, invocation_id=invocation_id, forward=forward.then,
                          reply_to=reply_to, grant=grant, trace=trace)


def describe_chain(op: str, forward: Forward | None) -> str:
    """``op`` and the operations of the stages after it: ``A.X → B.Y → C.Z``."""
    ops = [op]
    while forward is not None:
        ops.append(forward.op)
        forward = forward.then
    return " → ".join(ops)


def _picked(result: Any, forward: Forward) -> Any:
    name = forward.pick
    value = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
    if value is None:
        raise MLCloudError(f"{forward.op} needs the {name!r} of the previous stage's result, which has none")
    return value


def _carried(result: Any, names: tuple[str, ...]) -> dict[str, Any]:
    found = {}
    for name in names:
        value = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
        if value is not None:
            found[name] = value
    return found


def decode_request(data: bytes | bytearray) -> Invocation:
    try:
        invocation = _invocation_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"not an RPC invocation: {exc}") from exc
    if valid_request_id(invocation.id) is None:  # it goes into log lines
        raise MalformedMessage("the invocation id is not a valid request id (mlcloud.tracing)")
    invocation.caller = ""
    return invocation


def encode_reply(message: Any) -> bytes:
    return _encoder.encode({"ok": message})


def encode_error(error: MLCloudError) -> bytes:
    return _encoder.encode({"error": error.to_wire()})


def decode_reply(data: bytes | bytearray, type_: type[T] | None = None) -> T | Any:
    """The reply's payload as ``type_`` (or plain msgpack objects); raise the remote error."""
    try:
        reply = _reply_decoder.decode(data)
        if reply.error is not None:
            raise error_from_wire(reply.error)
        return msgspec.msgpack.decode(reply.ok, type=type_ or Any)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"malformed RPC reply: {exc}") from exc
