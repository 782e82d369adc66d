"""The benchmark: the limit, the naive server and mlcloud, one after another, in one run.

For each system and concurrency it warms up, runs a fixed number of requests in a closed loop
and records throughput, p50/p90/p99 latency, CPU (cores busy, CPU ms per request) and peak
memory (RSS summed over the system's processes). Then the mlcloud variants: adaptive batching
off and on (on a copy of the model with a symbolic batch dimension; the built file's batch
dimension is fixed at 1, so the registry never batches it), and tract instead of onnxruntime.

The systems under test:

* **limit**: in this process, decode + preprocess + onnxruntime + top-5 in a loop
  (concurrency 1) or a thread pool of ``concurrency`` threads; no HTTP, no NATS.
* **naive**: :mod:`mlcloud.bench.naive`, one aiohttp process, as a subprocess.
* **mlcloud**: :mod:`mlcloud.bench.stack`, the whole lattice (nats-server, Bindle, registry,
  one host and its component processes) as a subprocess tree, ``PUT /mobilenetv27/matches``.

Everything is compared as ratios within the run: the machines are noisy (±12 % between
identical runs), so figures of different runs are not comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcloud.bench import stack as stack_control
from mlcloud.bench.loadgen import LoadResult, Progress, http_load, inprocess_load
from mlcloud.bench.monitor import TreeMonitor, Usage
from mlcloud.bench.workload import (
    Pipeline,
    labels,
    load_images,
    model_path,
    ort_infer,
    ort_session,
    tract_infer,
)
from mlcloud.lattice.nats_server import free_port

ROUTE = "mobilenetv27"  # the default app's route for EfficientNet-Lite0 on onnxruntime
TRACT_ROUTE = "efficientnetlite0"  # the same bindle under a second route, relinked to tract
BATCH_ROUTE = "effdynbatch"  # added by the bench: the symbolic-batch copy of the model
STARTUP_TIMEOUT = 300.0


@dataclass
class BenchConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 300  # timed requests per system and concurrency
    warmup: int = 30
    systems: tuple[str, ...] = ("limit", "naive", "mlcloud")
    batching: bool = True
    tract: bool = True
    batch_max_size: int = 8
    batch_max_wait_ms: float = 2.0
    variant_requests: int | None = None  # for the batching and tract runs; default: requests
    progress: bool = True
    build_dir: Path | None = None
    work_dir: Path | None = None

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        values: dict[str, Any] = {"concurrency": (1, 4), "requests": 12, "warmup": 3, "variant_requests": 8}
        values.update(changes)
        return cls(**values)


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
            throughput=_round(n / load.elapsed if load.elapsed else 0.0),
            p50_ms=_round(float(np.percentile(lat, 50))),
            p90_ms=_round(float(np.percentile(lat, 90))),
            p99_ms=_round(float(np.percentile(lat, 99))),
            mean_ms=_round(float(lat.mean())),
            cpu_cores=_round(usage.cpu_cores),
            cpu_ms_per_request=_round(usage.cpu_seconds * 1000 / n if n else 0.0),
            peak_rss_mb=_round(usage.peak_rss / 2**20),
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

    def ratios(self) -> list[dict[str, Any]]:
        """mlcloud / limit and mlcloud / naive per concurrency (throughput, p50, CPU per request)."""
        rows = []
        for c in sorted({r.concurrency for r in self.runs}):
            ml = self.find("mlcloud", "onnxruntime", c)
            if ml is None:
                continue
            row: dict[str, Any] = {"concurrency": c}
            for other in ("limit", "naive"):
                base = self.find(other, "onnxruntime", c)
                if base is None:
                    continue
                row[f"mlcloud/{other}"] = {
                    "throughput": _ratio(ml.throughput, base.throughput),
                    "p50": _ratio(ml.p50_ms, base.p50_ms),
                    "p50_delta_ms": _round(ml.p50_ms - base.p50_ms),
                    "cpu_per_request": _ratio(ml.cpu_ms_per_request, base.cpu_ms_per_request),
                }
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "runs": [asdict(r) for r in self.runs],
            "ratios": self.ratios(),
            "memory": self.memory,
            "notes": self.notes,
        }


def _round(x: float) -> float:
    return round(float(x), 2) if np.isfinite(x) else 0.0  # no requests answered: shown as 0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def machine_info() -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    with contextlib.suppress(ImportError):
        import tract

        info["tract"] = getattr(tract, "__version__", "installed")
    return info


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, config: BenchConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.images = [data for _, data in load_images()]
        self.result = BenchResult(machine_info(), _config_json(config))

    def run(self) -> BenchResult:
        from mlcloud.testing.stack import build_models

        build_dir = self.config.build_dir or build_models()
        self.build_dir = Path(build_dir)
        model_path(self.build_dir)  # fail early with the build hint
        with _work_dir(self.config.work_dir) as work:
            self.work = work
            if "limit" in self.config.systems:
                self.run_limit()
            if "naive" in self.config.systems:
                self.run_naive()
            if "mlcloud" in self.config.systems:
                asyncio.run(self.run_mlcloud())
        return self.result

    def _progress(self, label: str, total: int) -> Progress:
        return Progress(label, total, enabled=self.config.progress)

    def _record(self, system: str, variant: str, c: int, load: LoadResult, usage: Usage) -> Run:
        run = Run.of(system, variant, c, load, usage)
        self.result.runs.append(run)
        self.say(f"  {system:8s} {variant:12s} c={c:<3d} {run.throughput:7.1f} req/s  p50 {run.p50_ms:6.1f} ms"
                 f"  p99 {run.p99_ms:6.1f} ms  cpu {run.cpu_cores:4.2f} cores  rss {run.peak_rss_mb:6.0f} MB")
        if load.errors:
            self.result.notes.append(f"{system} {variant} c={c}: {load.errors} failed requests ({load.statuses})")
        return run

    # -- limit -----------------------------------------------------------------------------
    def run_limit(self) -> None:
        self.say("limit: in-process decode + preprocess + onnxruntime + top-5")
        variants: list[tuple[str, Callable[[], Pipeline], tuple[int, ...]]] = [
            ("onnxruntime", lambda: Pipeline(ort_infer(ort_session(model_path(self.build_dir))),
                                             labels(self.build_dir)), self.config.concurrency),
        ]
        if self.config.tract:
            variants.append(("tract", lambda: Pipeline(tract_infer(model_path(self.build_dir)),
                                                       labels(self.build_dir)), self._variant_levels()))
        for variant, make, levels in variants:
            pipeline = make()
            requests = self.config.requests if variant == "onnxruntime" else self._variant_requests()
            for c in levels:
                progress = self._progress(f"limit {variant} c={c}", self.config.warmup + requests)
                with TreeMonitor([os.getpid()]) as monitor:
                    load = inprocess_load(pipeline.classify, self.images, concurrency=c, requests=requests,
                                          warmup=self.config.warmup, progress=progress)
                    usage = monitor.stop()
                progress.close()
                self._record("limit", variant, c, load, usage)
            del pipeline

    # -- naive -----------------------------------------------------------------------------
    def run_naive(self) -> None:
        self.say("naive: one aiohttp process with onnxruntime in its thread pool")
        port = free_port()
        with _child([sys.executable, "-m", "mlcloud.bench.naive", "--port", str(port),
                     "--build-dir", str(self.build_dir)], "listening on") as (proc, _line):
            url = f"http://127.0.0.1:{port}"
            for c in self.config.concurrency:
                run = self._http_run("naive", "onnxruntime", [proc.pid], url, f"/{ROUTE}/matches", c,
                                     self.config.requests)
                del run

    # -- mlcloud ---------------------------------------------------------------------------
    async def run_mlcloud(self) -> None:
        self.say("mlcloud: the whole lattice, PUT /mobilenetv27/matches (starting it…)")
        state = self.work / "stack"
        started = time.monotonic()
        with _child([sys.executable, "-m", "mlcloud.bench.stack", "--state-dir", str(state)], "{",
                    timeout=STARTUP_TIMEOUT) as (proc, line):
            info = json.loads(line)
            self.say(f"  lattice ready in {time.monotonic() - started:.1f} s at {info['http_url']}")
            url = info["http_url"]
            monitor_pids = [proc.pid]
            for c in self.config.concurrency:
                await self._http_run_async("mlcloud", "onnxruntime", monitor_pids, url, f"/{ROUTE}/matches", c,
                                           self.config.requests)
            self.result.memory = self._memory_snapshot(monitor_pids)
            original = None
            try:
                if self.config.batching:
                    original = await self._batching_runs(info, monitor_pids)
                if self.config.tract:
                    original = await self._tract_runs(info, monitor_pids, original)
            finally:
                if original is not None:
                    await stack_control.relink(info["nats_url"], info["lattice"], original)

    async def _batching_runs(self, info: dict[str, str], pids: list[int]) -> dict[str, str]:
        bindle_id = await stack_control.push_dynamic_batch_model(info["bindle_url"], self.build_dir, self.work)
        link, ctl = await stack_control.mlinference_link(info["nats_url"], info["lattice"])
        await ctl.close()  # type: ignore[attr-defined]
        original = dict(link["values"])
        base = {**original, BATCH_ROUTE: bindle_id}
        settings = [
            ("batch off", {**base, "batch_max_size": "1"}),
            (f"batch {self.config.batch_max_size}", {**base, "batch_max_size": str(self.config.batch_max_size),
                                                     "batch_max_wait_ms": str(self.config.batch_max_wait_ms)}),
        ]
        self.say(f"mlcloud batching: route {BATCH_ROUTE} = {bindle_id} (symbolic batch dimension)")
        self.result.notes.append(
            f"batching: {ROUTE} ({model_path(self.build_dir).name}) has a fixed batch dimension of 1, so the "
            f"registry keeps batching off for it; the batching runs use {bindle_id}, the same weights with a "
            f"symbolic batch dimension, on route {BATCH_ROUTE} (batch_max_wait_ms "
            f"{self.config.batch_max_wait_ms:g})"
        )
        for variant, values in settings:
            await stack_control.relink(info["nats_url"], info["lattice"], values)
            await stack_control.wait_route_ready(info["http_url"], BATCH_ROUTE)
            await asyncio.sleep(0.5)  # the api actor's catalog cache and the new batcher settle
            for c in self._variant_levels():
                await self._http_run_async("mlcloud", variant, pids, info["http_url"], f"/{BATCH_ROUTE}/matches",
                                           c, self._variant_requests())
        return original

    async def _tract_runs(self, info: dict[str, str], pids: list[int], original: dict[str, str] | None
                          ) -> dict[str, str]:
        if original is None:
            link, ctl = await stack_control.mlinference_link(info["nats_url"], info["lattice"])
            await ctl.close()  # type: ignore[attr-defined]
            original = dict(link["values"])
        values = {**original, f"engine.{TRACT_ROUTE}": "tract"}
        self.say(f"mlcloud tract: route {TRACT_ROUTE} relinked with engine.{TRACT_ROUTE}=tract")
        await stack_control.relink(info["nats_url"], info["lattice"], values)
        await stack_control.wait_route_ready(info["http_url"], TRACT_ROUTE, engine="tract")
        for c in self._variant_levels():
            await self._http_run_async("mlcloud", "tract", pids, info["http_url"], f"/{TRACT_ROUTE}/matches", c,
                                       self._variant_requests())
        return original

    # -- helpers ---------------------------------------------------------------------------
    def _variant_levels(self) -> tuple[int, ...]:
        levels = self.config.concurrency
        return tuple(sorted({levels[0], levels[-1]}))

    def _variant_requests(self) -> int:
        return self.config.variant_requests or self.config.requests

    def _http_run(self, system: str, variant: str, pids: list[int], url: str, path: str, c: int,
                  requests: int) -> Run:
        return asyncio.run(self._http_run_async(system, variant, pids, url, path, c, requests))

    async def _http_run_async(self, system: str, variant: str, pids: list[int], url: str, path: str, c: int,
                              requests: int) -> Run:
        progress = self._progress(f"{system} {variant} c={c}", self.config.warmup + requests)
        monitor = TreeMonitor(pids).start()
        try:
            load = await http_load(url, path, self.images, concurrency=c, requests=requests,
                                   warmup=self.config.warmup, progress=progress)
        finally:
            usage = monitor.stop()
            progress.close()
        return self._record(system, variant, c, load, usage)

    def _memory_snapshot(self, pids: list[int]) -> dict[str, Any]:
        """The mlcloud tree's memory after the main runs: total and per process (MB)."""
        monitor = TreeMonitor(pids).start()
        usage = monitor.stop()
        peak = max((r.peak_rss_mb for r in self.result.runs if r.system == "mlcloud"), default=0.0)
        return {
            "peak_rss_mb": peak,
            "rss_mb_now": _round(usage.peak_rss / 2**20),
            "processes_mb": {name: _round(rss / 2**20) for name, rss in sorted(usage.peak_processes.items())},
        }


def _config_json(config: BenchConfig) -> dict[str, Any]:
    values = asdict(config)
    for key in ("build_dir", "work_dir"):
        values[key] = str(values[key]) if values[key] else None
    values["concurrency"] = list(config.concurrency)
    values["systems"] = list(config.systems)
    return values


@contextlib.contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlcloud-bench-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _child(argv: list[str], ready_prefix: str, *, timeout: float = 120.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start a server process, wait for its ready line on stdout; stop it (TERM, then KILL) after."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        line = _wait_line(proc, ready_prefix, timeout)
        # Keep reading its stdout so that a chatty child never blocks on a full pipe.
        threading.Thread(target=_drain, args=(proc.stdout,), name="bench-drain", daemon=True).start()
        yield proc, line
    finally:
        _stop(proc)


def _drain(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        for _ in stream:
            pass


def _wait_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{' '.join(proc.args[1:3])} exited ({proc.wait()}) before it was ready")
            if line.startswith(prefix):
                return line.strip()
    raise RuntimeError(f"{' '.join(proc.args[1:3])} was not ready within {timeout:g} s")


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its session left behind
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


def run_bench(config: BenchConfig, say: Callable[[str], None] | None = None) -> BenchResult:
    """Run the whole bench; ``say`` gets a line per step and per run (default: stderr)."""
    return Bench(config, say or (lambda line: print(line, file=sys.stderr, flush=True))).run()
