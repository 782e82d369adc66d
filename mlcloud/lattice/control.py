"""The control plane's messages, defined once for hosts, the control client, the CLI and the washboard.

The data plane's types are in :mod:`mlcloud.interfaces` (msgpack, camelCase wire names as
wasmCloud's interfaces). The control plane speaks JSON with snake_case names, as wasmCloud 0.x's
control interface (``wasmbus.ctl.{lattice}.…``) and its events do::

    control request                    subject (mlcloud.lattice.subjects)   CtlReply[...]
    Empty              ping            ctl_ping_hosts                        HostInfo (one per host)
    Empty              inventory       ctl_inventory                         HostInventory
    StartActor         la              ctl_command                           ActorReply
    ScaleActor         scale           ctl_command                           ActorReply
    StopActor          sa              ctl_command                           ActorReply
    StartProvider      lp              ctl_command                           ProviderReply
    StopProvider       sp              ctl_command                           ProviderReply
    Empty              stop            ctl_command                           Empty
    LinkDefinition     linkdefs.put    ctl_links                             LinkPutReply
    LinkId             linkdefs.del    ctl_links                             Empty
    Empty              linkdefs.get    ctl_links                             LinkList

Every reply is a :class:`CtlReply` carrying ``success`` and either the ``response`` or the same
``{kind, message, details}`` error as an RPC reply, rebuilt on the client into its
:mod:`mlcloud.errors` class. Events travel in a CloudEvents envelope (:mod:`mlcloud.lattice.events`)
whose ``data`` is the payload :data:`EVENT_TYPES` names for the event.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import msgspec

from mlcloud.errors import MLCloudError, error_from_wire
from mlcloud.interfaces import ModelInfo, RepositoryModel

T = TypeVar("T")

DEFAULT_LINK_NAME = "default"


class _Ctl(msgspec.Struct, kw_only=True):
    """Base of every control-plane message: snake_case JSON, unknown fields ignored.

    (``kw_only`` covers only the fields a class itself declares: a subclass adding a required
    field after inherited optional ones says ``kw_only=True`` again.)
    """


class Empty(_Ctl):
    """A request or reply without fields."""


# ---- errors and replies ----------------------------------------------------------------------


class ErrorInfo(_Ctl):
    """An error as it crosses a process: the same shape as ``MLCloudError.to_wire``."""

    kind: str
    message: str
    details: dict[str, Any] = {}

    @classmethod
    def of(cls, err: MLCloudError) -> ErrorInfo:
        return cls(kind=err.kind, message=err.message, details=err.details)

    def to_error(self) -> MLCloudError:
        return error_from_wire(msgspec.structs.asdict(self))


class CtlReply(_Ctl, Generic[T]):
    """Every control reply: ``success`` with the ``response``, or the error the host raised."""

    success: bool = True
    response: T | None = None
    error: ErrorInfo | None = None

    @classmethod
    def failed(cls, err: MLCloudError) -> CtlReply[Any]:
        return CtlReply(success=False, error=ErrorInfo.of(err))

    def result(self) -> T:
        """The response; a refused request raises the error the host reported."""
        if not self.success or self.response is None:
            raise (self.error or ErrorInfo(kind="RemoteError", message="a refused control request")).to_error()
        return self.response


# ---- inventories -------------------------------------------------------------------------------


class InstanceStatus(enum.StrEnum):
    AWAITING = "awaiting"  # process started, not yet ready
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # died or failed its health check; restart pending
    STOPPED = "stopped"


class InstanceInfo(_Ctl):
    instance_id: str
    status: InstanceStatus
    status_since: float  # the host's clock: the newer of an event and a poll wins
    pid: int | None = None
    restarts: int = 0


class ComponentInfo(_Ctl):
    """An actor as a host reports it (a provider adds its contract, link name and config)."""

    id: str  # the public key
    name: str
    image_ref: str
    digest: str = ""
    version: str = ""
    revision: int = 0
    capabilities: list[str] = []
    instances: list[InstanceInfo] = []


class ProviderInfo(ComponentInfo):
    contract_id: str = ""
    link_name: str = DEFAULT_LINK_NAME
    config: dict[str, Any] = {}  # the provider's own settings, as the operator gave them


class HostInfo(_Ctl):
    """A host's answer to a ping."""

    id: str
    labels: dict[str, str] = {}
    version: str = ""
    uptime_seconds: float = 0.0
    lattice: str = ""
    actors: int = 0  # instances
    providers: int = 0
    dev: bool = False  # started with the development flag: runs unsigned local folders


class HostInventory(_Ctl):
    host_id: str
    labels: dict[str, str] = {}
    version: str = ""
    uptime_seconds: float = 0.0
    actors: list[ComponentInfo] = []
    providers: list[ProviderInfo] = []
    dev: bool = False  # as HostInfo.dev

    def components(self) -> list[ComponentInfo]:
        return [*self.actors, *self.providers]


class HealthReport(_Ctl):
    """A provider's answer to the host's health check (RPC ``Health`` on its health subject)."""

    healthy: bool
    message: str = ""


# ---- metrics (answers to a scrape on wasmbus.metrics.{lattice}; msgpack: a value may be ±Inf or NaN) ----


class MetricSample(msgspec.Struct, array_like=True):
    """One sample of a Prometheus family: ``[name, labels, value]`` on the wire."""

    name: str
    labels: dict[str, str]
    value: float


class MetricFamily(_Ctl):
    """One ``prometheus_client`` metric family (counter, gauge, histogram, …) and its samples."""

    name: str
    type: str
    help: str = ""
    samples: list[MetricSample] = []


class MetricsReport(_Ctl):
    """One process's figures: a host's (``instance_id`` empty) or one instance's.

    A host also names the instances it runs that should answer (``expect``), so the gatherer
    knows when it has heard from everyone instead of waiting out its deadline."""

    host_id: str
    component: str = ""
    instance_id: str = ""
    families: list[MetricFamily] = []
    expect: list[str] = []


# ---- commands ---------------------------------------------------------------------------------


class StartActor(_Ctl):
    actor_ref: str
    count: int = 1  # instances to add


class ScaleActor(_Ctl):
    """Set the number of instances of a running actor, or of ``actor_ref`` (started if needed)."""

    count: int
    actor_id: str = ""
    actor_ref: str = ""


class StopActor(_Ctl):
    actor_id: str  # public key, image ref or name


class ActorReply(_Ctl):
    actor_id: str
    instances: int = 0


class StartProvider(_Ctl):
    provider_ref: str
    link_name: str = DEFAULT_LINK_NAME
    config: dict[str, Any] = {}


class StopProvider(_Ctl):
    provider_id: str  # public key or name
    link_name: str = DEFAULT_LINK_NAME


class ProviderReply(_Ctl):
    provider_id: str
    link_name: str = DEFAULT_LINK_NAME
    already_running: bool = False


# ---- links ------------------------------------------------------------------------------------


class LinkDefinition(msgspec.Struct, kw_only=True, frozen=True):
    """Actor ↔ provider for a contract, with the values the provider reads for that actor.

    Frozen, as every process that holds a link shares it; so it takes ``_Ctl``'s options itself
    rather than deriving from it (a frozen struct cannot derive from a mutable one for mypy).
    """

    actor_id: str
    provider_id: str
    contract_id: str
    link_name: str = DEFAULT_LINK_NAME
    values: dict[str, str] = {}

    def same_link(self, other: LinkDefinition | LinkId) -> bool:
        return (self.actor_id, self.contract_id, self.link_name) == (other.actor_id, other.contract_id, other.link_name)


class LinkId(_Ctl):
    actor_id: str
    contract_id: str
    link_name: str = DEFAULT_LINK_NAME


class LinkPutReply(_Ctl):
    changed: bool


class LinkList(_Ctl):
    links: list[LinkDefinition] = []


class LinkModels(_Ctl):
    """The models of one mlinference link, as its provider reports them (or why it could not)."""

    actor_id: str
    provider_id: str
    link_name: str
    models: list[ModelInfo] | None = None
    error: str = ""


class ModelList(_Ctl):
    """A host's answer for the mlinference providers it runs: every link's models."""

    links: list[LinkModels] = []


class RepositoryOp(enum.StrEnum):
    INDEX = "index"
    LOAD = "load"
    UNLOAD = "unload"


class RepositoryCommand(_Ctl):
    """A model repository operation (as ``/v2/repository`` offers it) on one mlinference link,
    which the host running the link's provider makes as itself for the link's actor."""

    op: RepositoryOp
    actor_id: str
    provider_id: str
    link_name: str = DEFAULT_LINK_NAME
    model: str = ""
    bindle_id: str = ""


class RepositoryReply(_Ctl):
    models: list[RepositoryModel] = []


# ---- events -----------------------------------------------------------------------------------


class EventName(enum.StrEnum):
    """Past-tense snake_case, as wasmCloud names its lattice events."""

    HOST_STARTED = "host_started"
    HOST_STOPPED = "host_stopped"
    HOST_HEARTBEAT = "host_heartbeat"
    COMPONENT_REFUSED = "component_refused"
    ACTOR_STARTED = "actor_started"
    ACTOR_STOPPED = "actor_stopped"
    ACTOR_RESTARTED = "actor_restarted"
    PROVIDER_STARTED = "provider_started"
    PROVIDER_STOPPED = "provider_stopped"
    PROVIDER_RESTARTED = "provider_restarted"
    HEALTH_CHECK_PASSED = "health_check_passed"
    HEALTH_CHECK_FAILED = "health_check_failed"
    LINKDEF_SET = "linkdef_set"
    LINKDEF_DELETED = "linkdef_deleted"
    MODEL_LOADED = "model_loaded"
    MODEL_LOAD_FAILED = "model_load_failed"
    MODEL_SWAPPED = "model_swapped"
    MODEL_UNLOADED = "model_unloaded"
    SERVER_RESTARTED = "server_restarted"


class HostStarted(_Ctl):
    host_id: str
    labels: dict[str, str] = {}
    version: str = ""


class HostStopped(_Ctl):
    host_id: str


class HostHeartbeat(HostInfo, kw_only=True):
    inventory: HostInventory


class ComponentRefused(_Ctl):
    """A component the host would not run: an untrusted signer, a failed verification, an
    unsigned local folder on a host without the development flag, …"""

    host_id: str
    image_ref: str
    kind: str  # the error's kind (UntrustedIssuer, UnsignedComponent, HashMismatch, …)
    reason: str
    issuer: str = ""  # the signing account, when the claims were read


class InstanceChanged(_Ctl):
    """An instance started, stopped, restarted, or passed or failed its health check."""

    host_id: str
    public_key: str
    name: str
    instance_id: str
    status: InstanceStatus
    reason: str = ""
    restarts: int = 0
    link_name: str = ""  # providers only
    contract_id: str = ""


class ModelChanged(_Ctl):
    """A model of the mlinference provider loaded, failed, was swapped or unloaded, for one actor's link."""

    actor_id: str
    model: str  # the route
    bindle_id: str
    engine: str = ""
    state: str = ""  # a ModelInfo's state
    reason: str = ""


class ServerRestarted(_Ctl):
    """A server ``mlcloud up`` supervises (nats-server, the registry) died and was started again in its place."""

    server: str  # "nats-server", "registry"
    url: str
    pid: int | None
    exit_code: int | None  # negative: killed by that signal
    restarts: int


EventData = (
    HostStarted | HostStopped | HostHeartbeat | ComponentRefused | InstanceChanged | LinkDefinition | ModelChanged
    | ServerRestarted
)

_INSTANCE_EVENTS = (
    EventName.ACTOR_STARTED, EventName.ACTOR_STOPPED, EventName.ACTOR_RESTARTED, EventName.PROVIDER_STARTED,
    EventName.PROVIDER_STOPPED, EventName.PROVIDER_RESTARTED, EventName.HEALTH_CHECK_PASSED,
    EventName.HEALTH_CHECK_FAILED,
)
_MODEL_EVENTS = (EventName.MODEL_LOADED, EventName.MODEL_LOAD_FAILED, EventName.MODEL_SWAPPED, EventName.MODEL_UNLOADED)

EVENT_TYPES: dict[EventName, type[EventData]] = {
    EventName.HOST_STARTED: HostStarted,
    EventName.HOST_STOPPED: HostStopped,
    EventName.HOST_HEARTBEAT: HostHeartbeat,
    EventName.COMPONENT_REFUSED: ComponentRefused,
    **{name: InstanceChanged for name in _INSTANCE_EVENTS},
    EventName.LINKDEF_SET: LinkDefinition,
    EventName.LINKDEF_DELETED: LinkDefinition,
    **{name: ModelChanged for name in _MODEL_EVENTS},
    EventName.SERVER_RESTARTED: ServerRestarted,
}
"""The payload type of each event: the one place a producer and a reader agree on it."""
