"""Every Prometheus metric mlcloud keeps, defined once, and the merge of many processes' figures.

Each process (an instance, a host) observes its own figures in its own ``prometheus_client``
registry: :data:`REGISTRY` for a component's process, a host's own for the host. ``GET /metrics``
on the httpserver gathers them over the lattice (:mod:`mlcloud.lattice.scrape`) and
:func:`render` merges them into one exposition, each sample labelled with the ``host`` and, for an
instance, the ``component`` and ``instance_id`` that reported it. Nothing is summed across
processes: a restarted instance keeps its ``instance_id`` and starts its counters from 0, which
Prometheus reads as a counter reset (docs/metrics.md lists every metric and its labels).

Observing is cheap (a dict lookup and a few additions under a lock, ~1-2 µs); nothing here sends a
message per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlcloud.interfaces import ModelInfo, ModelState
from mlcloud.lattice.control import HostInventory, InstanceStatus, MetricFamily, MetricSample, MetricsReport

# Seconds: from the ~1 ms of a small tensor to the RPC timeout's order.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# The stages of a request's time (``stage`` label of STAGE_DURATION); the lattice's share is the
# request's duration less these (docs/metrics.md).
PREPROCESS, QUEUE, INFERENCE, POSTPROCESS = "preprocess", "queue", "inference", "postprocess"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the format of render (generate_latest)

REGISTRY = CollectorRegistry()
"""The figures of this component process (the runner answers scrapes with it)."""
ProcessCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "mlcloud_http_requests", "HTTP requests answered by the httpserver, by route, model, version and status.",
    ["route", "model", "version", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "mlcloud_http_request_duration_seconds",
    "Time from a request's arrival at the httpserver to its answer, every status included.",
    ["route", "model", "version"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
INFERENCE_REQUESTS = Counter(
    "mlcloud_inference_requests", "MlInference.Predict calls, by model, version and result (Success or an error kind).",
    ["model", "version", "result"], registry=REGISTRY)
INFERENCE_DURATION = Histogram(
    "mlcloud_inference_request_duration_seconds",
    "Time the mlinference provider spent on a successful Predict call (queue, input, compute, output).",
    ["model", "version"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
STAGE_DURATION = Histogram(
    "mlcloud_stage_duration_seconds",
    "Time of one stage of a request: preprocess, queue (waiting for a batch or a thread), inference, postprocess.",
    ["stage", "model"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
BATCH_SIZE = Histogram(
    "mlcloud_inference_batch_size", "Rows per model execution (1 when a request runs alone).",
    ["model", "version"], buckets=BATCH_BUCKETS, registry=REGISTRY)


def version_of(bindle_id: str) -> str:
    """The version part of a bindle id (``efficientnet-lite0/1.0.0`` → ``1.0.0``), the ``version`` label."""
    return bindle_id.rpartition("/")[2] if "/" in bindle_id else ""


def observe_execution(requests: Sequence[tuple[str, str, float]], compute: float, rows: int) -> None:
    """One model execution of ``rows`` rows that served ``requests`` (model, version, seconds queued)."""
    model, version = requests[0][0], requests[0][1]
    BATCH_SIZE.labels(model, version).observe(rows)
    for route, _, waited in requests:
        STAGE_DURATION.labels(QUEUE, route).observe(waited)
        STAGE_DURATION.labels(INFERENCE, route).observe(compute)


# ---- the HTTP API's routes, as labels --------------------------------------------------------

_V2_PATHS = {("v2",), ("v2", "health", "live"), ("v2", "health", "ready"), ("v2", "models"),
             ("v2", "repository", "index")}
_V2_MODEL_TAILS = {(), ("ready",), ("infer",)}


def route_of(path: str) -> tuple[str, str]:
    """(route template, model named in the path) of an HTTP API path, e.g. ``("/{model}/matches",
    "mobilenetv27")``; ``("other", "")`` for a path of no known shape, so a client cannot make a
    label value of its own."""
    parts = tuple(p for p in path.split("/") if p)
    if parts in _V2_PATHS:
        return "/" + "/".join(parts), ""
    if parts[:2] == ("v2", "models") and len(parts) >= 3:
        tail = parts[3:]
        version = ("versions", "{version}") if tail[:1] == ("versions",) and len(tail) >= 2 else ()
        if tail[len(version):] in _V2_MODEL_TAILS:
            return "/".join(("", "v2", "models", "{model}", *version, *tail[len(version):])), parts[2]
        return "other", ""
    if parts[:3] == ("v2", "repository", "models") and len(parts) == 5 and parts[4] in ("load", "unload"):
        return f"/v2/repository/models/{{model}}/{parts[4]}", parts[3]
    if parts[:1] == ("models",) and len(parts) <= 2:  # mlcloud's own view of the models
        return ("/models/{model}", parts[1]) if len(parts) == 2 else ("/models", "")
    if len(parts) == 1 and parts[0] != "v2":
        return "/{model}", parts[0]
    if len(parts) == 2 and parts[1] in ("matches", "preprocess"):
        return f"/{{model}}/{parts[1]}", parts[0]
    return "other", ""


class HttpFigures:
    """The httpserver's request figures. A path's model becomes a label only once the actor has
    vouched for it with an ``X-Model`` header (the bindle that serves it), so a client sending
    made-up names cannot grow the label set; a request the lattice failed (504, 503) still gets the
    label of a model seen before."""

    def __init__(self) -> None:
        self.served_by: dict[str, str] = {}  # model → bindle id, from the actor's answers

    def observe(self, path: str, status: int, x_model: str, seconds: float) -> None:
        route, model = route_of(path)
        if model and x_model:
            self.served_by[model] = x_model
        bindle = self.served_by.get(model, "") if model else ""
        if not bindle:
            model = ""
        version = version_of(bindle)
        HTTP_REQUESTS.labels(route, model, version, str(status)).inc()
        HTTP_DURATION.labels(route, model, version).observe(seconds)


class ModelFigures(Collector):
    """An mlinference provider's models, read from its registries at each scrape: each route's
    state (1 for the state it is in, 0 for the others, as prometheus_client's ``Enum``) and the
    load time of the model serving it. A route that is relinked or unlinked leaves no stale series."""

    def __init__(self, status: Callable[[], Iterable[ModelInfo]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("mlcloud_model_state", "1 for the state the route's model is in, 0 for the others.",
                                  labels=("model", "version", "state"))
        load = GaugeMetricFamily(
            "mlcloud_model_load_duration_seconds", "Seconds the load of the route's model took (fetch, load, warm-up).",
            labels=("model", "version", "engine"))
        for info in self.status():
            version = version_of(info.bindle_id)
            for each in ModelState:
                state.add_metric([info.name, version, each.value], float(info.state is each))
            if info.state is ModelState.READY:
                load.add_metric([info.name, version, info.engine], info.load_seconds)
        yield state
        yield load


# ---- a host's --------------------------------------------------------------------------------


class InstanceFigures(Collector):
    """A host's figures of its instances, read from its inventory at each scrape (the supervisor
    counts the restarts; the health checks set the status): restarts survive the instance."""

    LABELS = ("component", "kind", "instance_id")

    def __init__(self, inventory: Callable[[], HostInventory]) -> None:
        self.inventory = inventory

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "mlcloud_instance_restarts", "Times the host restarted the instance after it died.", labels=self.LABELS)
        healthy = GaugeMetricFamily(
            "mlcloud_instance_healthy", "1 while the instance is healthy (ready, passing its health checks), else 0.",
            labels=self.LABELS)
        inventory = self.inventory()
        for kind, components in (("actor", inventory.actors), ("provider", inventory.providers)):
            for component in components:
                for instance in component.instances:
                    labels = [component.name, kind, instance.instance_id]
                    restarts.add_metric(labels, instance.restarts)
                    healthy.add_metric(labels, float(instance.status is InstanceStatus.HEALTHY))
        yield restarts
        yield healthy


def host_registry(inventory: Callable[[], HostInventory]) -> CollectorRegistry:
    """A host's own registry: its instances' figures and its process's."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(InstanceFigures(inventory))
    return registry


def expected_instances(inventory: HostInventory) -> list[str]:
    """The instances of a host that should answer a scrape: those healthy now."""
    return [i.instance_id for c in [*inventory.actors, *inventory.providers] for i in c.instances
            if i.status is InstanceStatus.HEALTHY]


# ---- across processes --------------------------------------------------------------------------


def families(registry: CollectorRegistry) -> list[MetricFamily]:
    """``registry``'s figures now, as they travel in a :class:`MetricsReport`.

    Without the ``_created`` samples of counters and histograms: the text format has no place for
    them, so Prometheus would read each as a gauge family of its own."""
    return [MetricFamily(name=m.name, type=m.type, help=m.documentation,
                         samples=[MetricSample(s.name, s.labels, s.value) for s in m.samples
                                  if s.name != f"{m.name}_created"])
            for m in registry.collect()]


class _Merged(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def merge(reports: Iterable[MetricsReport]) -> list[Metric]:
    """The families of every report, each sample labelled with its reporter, sorted by name.

    A family that two reporters give different types (versions of mlcloud side by side) keeps the
    first type it was seen with; the other reporter's samples of it are left out. A second report
    in the name of the same host and instance is left out too: its samples would repeat series,
    which Prometheus refuses for the whole scrape."""
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, str]] = set()
    for report in reports:
        if (report.host_id, report.instance_id) in seen:
            continue
        seen.add((report.host_id, report.instance_id))
        reporter = {"host": report.host_id}
        if report.instance_id:
            reporter |= {"component": report.component, "instance_id": report.instance_id}
        for family in report.families:
            metric = merged.get(family.name)
            if metric is None:
                metric = merged[family.name] = Metric(family.name, family.help, family.type)
            elif metric.type != family.type:
                continue
            for sample in family.samples:
                metric.add_sample(sample.name, {**sample.labels, **reporter}, sample.value)
    return [merged[name] for name in sorted(merged)]


def render(reports: Iterable[MetricsReport]) -> bytes:
    """One Prometheus text exposition of every report (``generate_latest``'s format)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merge(reports)))
    return generate_latest(registry)
