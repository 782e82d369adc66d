"""What a component author imports: define an actor or a provider and its operations.

An actor module::

    from mlcloud.sdk import Actor, Context
    component = Actor()

    @component.operation(OP_POSTPROCESS, PostprocessRequest)
    def matches(ctx: Context, request: PostprocessRequest) -> list[Match]:
        ...

A provider module subclasses :class:`Provider` and marks methods with :func:`operation`; it
receives links through ``on_link_put`` / ``on_link_del``. Handlers may be ``async``; plain
functions run in a thread pool so CPU-bound work (image decoding, inference) runs in parallel.
The host's runner (``mlcloud.host.runner``) does the rest: NATS, links, claims, health.
"""

from mlcloud.lattice.wire import Forward
from mlcloud.sdk.component import Actor, Context, Operation, Provider, operation

__all__ = ["Actor", "Context", "Forward", "Operation", "Provider", "operation"]
