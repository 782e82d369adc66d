"""What a component author imports: define an actor or a provider and its operations.

An actor module::

    from mlcloud.interfaces import POSTPROCESS, PostprocessRequest, Ranking
    from mlcloud.sdk import Actor, Context
    component = Actor()

    @component.operation(POSTPROCESS)
    def matches(ctx: Context, request: PostprocessRequest) -> Ranking:
        ...

A provider module subclasses :class:`Provider` and marks methods with :func:`operation`; it
receives links through ``on_link_put`` / ``on_link_del``. Handlers may be ``async``; plain
functions run in a thread pool so CPU-bound work (image decoding, inference) runs in parallel.
Operations are :class:`~mlcloud.interfaces.Op` values, so calls and chains (:class:`Chain`) are
checked against their types where they are made. The process that runs the component (the
host's runner, or a test's fake) implements :class:`Runtime`: NATS, links, claims, health.
"""

from mlcloud.lattice.control import HealthReport
from mlcloud.sdk.chain import Chain
from mlcloud.sdk.component import Actor, Context, Operation, Provider, operation
from mlcloud.sdk.runtime import Runtime

__all__ = ["Actor", "Chain", "Context", "HealthReport", "Operation", "Provider", "Runtime", "operation"]
