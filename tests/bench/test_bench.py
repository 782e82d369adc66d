"""``mlcloud bench --quick --json`` runs every system and prints a well-formed result.

Benchmarks are not tests: nothing here asserts a timing, only the shape of the answer.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mlcloud.bench.cli import bench_command, render
from mlcloud.bench.result import BenchResult, Run

pytestmark = pytest.mark.slow

RUN_FIELDS = {
    "system", "variant", "concurrency", "requests", "errors", "throughput", "p50_ms", "p90_ms", "p99_ms",
    "mean_ms", "cpu_cores", "cpu_ms_per_request", "peak_rss_mb",
}


@pytest.mark.timeout(300)  # seven systems, two levels, the variants: ~40 s alone, minutes on a busy machine
def test_quick_bench_prints_a_well_formed_json_result(tmp_path):
    result = CliRunner().invoke(bench_command, ["--quick", "--json", "--work-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    report = json.loads(result.stdout)

    assert {"machine", "config", "runs", "ratios", "targets", "memory", "notes"} <= report.keys()
    levels = report["config"]["concurrency"]
    setups = report["config"]["setups"]
    assert setups == ["default", "one-thread", "mlcloud"]
    runs = report["runs"]
    for run in runs:
        assert RUN_FIELDS <= run.keys()
        assert run["requests"] == report["config"]["requests"] or not run["variant"].startswith("onnxruntime")
        assert run["errors"] == 0
        assert run["throughput"] > 0 and 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"]
        assert run["peak_rss_mb"] > 0 and run["cpu_ms_per_request"] >= 0
    seen = {(r["system"], r["variant"], r["concurrency"]) for r in runs}
    for system in ("limit", "naive"):  # each onnxruntime set-up, at each level
        assert {(system, f"onnxruntime/{setup}", c) for setup in setups for c in levels} <= seen
    assert {("mlcloud", "onnxruntime", c) for c in levels} <= seen
    variants = {r["variant"] for r in runs if r["system"] == "mlcloud"}
    assert {"batch off", "tract"} <= variants and any(v.startswith("batch ") and v != "batch off" for v in variants)
    # The breakdown by process of the lattice: CPU and wake-ups per request.
    main = [r for r in runs if r["system"] == "mlcloud" and r["variant"] == "onnxruntime"]
    lattice = {"api", "httpserver", "preprocess", "postprocess", "mlinference", "nats-server"}
    for run in main:
        assert lattice <= run["processes"].keys()
        assert run["processes"]["mlinference"]["cpu_ms_per_request"] > 0
    assert [row["concurrency"] for row in report["ratios"]] == levels
    for row in report["ratios"]:
        for other in ("mlcloud/limit", "mlcloud/naive"):  # against that level's best set-up
            assert row[other]["throughput"] > 0 and row[other]["p50"] > 0
            assert row[other]["variant"] in {f"onnxruntime/{setup}" for setup in setups}
    assert report["memory"]["peak_rss_mb"] > 0 and report["memory"]["processes_mb"]
    judged = {t["target"]: t for t in report["targets"]}
    assert judged.keys() == {"req/s / best limit's", "req/s / best naive's", "req/s / best peer's",
                             "p50 - best naive's p50 (ms)", "p99 / p50", "tree RSS at peak (MB)"}
    assert judged["req/s / best peer's"]["met"] is None  # no --peers: not measured, and said so
    assert all(isinstance(t["met"], bool) and t["value"] is not None
               for name, t in judged.items() if name != "req/s / best peer's")

    # The table form renders the same result.
    parsed = BenchResult(report["machine"], report["config"], [Run(**r) for r in runs], report["memory"],
                         report["notes"])
    table = render(parsed)
    assert "mlcloud/limit" in table and "mlcloud/naive" in table and "tree RSS at peak" in table
    assert "mlcloud process" in table and "not measured" in table


def _run(system: str, c: int, throughput: float, p50: float, variant: str = "onnxruntime", p99: float = 0.0) -> Run:
    return Run(system=system, variant=variant, concurrency=c, requests=100, errors=0, throughput=throughput,
               p50_ms=p50, p90_ms=p50, p99_ms=p99 or p50, mean_ms=p50, cpu_cores=1.0, cpu_ms_per_request=20.0,
               peak_rss_mb=100.0)


def test_targets_are_judged_against_the_best_set_up_and_the_best_peer():
    runs = [_run("limit", 1, 90, 11.0, "onnxruntime/default"), _run("limit", 1, 80, 12.5, "onnxruntime/one-thread"),
            _run("naive", 1, 70, 13.0, "onnxruntime/default"), _run("naive", 1, 75, 12.0, "onnxruntime/mlcloud"),
            _run("mlserver", 1, 60, 16.0), _run("bentoml", 1, 64, 15.0),
            _run("mlcloud", 1, 66, 14.5, p99=20.0),
            _run("limit", 16, 100, 150, "onnxruntime/default"), _run("limit", 16, 120, 130, "onnxruntime/one-thread"),
            _run("naive", 16, 105, 150, "onnxruntime/default"), _run("naive", 16, 110, 140, "onnxruntime/one-thread"),
            _run("mlcloud", 16, 111, 140)]
    judged = {t["target"]: t for t in BenchResult({}, {}, runs, {"peak_rss_mb": 590.0}).targets()}
    limit = judged["req/s / best limit's"]
    assert (limit["value"], limit["met"], limit["against"], limit["concurrency"]) == (0.925, True,
                                                                                     "onnxruntime/one-thread", 16)
    assert (judged["req/s / best naive's"]["value"], judged["req/s / best naive's"]["met"]) == (1.009, True)
    assert (judged["req/s / best peer's"]["value"], judged["req/s / best peer's"]["against"]) == (1.031, "bentoml")
    naive = judged["p50 - best naive's p50 (ms)"]
    assert (naive["value"], naive["met"], naive["against"]) == (2.5, True, "onnxruntime/mlcloud")
    assert (judged["p99 / p50"]["value"], judged["p99 / p50"]["met"]) == (1.379, True)
    assert (judged["tree RSS at peak (MB)"]["value"], judged["tree RSS at peak (MB)"]["met"]) == (590.0, True)


def test_a_target_the_run_could_not_measure_is_neither_met_nor_missed():
    runs = [_run("limit", 1, 90, 11.0, "onnxruntime/default"), _run("mlcloud", 1, 60, 30.0, p99=60.0)]
    judged = {t["target"]: t for t in BenchResult({}, {}, runs, {}).targets()}
    assert judged["req/s / best peer's"]["met"] is None and judged["p50 - best naive's p50 (ms)"]["met"] is None
    assert judged["tree RSS at peak (MB)"]["met"] is None
    assert judged["p99 / p50"]["met"] is False  # 2.0


def test_a_missed_target_says_what_in_the_run_keeps_the_design_from_it():
    """The figures of the quiet run in docs/performance.md: the carriers (nats-server, httpserver,
    api) alone cap c=16 at the limit's CPU over the limit's plus theirs."""
    def lattice(c: int, throughput: float, p50: float, p99: float, cpu: float, carried: tuple[float, ...]) -> Run:
        run = _run("mlcloud", c, throughput, p50, p99=p99)
        run.cpu_ms_per_request, run.cpu_cores = cpu, 1.88
        run.processes = {name: {"cpu_ms_per_request": ms, "wakeups_per_request": 2.0}
                         for name, ms in zip(("nats-server", "httpserver", "api"), carried, strict=True)}
        run.processes["mlinference"] = {"cpu_ms_per_request": 14.0, "wakeups_per_request": 4.0}
        return run

    limit16 = _run("limit", 16, 129.1, 108.8, "onnxruntime/one-thread")
    limit16.cpu_ms_per_request = 16.4
    naive16 = _run("naive", 16, 132.5, 120.4, "onnxruntime/one-thread")
    naive16.cpu_ms_per_request = 15.6
    runs = [_run("limit", 1, 99.4, 9.8, "onnxruntime/default", p99=17.9), _run("naive", 1, 87.0, 11.2),
            _run("bentoml", 1, 77.3, 12.9), limit16, naive16,
            lattice(1, 51.9, 18.7, 31.7, 28.7, (2.77, 1.67, 1.60)),
            lattice(16, 87.0, 182.3, 268.4, 24.5, (2.10, 1.37, 1.27))]
    result = BenchResult({"cpus": 2}, {}, runs, {"peak_rss_mb": 586.0, "rss_mb_now": 586.0})
    judged = {t["target"]: t for t in result.targets()}
    assert all(not judged[name]["met"] for name in judged if name != "tree RSS at peak (MB)")
    assert "4.7 CPU ms a request beside the pipeline's 16.4" in judged["req/s / best limit's"]["why"]
    assert "at most 0.78x" in judged["req/s / best limit's"]["why"]  # 16.4 / (16.4 + 4.74)
    assert "at most 0.74x" in judged["req/s / best naive's"]["why"]  # 15.6 / 21.14
    assert "nats-server and api, which a one-process server does without, spend 4.4 CPU ms a request at c=1" \
        in judged["p50 - best naive's p50 (ms)"]["why"]
    assert judged["req/s / best peer's"]["why"].startswith("bentoml answers at p50 12.9 ms")
    assert "(onnxruntime/default) has 1.83: its spinning threads and the other processes share 2 cores" \
        in judged["p99 / p50"]["why"]
    assert judged["tree RSS at peak (MB)"]["why"] == ""  # met: nothing to explain
    assert "why not req/s / best limit's: the cores are the limit" in render(result)
