"""Chains of calls, checked against the operations' types when they are built.

A chain is the stages that follow a call (see ``Forward`` in :mod:`mlcloud.lattice.wire`): each
stage is an :class:`~mlcloud.interfaces.Op` whose request gets the previous stage's reply (or
its field ``pick``) as its field ``into``, next to fixed ``fields`` and the fields it ``carry``s
over from the previous reply under the same name. Everything is named by the
Python attribute names of the types; the wire names (camelCase) are filled in here. A mistake —
a field the request does not have, a required field left out, a value of the wrong type, a
picked or carried field the previous reply does not have, a reply that does not fit the next field — is a
:class:`TypeError` where the chain is built, not a decoding error in another process.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from mlcloud.interfaces import Op
from mlcloud.lattice.wire import Forward

Rep = TypeVar("Rep")
Next = TypeVar("Next")

# (op name, fields by wire name, wire name of ``into``, ``pick``) → the stage's Forward, made by
# the runtime, which knows the subject and whether the caller's claims and links allow it.
Route = Callable[[str, dict[str, Any], str, str], Forward]


@dataclass(frozen=True, slots=True)
class Stage:
    """One call of a chain: its operation, where the previous result goes, and its Forward."""

    op: Op[Any, Any]
    into: str
    pick: str
    forward: Forward  # without ``then``: :meth:`Chain.to_wire` links the stages


@dataclass(frozen=True, slots=True)
class Chain(Generic[Rep]):
    """Stages to run after a call; ``Rep`` is the reply type of the last one."""

    stages: tuple[Stage, ...]

    @classmethod
    def build(
        cls, op: Op[Any, Rep], fields: Mapping[str, Any], *, into: str, pick: str, route: Route,
        carry: tuple[str, ...] = (),
    ) -> Chain[Rep]:
        """A one-stage chain for ``op``, its request checked; ``route`` makes the Forward."""
        request_fields = _struct_fields(op.request, f"{op.name}'s request")
        target = request_fields.get(into)
        if target is None:
            raise TypeError(f"{op.name}: its request {_name(op.request)} has no field {into!r} "
                            f"to take the previous result; it has {', '.join(request_fields)}")
        wire: dict[str, Any] = {}
        for name, value in fields.items():
            field = request_fields.get(name)
            if field is None or name == into:
                raise TypeError(f"{op.name}: {name!r} is not a field to give: {_name(op.request)} has "
                                f"{', '.join(n for n in request_fields if n != into)} besides {into!r}")
            try:
                msgspec.convert(value, field.type)
            except msgspec.ValidationError as exc:
                raise TypeError(f"{op.name}: field {name!r} of {_name(op.request)}: {exc}") from None
            wire[field.encode_name] = value
        missing = [n for n, f in request_fields.items() if f.required and n != into and n not in fields]
        if missing:
            raise TypeError(f"{op.name}: {_name(op.request)} needs {', '.join(missing)}")
        for name in carry:
            field = request_fields.get(name)
            if field is None or field.encode_name != name or name in fields or name == into:
                raise TypeError(f"{op.name}: {_name(op.request)} cannot take {name!r} carried over "
                                "(a field of that name and wire name, not otherwise given)")
        forward = msgspec.structs.replace(route(op.name, wire, target.encode_name, pick), carry=carry)
        return cls((Stage(op, into, pick, forward),))

    @property
    def reply(self) -> type[Rep]:
        """What the last stage answers: the type the caller decodes the chain's answer into."""
        return self.stages[-1].op.reply

    @property
    def idempotent(self) -> bool:
        """Every stage may be made again (:attr:`Op.idempotent`): so may the chain."""
        return all(stage.op.idempotent for stage in self.stages)

    def after(self, op: Op[Any, Any]) -> Chain[Rep]:
        """This chain, checked to take ``op``'s reply as its first stage's input."""
        _check_fits(op, self.stages[0])
        return self

    def followed_by(self, chain: Chain[Next]) -> Chain[Next]:
        """This chain with ``chain`` appended, checked to take this chain's last reply."""
        return Chain(self.stages + chain.after(self.stages[-1].op).stages)

    def to_wire(self) -> Forward:
        """The nested :class:`Forward` that travels with the call."""
        forward: Forward | None = None
        for stage in reversed(self.stages):
            forward = msgspec.structs.replace(stage.forward, then=forward)
        assert forward is not None
        return forward


def _check_fits(previous: Op[Any, Any], stage: Stage) -> None:
    """Raise TypeError unless ``previous``'s reply (or its field ``stage.pick``) fits ``stage.into``."""
    given: Any = previous.reply
    what = f"{previous.name}'s reply {_name(given)}"
    if stage.pick:
        reply_fields = _struct_fields(given, what)
        picked = reply_fields.get(stage.pick)
        if picked is None:
            raise TypeError(f"{stage.op.name} picks {stage.pick!r} of {what}, which has "
                            f"{', '.join(reply_fields)}")
        # A stage whose picked field is None fails at run time (wire._picked): None is not passed.
        given = _without_none(picked.type)
        what = f"{what}.{stage.pick} ({_name(given)})"
    request_fields = _struct_fields(stage.op.request, f"{stage.op.name}'s request")
    target = request_fields[stage.into].type
    if not _fits(given, target):
        raise TypeError(f"{what} does not fit {stage.op.name}'s {_name(stage.op.request)}.{stage.into} "
                        f"({_name(target)})")
    for name in stage.forward.carry:
        carried = _struct_fields(previous.reply, f"{previous.name}'s reply").get(name)
        if carried is None or carried.encode_name != name or not _fits(carried.type, request_fields[name].type):
            raise TypeError(f"{stage.op.name} carries {name!r} over from {previous.name}'s reply "
                            f"{_name(previous.reply)}, which has no such field of a fitting type")


def _struct_fields(type_: Any, what: str) -> dict[str, msgspec.structs.FieldInfo]:
    if not (isinstance(type_, type) and issubclass(type_, msgspec.Struct)):
        raise TypeError(f"{what} is {_name(type_)}, not a struct with fields")
    return _fields_of(type_)


@functools.cache
def _fields_of(type_: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """A struct's fields by name, worked out once per type: ``msgspec.structs.fields`` resolves the
    annotations on every call, and a chain is checked on every request (it was ~9 % of the api
    actor's CPU at concurrency 1)."""
    return {f.name: f for f in msgspec.structs.fields(type_)}


def _members(type_: Any) -> tuple[Any, ...]:
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        return typing.get_args(type_)
    return (type_,)


def _without_none(type_: Any) -> Any:
    kept = [m for m in _members(type_) if m is not type(None)]
    return functools.reduce(operator.or_, kept)  # X | Y | ..., or X alone


def _fits(given: Any, target: Any) -> bool:
    """True when every value of type ``given`` is a valid value of ``target``."""
    targets = _members(target)
    if any(t in (Any, object) for t in targets):
        return True
    return all(
        g in targets or (isinstance(g, type) and any(isinstance(t, type) and issubclass(g, t) for t in targets))
        for g in _members(given)
    )


def _name(type_: Any) -> str:
    return type_.__name__ if isinstance(type_, type) else str(type_)
