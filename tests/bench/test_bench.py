"""``mlcloud bench --quick --json`` runs every system and prints a well-formed result.

Benchmarks are not tests: nothing here asserts a timing, only the shape of the answer.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mlcloud.bench.cli import bench_command, render
from mlcloud.bench.runner import BenchResult, Run

pytestmark = pytest.mark.slow

RUN_FIELDS = {
    "system", "variant", "concurrency", "requests", "errors", "throughput", "p50_ms", "p90_ms", "p99_ms",
    "mean_ms", "cpu_cores", "cpu_ms_per_request", "peak_rss_mb",
}


def test_quick_bench_prints_a_well_formed_json_result(tmp_path):
    result = CliRunner().invoke(bench_command, ["--quick", "--json", "--work-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    report = json.loads(result.stdout)

    assert {"machine", "config", "runs", "ratios", "targets", "memory", "notes"} <= report.keys()
    levels = report["config"]["concurrency"]
    runs = report["runs"]
    for run in runs:
        assert RUN_FIELDS <= run.keys()
        assert run["requests"] == report["config"]["requests"] or run["variant"] != "onnxruntime"
        assert run["errors"] == 0
        assert run["throughput"] > 0 and 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"]
        assert run["peak_rss_mb"] > 0 and run["cpu_ms_per_request"] >= 0
    seen = {(r["system"], r["variant"], r["concurrency"]) for r in runs}
    for system in ("limit", "naive", "mlcloud"):
        assert {(system, "onnxruntime", c) for c in levels} <= seen
    variants = {r["variant"] for r in runs if r["system"] == "mlcloud"}
    assert {"batch off", "tract"} <= variants and any(v.startswith("batch ") and v != "batch off" for v in variants)
    assert [row["concurrency"] for row in report["ratios"]] == levels
    for row in report["ratios"]:
        for other in ("mlcloud/limit", "mlcloud/naive"):
            assert row[other]["throughput"] > 0 and row[other]["p50"] > 0
    assert report["memory"]["peak_rss_mb"] > 0 and report["memory"]["processes_mb"]
    judged = {t["target"]: t for t in report["targets"]}
    assert {"p50 over the limit's (ms)", "throughput / limit's", "throughput / naive's",
            "host + instances RSS (MB)"} <= judged.keys()
    assert all(isinstance(t["met"], bool) and t["value"] is not None for t in judged.values())

    # The table form renders the same result.
    parsed = BenchResult(report["machine"], report["config"], [Run(**r) for r in runs], report["memory"],
                         report["notes"])
    table = render(parsed)
    assert "mlcloud/limit" in table and "mlcloud/naive" in table and "host + instances RSS" in table


def _run(system: str, c: int, throughput: float, p50: float) -> Run:
    return Run(system=system, variant="onnxruntime", concurrency=c, requests=100, errors=0, throughput=throughput,
               p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50, cpu_cores=1.0, cpu_ms_per_request=20.0,
               peak_rss_mb=100.0)


def test_targets_are_judged_from_the_runs_and_the_memory_of_the_host_without_the_embedded_servers():
    runs = [_run("limit", 1, 90, 11.0), _run("naive", 1, 80, 12.0), _run("mlcloud", 1, 60, 12.2),
            _run("limit", 16, 100, 150), _run("naive", 16, 105, 150), _run("mlcloud", 16, 95, 160)]
    memory = {"peak_rss_mb": 650.0, "processes_mb": {
        "mlinference (3)": 250.0, "api (4)": 48.0, "mlcloud.bench.stack (2)": 90.0, "preprocess (5)": 80.0,
        "nats-server (6)": 30.0, "docker-registry (7)": 40.0}}
    judged = {t["target"]: t for t in BenchResult({}, {}, runs, memory).targets()}
    assert judged["p50 over the limit's (ms)"] == {
        "target": "p50 over the limit's (ms)", "concurrency": 1, "value": 1.2, "goal": "<= 1.5", "met": True}
    assert (judged["throughput / limit's"]["value"], judged["throughput / limit's"]["met"]) == (0.95, True)
    assert (judged["throughput / naive's"]["value"], judged["throughput / naive's"]["met"]) == (0.905, False)
    assert judged["throughput / naive's"]["concurrency"] == 16
    assert (judged["host + instances RSS (MB)"]["value"], judged["host + instances RSS (MB)"]["met"]) == (468.0, True)
