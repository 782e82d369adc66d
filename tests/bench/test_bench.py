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

    assert {"machine", "config", "runs", "ratios", "memory", "notes"} <= report.keys()
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

    # The table form renders the same result.
    parsed = BenchResult(report["machine"], report["config"], [Run(**r) for r in runs], report["memory"],
                         report["notes"])
    table = render(parsed)
    assert "mlcloud/limit" in table and "mlcloud/naive" in table
