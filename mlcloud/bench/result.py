"""What one bench run found: its runs, the ratios of mlcloud to the others, issue 19's targets.

Kept apart from :mod:`mlcloud.bench.runner`, which measures: this module only judges, so the
tests can judge made-up runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlcloud.bench import peers
from mlcloud.bench.loadgen import LoadResult
from mlcloud.bench.monitor import Usage

ORT = "onnxruntime"  # the variant of a system serving the default route on onnxruntime

# Issue 19's targets on a 2-core machine (docs/performance.md, "The targets").
TARGET_THROUGHPUT_VS_LIMIT = 0.9  # at the highest concurrency (16 by default), against the best set-up
TARGET_THROUGHPUT_VS_NAIVE = 1.0  # at the highest concurrency: at least the naive server
TARGET_THROUGHPUT_VS_PEERS = 1.0  # at concurrency 1: at least the best framework peer
TARGET_P50_OVER_NAIVE_MS = 3.0  # at concurrency 1
TARGET_P99_OVER_P50 = 1.5  # at concurrency 1: the tail
TARGET_TREE_RSS_MB = 600.0  # the default app, nats-server and registry included

# The lattice's processes that do none of the pipeline's work (decode, resize, normalise, the
# model, top-5): they only carry its messages. Their CPU is what the design adds at the least.
CARRIERS = ("nats-server", "httpserver", "api")
# Those a one-process server has no counterpart of (it has an HTTP server too).
HOPS = ("nats-server", "api")


@dataclass
class Run:
    system: str
    variant: str
    concurrency: int
    requests: int
    errors: int
    throughput: float  # requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    cpu_cores: float  # average cores busy over the run
    cpu_ms_per_request: float
    peak_rss_mb: float
    # Per process of the system (by name): CPU ms and wake-ups (voluntary context switches) a request.
    processes: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, system: str, variant: str, concurrency: int, load: LoadResult, usage: Usage) -> Run:
        lat = np.asarray(load.latencies or [float("nan")]) * 1000
        n = len(load.latencies)
        return cls(
            system=system,
            variant=variant,
            concurrency=concurrency,
            requests=n,
            errors=load.errors,
            throughput=round_figure(load.throughput),
            p50_ms=round_figure(float(np.percentile(lat, 50))),
            p90_ms=round_figure(float(np.percentile(lat, 90))),
            p99_ms=round_figure(float(np.percentile(lat, 99))),
            mean_ms=round_figure(float(lat.mean())),
            cpu_cores=round_figure(usage.cpu_cores),
            cpu_ms_per_request=round_figure(usage.cpu_seconds * 1000 / n if n else 0.0),
            peak_rss_mb=round_figure(usage.peak_rss / 2**20),
            processes={name: {"cpu_ms_per_request": round_figure(share.cpu_seconds * 1000 / n) if n else 0.0,
                              "wakeups_per_request": round_figure(share.wakeups / n) if n else 0.0}
                       for name, share in sorted(usage.processes.items())},
        )


@dataclass
class BenchResult:
    machine: dict[str, Any]
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # the mlcloud tree at its peak
    notes: list[str] = field(default_factory=list)

    def find(self, system: str, variant: str, concurrency: int) -> Run | None:
        for run in self.runs:
            if (run.system, run.variant, run.concurrency) == (system, variant, concurrency):
                return run
        return None

    def best(self, system: str, concurrency: int) -> Run | None:
        """The system's fastest onnxruntime set-up at ``concurrency`` (most requests a second)."""
        runs = [r for r in self.runs if r.system == system and r.concurrency == concurrency
                and (r.variant == ORT or r.variant.startswith(ORT + "/"))]
        return max(runs, key=lambda r: r.throughput, default=None)

    def peers(self) -> list[str]:
        return sorted({r.system for r in self.runs if r.system in peers.PEER_NAMES})

    def ratios(self) -> list[dict[str, Any]]:
        """mlcloud against the best limit, the best naive server, each peer and each other checkout,
        per concurrency (throughput, p50, CPU per request), with the set-up that was best."""
        rows = []
        for c in sorted({r.concurrency for r in self.runs}):
            ml = self.find("mlcloud", ORT, c)
            if ml is None:
                continue
            row: dict[str, Any] = {"concurrency": c}
            others = sorted({r.system for r in self.runs if r.system.startswith("mlcloud@")})
            for other in ("limit", "naive", *self.peers(), *others):
                base = self.best(other, c)
                if base is None:
                    continue
                row[f"mlcloud/{other}"] = {
                    "variant": base.variant,
                    "throughput": _ratio(ml.throughput, base.throughput),
                    "p50": _ratio(ml.p50_ms, base.p50_ms),
                    "p50_delta_ms": round_figure(ml.p50_ms - base.p50_ms),
                    "cpu_per_request": _ratio(ml.cpu_ms_per_request, base.cpu_ms_per_request),
                }
            rows.append(row)
        return rows

    def targets(self) -> list[dict[str, Any]]:
        """Issue 19's targets, each with its figure and whether this run met it (``met`` is None
        when the run could not judge it: a system or level it did not measure)."""
        found: list[dict[str, Any]] = []

        def judge(name: str, c: int | None, value: float | None, goal: str, met: bool | None,
                  against: str = "", why: str = "") -> None:
            """``why``: for a target missed, what in this run's own figures keeps the design from it."""
            met = None if value is None else met
            found.append({"target": name, "concurrency": c, "value": value, "goal": goal, "met": met,
                          "against": against, "why": why if met is False else ""})

        levels = sorted({r.concurrency for r in self.runs if r.system == "mlcloud" and r.variant == ORT})
        if not levels:
            return found
        top = levels[-1]
        ml, limit, naive = self.find("mlcloud", ORT, top), self.best("limit", top), self.best("naive", top)
        assert ml is not None
        if top > 1:
            value = _ratio(ml.throughput, limit.throughput) if limit else None
            judge("req/s / best limit's", top, value, f">= {TARGET_THROUGHPUT_VS_LIMIT:g}",
                  value is not None and value >= TARGET_THROUGHPUT_VS_LIMIT, limit.variant if limit else "",
                  _cpu_cap(ml, limit, limit) if limit else "")
            value = _ratio(ml.throughput, naive.throughput) if naive else None
            judge("req/s / best naive's", top, value, f">= {TARGET_THROUGHPUT_VS_NAIVE:g}",
                  value is not None and value >= TARGET_THROUGHPUT_VS_NAIVE, naive.variant if naive else "",
                  _cpu_cap(ml, naive, limit) if naive and limit else "")
        low = self.find("mlcloud", ORT, 1)
        if low is not None:
            on_path = _on_the_path(low)
            peers = [p for p in (self.best(name, 1) for name in self.peers()) if p is not None]
            peer = max(peers, key=lambda r: r.throughput, default=None)
            value = _ratio(low.throughput, peer.throughput) if peer else None
            judge("req/s / best peer's", 1, value, f">= {TARGET_THROUGHPUT_VS_PEERS:g}",
                  value is not None and value >= TARGET_THROUGHPUT_VS_PEERS,
                  peer.system if peer else "not measured: run with --peers mlserver,bentoml",
                  f"{peer.system} answers at p50 {peer.p50_ms:.1f} ms; {on_path}" if peer and on_path else "")
            naive_low = self.best("naive", 1)
            value = round_figure(low.p50_ms - naive_low.p50_ms) if naive_low else None
            judge("p50 - best naive's p50 (ms)", 1, value, f"<= {TARGET_P50_OVER_NAIVE_MS:g}",
                  value is not None and value <= TARGET_P50_OVER_NAIVE_MS, naive_low.variant if naive_low else "",
                  on_path)
            value = _ratio(low.p99_ms, low.p50_ms)
            limit_low = self.best("limit", 1)
            judge("p99 / p50", 1, value, f"<= {TARGET_P99_OVER_P50:g}",
                  value is not None and value <= TARGET_P99_OVER_P50, "",
                  _tail(low, limit_low, self.machine.get("cpus")))
        peak: float | None = self.memory.get("peak_rss_mb") or None
        judge("tree RSS at peak (MB)", None, peak, f"< {TARGET_TREE_RSS_MB:g}",
              peak is not None and peak < TARGET_TREE_RSS_MB, "nats-server and registry included")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "runs": [asdict(r) for r in self.runs],
            "ratios": self.ratios(),
            "targets": self.targets(),
            "memory": self.memory,
            "notes": self.notes,
        }


def _carried_ms(run: Run, names: tuple[str, ...] = CARRIERS) -> float | None:
    """CPU ms a request of the processes ``names`` (None when the run has no breakdown by process)."""
    parts = [run.processes.get(name, {}).get("cpu_ms_per_request") for name in names]
    return sum(p for p in parts if p is not None) if all(p is not None for p in parts) else None


def _cpu_cap(ml: Run, other: Run, limit: Run) -> str:
    """Why mlcloud cannot reach ``other`` when the cores are the bottleneck: whatever else it
    spends, its pipeline costs at least the limit's CPU and its carriers come on top."""
    carried = _carried_ms(ml)
    if carried is None:
        return ""
    cap = other.cpu_ms_per_request / (limit.cpu_ms_per_request + carried)
    return (f"the cores are the limit ({ml.cpu_cores:.2f} of them busy): {', '.join(CARRIERS)} alone spend "
            f"{carried:.1f} CPU ms a request beside the pipeline's {limit.cpu_ms_per_request:.1f}, "
            f"so at most {cap:.2f}x with a process per component")


def _on_the_path(low: Run) -> str:
    hops = _carried_ms(low, HOPS)
    if hops is None:
        return ""
    return (f"mlcloud's is {low.p50_ms:.1f} ms: {' and '.join(HOPS)}, which a one-process server does "
            f"without, spend {hops:.1f} CPU ms a request at c=1, most of it on the request's path")


def _tail(low: Run, limit: Run | None, cpus: int | None) -> str:
    """Why the tail at c=1 is long: the limit's own, or the wake-ups a request takes (``cpus``: the machine's)."""
    cores = f"{cpus} cores" if cpus else "the cores"
    if limit is not None and limit.p50_ms and limit.p99_ms / limit.p50_ms > TARGET_P99_OVER_P50:
        return (f"the limit's own fastest set-up ({limit.variant}) has {limit.p99_ms / limit.p50_ms:.2f}: "
                f"its spinning threads and the other processes share {cores}")
    wakeups = sum(part.get("wakeups_per_request", 0.0) for part in low.processes.values())
    return f"a request wakes the lattice's processes {wakeups:.0f} times on {cores}" if wakeups else ""


def round_figure(x: float) -> float:
    """Two decimals; no requests answered (NaN) shows as 0."""
    return round(float(x), 2) if np.isfinite(x) else 0.0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None
