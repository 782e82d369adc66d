"""The merge of many processes' figures into one exposition, and the labels (mlcloud/metrics.py).

Fast: no lattice. The scrape over NATS and the figures of a real stack are in
tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from mlcloud import metrics
from mlcloud.interfaces import ModelInfo, ModelState
from mlcloud.lattice.control import (
    ComponentInfo,
    HostInventory,
    InstanceInfo,
    InstanceStatus,
    MetricFamily,
    MetricSample,
    MetricsReport,
    ProviderInfo,
)


def parse(exposition: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(exposition.decode())}


def instance_registry(requests: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("things", "Things done.", ["model"], registry=registry)
    counter.labels("m").inc(requests)
    Histogram("wait_seconds", "Waits.", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    return registry


def test_reports_merge_into_one_exposition_labelled_by_reporter_and_never_summed() -> None:
    def api(instance_id: str, requests: int) -> MetricsReport:
        return MetricsReport(host_id="NHOST", component="api", instance_id=instance_id,
                             families=metrics.families(instance_registry(requests)))

    reports = [
        api("i1", 3),
        api("i2", 4),
        MetricsReport(host_id="NHOST", families=[MetricFamily(name="up", type="gauge", help="Up.",
                                                              samples=[MetricSample("up", {}, 1.0)])]),
    ]
    families = parse(metrics.render(reports))
    assert sorted(families) == ["things", "up", "wait_seconds"]
    assert [(labels, value) for name, labels, value in families["things"] if name == "things_total"] == [
        ({"model": "m", "host": "NHOST", "component": "api", "instance_id": "i1"}, 3.0),
        ({"model": "m", "host": "NHOST", "component": "api", "instance_id": "i2"}, 4.0),
    ]
    assert families["up"] == [("up", {"host": "NHOST"}, 1.0)]  # a host's own figures: no instance
    buckets = [(labels["instance_id"], labels["le"], value) for name, labels, value in families["wait_seconds"]
               if name == "wait_seconds_bucket"]
    assert buckets == [("i1", "0.1", 0.0), ("i1", "1.0", 1.0), ("i1", "+Inf", 1.0),
                       ("i2", "0.1", 0.0), ("i2", "1.0", 1.0), ("i2", "+Inf", 1.0)]


def test_a_family_of_another_type_from_another_reporter_is_left_out() -> None:
    gauge = MetricFamily(name="things", type="gauge", samples=[MetricSample("things", {}, 9.0)])
    reports = [
        MetricsReport(host_id="N1", component="api", instance_id="i1", families=metrics.families(instance_registry(1))),
        MetricsReport(host_id="N2", component="api", instance_id="i2", families=[gauge]),
    ]
    assert [labels["instance_id"] for _, labels, _ in parse(metrics.render(reports))["things"]] == ["i1"]


def test_a_second_report_in_the_same_name_is_left_out() -> None:
    """Two reports claiming one instance would repeat its series, failing the whole scrape."""
    reports = [MetricsReport(host_id="N", component="api", instance_id="i1",
                             families=metrics.families(instance_registry(n))) for n in (1, 7)]
    assert [v for n, _, v in parse(metrics.render(reports))["things"] if n == "things_total"] == [1.0]


def test_reports_survive_the_wire_with_infinities() -> None:
    import msgspec

    report = MetricsReport(host_id="N", families=metrics.families(instance_registry(1)))
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(report), type=MetricsReport)
    assert again == report
    assert any(s.labels.get("le") == "+Inf" for f in again.families for s in f.samples)


@pytest.mark.parametrize("path, expected", [
    ("/mobilenetv27/matches", ("/{model}/matches", "mobilenetv27")),
    ("//plus3/preprocess", ("/{model}/preprocess", "plus3")),
    ("/plus3", ("/{model}", "plus3")),
    ("/models", ("/models", "")),
    ("/models/plus3", ("/models/{model}", "plus3")),
    ("/v2", ("/v2", "")),
    ("/v2/health/ready", ("/v2/health/ready", "")),
    ("/v2/models/plus3", ("/v2/models/{model}", "plus3")),
    ("/v2/models/plus3/versions/0.1.0/infer", ("/v2/models/{model}/versions/{version}/infer", "plus3")),
    ("/v2/models/plus3/ready", ("/v2/models/{model}/ready", "plus3")),
    ("/v2/repository/models/plus3/load", ("/v2/repository/models/{model}/load", "plus3")),
    ("/v2/repository/index", ("/v2/repository/index", "")),
    ("/v2/made/up/path", ("other", "")),
    ("/v2/models/plus3/whatever", ("other", "")),
    ("/a/b/c", ("other", "")),
    ("/", ("other", "")),
])
def test_a_path_becomes_a_route_template_and_the_model_it_names(path: str, expected: tuple[str, str]) -> None:
    assert metrics.route_of(path) == expected


def http_count(route: str, model: str, version: str, status: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "mlcloud_http_requests_total", {"route": route, "model": model, "version": version, "status": status})
    return value or 0.0


def test_a_model_is_a_label_only_once_the_actor_vouched_for_it() -> None:
    figures = metrics.HttpFigures()
    before = http_count("/{model}/matches", "", "", "404"), http_count("/{model}/matches", "zz", "1.0", "504")
    figures.observe("/zz/matches", 404, "", 0.001)  # a made-up name: no label of its own
    figures.observe("/zz/matches", 200, "zz/1.0", 0.002)
    figures.observe("/zz/matches", 504, "", 8.0)  # the lattice failed it: still the model seen before
    assert http_count("/{model}/matches", "", "", "404") == before[0] + 1
    assert http_count("/{model}/matches", "zz", "1.0", "504") == before[1] + 1
    assert http_count("/{model}/matches", "zz", "1.0", "200") >= 1


def test_a_host_reports_its_instances_restarts_and_health() -> None:
    inventory = HostInventory(host_id="N", labels={}, version="0", uptime_seconds=1.0, actors=[
        ComponentInfo(id="M", name="api", image_ref="", instances=[
            InstanceInfo(instance_id="a1", status=InstanceStatus.HEALTHY, status_since=0.0, restarts=2),
            InstanceInfo(instance_id="a2", status=InstanceStatus.UNHEALTHY, status_since=0.0)])],
        providers=[ProviderInfo(id="V", name="httpserver", image_ref="", contract_id="wasmcloud:httpserver",
                                link_name="default", instances=[
            InstanceInfo(instance_id="p1", status=InstanceStatus.HEALTHY, status_since=0.0)])])
    registry = metrics.host_registry(lambda: inventory)
    labels = {"component": "api", "kind": "actor", "instance_id": "a1"}
    assert registry.get_sample_value("mlcloud_instance_restarts_total", labels) == 2
    assert registry.get_sample_value("mlcloud_instance_healthy", labels) == 1
    assert registry.get_sample_value("mlcloud_instance_healthy", {**labels, "instance_id": "a2"}) == 0
    assert registry.get_sample_value(
        "mlcloud_instance_restarts_total", {"component": "httpserver", "kind": "provider", "instance_id": "p1"}) == 0
    assert metrics.expected_instances(inventory) == ["a1", "p1"]  # a dead one is not waited for


def test_a_routes_state_and_load_time_are_read_at_each_scrape() -> None:
    infos = [ModelInfo(name="plus3", bindle_id="plus3/0.1.0", engine="onnxruntime", state=ModelState.READY,
                       load_seconds=0.25),
             ModelInfo(name="big", bindle_id="big/2.0.0", state=ModelState.LOADING)]
    registry = CollectorRegistry()
    registry.register(metrics.ModelFigures(lambda: infos))
    state = {s: registry.get_sample_value("mlcloud_model_state", {"model": "big", "version": "2.0.0", "state": s})
             for s in ("LOADING", "READY", "FAILED")}
    assert state == {"LOADING": 1, "READY": 0, "FAILED": 0}
    assert registry.get_sample_value("mlcloud_model_load_duration_seconds",
                                     {"model": "plus3", "version": "0.1.0", "engine": "onnxruntime"}) == 0.25
    assert registry.get_sample_value("mlcloud_model_load_duration_seconds",
                                     {"model": "big", "version": "2.0.0", "engine": ""}) is None


# ---- the washboard's figures, read from the same metrics (providers/mlinference/metrics.py) ----


@pytest.fixture(scope="module")
def route_figures() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "providers" / "mlinference" / "metrics.py"
    spec = importlib.util.spec_from_file_location("_mlcloud_provider_mlinference_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_washboards_figures_are_the_prometheus_figures_over_the_window(route_figures: ModuleType) -> None:
    figures = route_figures.RouteFigures(window=60)
    for seconds in [0.004] * 98 + [0.2, 0.2]:
        metrics.INFERENCE_REQUESTS.labels("wash", "1.0", "Success").inc()
        metrics.INFERENCE_DURATION.labels("wash", "1.0").observe(seconds)
    metrics.INFERENCE_REQUESTS.labels("wash", "1.0", "InvalidTensor").inc()
    info = figures.annotate([ModelInfo(name="wash", bindle_id="wash/1.0")])[0]
    assert (info.requests, info.errors) == (101, 1)
    assert 2.5 < info.p50_ms <= 5.0  # within the 2.5-5 ms bucket, as histogram_quantile says
    assert 150 < info.p99_ms <= 250
    # A minute later only what came since counts.
    figures._readings[0] = (figures._readings[0][0] - 120, figures._readings[0][1])
    figures._readings[1] = (figures._readings[1][0] - 61, figures._readings[1][1])
    metrics.INFERENCE_REQUESTS.labels("wash", "1.0", "Success").inc()
    metrics.INFERENCE_DURATION.labels("wash", "1.0").observe(0.004)
    info = figures.annotate([ModelInfo(name="wash", bindle_id="wash/1.0")])[0]
    assert (info.requests, info.errors) == (1, 0)
