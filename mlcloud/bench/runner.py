"""The benchmark: the limit, the naive server and mlcloud, one after another, in one run.

All three are started first; then, for each concurrency, they take turns in ``rounds`` rounds
(limit, naive, mlcloud, limit, naive, mlcloud, …), each round warming up and then running its
share of a fixed number of requests in a closed loop, so that the machine's noise (other
processes, frequency changes) falls on all of them alike. Per system and level it records
throughput (median over the rounds, each counted over the steady state: see
:meth:`~mlcloud.bench.loadgen.LoadResult.steady_window`), p50/p90/p99 latency (over all rounds),
CPU (cores busy, CPU ms per request) and peak memory (RSS summed over the system's processes).
Then the mlcloud variants: adaptive batching off and on (on a copy of the model with a symbolic
batch dimension; the built file's batch dimension is fixed at 1, so the registry never batches
it), and tract instead of onnxruntime, each beside the limit on tract.

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
from mlcloud.host.runner import tune_malloc
from mlcloud.servers import free_port

ROUTE = "mobilenetv27"  # the default app's route for EfficientNet-Lite0 on onnxruntime
TRACT_ROUTE = "efficientnetlite0"  # the same bindle under a second route, relinked to tract
BATCH_ROUTE = "effdynbatch"  # added by the bench: the symbolic-batch copy of the model
STARTUP_TIMEOUT = 300.0

# The performance issue's targets on a 2-core machine (docs/performance.md, "The targets").
TARGET_P50_OVER_LIMIT_MS = 1.5  # at concurrency 1
TARGET_THROUGHPUT_VS_LIMIT = 0.9  # at the highest concurrency (16 by default)
TARGET_HOST_RSS_MB = 600.0  # one host with the default app: the host and its instances
EMBEDDED_SERVERS = ("nats-server", "docker-registry")  # in the measured tree, not part of "one host"


@dataclass
class BenchConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 300  # timed requests per system and concurrency (split over the rounds)
    warmup: int = 10  # untimed requests before each measured round
    rounds: int = 3  # the systems take turns this many times per level (noise hits them alike)
    systems: tuple[str, ...] = ("limit", "naive", "mlcloud")
    batching: bool = True
    tract: bool = True
    batch_max_size: int = 8
    batch_max_wait_ms: float = 2.0
    variant_requests: int | None = None  # for the batching and tract runs; default: requests
    progress: bool = True
    against: tuple[str, ...] = ()  # other checkouts whose mlcloud is measured beside this one
    build_dir: Path | None = None
    work_dir: Path | None = None

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        values: dict[str, Any] = {"concurrency": (1, 4), "requests": 12, "warmup": 3, "variant_requests": 8,
                                  "rounds": 2}
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
            throughput=_round(load.throughput),
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
            others = sorted({r.system for r in self.runs if r.system.startswith("mlcloud@")})
            for other in ("limit", "naive", *others):
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

    def targets(self) -> list[dict[str, Any]]:
        """The performance targets this run can judge, each with its figure and whether it is met."""
        found: list[dict[str, Any]] = []

        def judge(name: str, c: int | None, value: float | None, goal: str, met: bool) -> None:
            found.append({"target": name, "concurrency": c, "value": value, "goal": goal, "met": met})

        levels = sorted({r.concurrency for r in self.runs if r.system == "mlcloud" and r.variant == "onnxruntime"})
        ml_low = self.find("mlcloud", "onnxruntime", 1)
        limit_low = self.find("limit", "onnxruntime", 1)
        if ml_low and limit_low:
            delta = _round(ml_low.p50_ms - limit_low.p50_ms)
            judge("p50 over the limit's (ms)", 1, delta, f"<= {TARGET_P50_OVER_LIMIT_MS}",
                  delta <= TARGET_P50_OVER_LIMIT_MS)
        if levels and levels[-1] > 1:
            c = levels[-1]
            ml = self.find("mlcloud", "onnxruntime", c)
            for other, goal in (("limit", TARGET_THROUGHPUT_VS_LIMIT), ("naive", 1.0)):
                base = self.find(other, "onnxruntime", c)
                ratio = _ratio(ml.throughput, base.throughput) if ml and base else None
                if ratio is not None:
                    sign = ">=" if other == "limit" else ">"
                    judge(f"throughput / {other}'s", c, ratio, f"{sign} {goal}",
                          ratio >= goal if other == "limit" else ratio > goal)
        processes = self.memory.get("processes_mb") or {}
        if processes:
            host = _round(sum(mb for name, mb in processes.items() if not name.startswith(EMBEDDED_SERVERS)))
            judge("host + instances RSS (MB)", None, host, f"< {TARGET_HOST_RSS_MB:g}", host < TARGET_HOST_RSS_MB)
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


class System:
    """One system under test: runs a closed loop of requests, measured over its process tree."""

    name = ""

    children = True  # whether the processes' descendants belong to the system

    def __init__(self, variant: str, pids: list[int]) -> None:
        self.variant = variant
        self.pids = pids

    async def load(self, c: int, requests: int, warmup: int, progress: Progress) -> LoadResult:
        raise NotImplementedError

    async def measure(self, c: int, requests: int, warmup: int, progress: Progress) -> tuple[LoadResult, Usage]:
        monitor = TreeMonitor(self.pids, children=self.children).start()
        try:
            load = await self.load(c, requests, warmup, progress)
        finally:
            usage = monitor.stop()
            progress.close()
        return load, usage


class LimitSystem(System):
    name = "limit"
    children = False  # this process's children are the other systems under test

    def __init__(self, variant: str, pipeline: Pipeline, images: list[bytes]) -> None:
        super().__init__(variant, [os.getpid()])
        self.pipeline, self.images = pipeline, images

    async def load(self, c: int, requests: int, warmup: int, progress: Progress) -> LoadResult:
        # Blocking on purpose: nothing else runs in this process while the limit is measured.
        return inprocess_load(self.pipeline.classify, self.images, concurrency=c, requests=requests,
                              warmup=warmup, progress=progress)


class HttpSystem(System):
    def __init__(self, name: str, variant: str, pids: list[int], url: str, path: str, images: list[bytes]) -> None:
        super().__init__(variant, pids)
        self.name, self.url, self.path, self.images = name, url, path, images

    async def load(self, c: int, requests: int, warmup: int, progress: Progress) -> LoadResult:
        return await http_load(self.url, self.path, self.images, concurrency=c, requests=requests, warmup=warmup,
                               progress=progress)


@dataclass
class _Pool:
    """Rounds of one system at one concurrency, pooled: latencies and CPU add up, memory peaks."""

    load: LoadResult = field(default_factory=LoadResult)
    usage: Usage = field(default_factory=Usage)
    round_throughputs: list[float] = field(default_factory=list)

    def add(self, load: LoadResult, usage: Usage) -> None:
        self.load.latencies += load.latencies
        self.load.errors += load.errors
        self.load.elapsed += load.elapsed
        for status, n in load.statuses.items():
            self.load.statuses[status] = self.load.statuses.get(status, 0) + n
        self.usage.cpu_seconds += usage.cpu_seconds
        self.usage.wall_seconds += usage.wall_seconds
        if usage.peak_rss > self.usage.peak_rss:
            self.usage.peak_rss, self.usage.peak_processes = usage.peak_rss, usage.peak_processes
        self.load.window_requests += load.window_requests
        self.load.window_seconds += load.window_seconds
        if load.throughput:
            self.round_throughputs.append(load.throughput)


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
        with _work_dir(self.config.work_dir) as work, contextlib.ExitStack() as children:
            self.work = work
            self.children = children
            asyncio.run(self._run())
        return self.result

    async def _run(self) -> None:
        systems: list[System] = []
        if "limit" in self.config.systems:
            # The limit gets the allocator settings mlcloud's processes run with (and the bench's
            # own HTTP client with it): a limit slowed by page faults would flatter mlcloud.
            tune_malloc()
            self.say("limit: in-process decode + preprocess + onnxruntime + top-5 (loop / thread pool)")
            pipeline = Pipeline(ort_infer(ort_session(model_path(self.build_dir))), labels(self.build_dir))
            systems.append(LimitSystem("onnxruntime", pipeline, self.images))
        if "naive" in self.config.systems:
            self.say("naive: one aiohttp process, onnxruntime in its thread pool (starting it…)")
            port = free_port()
            proc, _ = self.children.enter_context(_child(
                [sys.executable, "-m", "mlcloud.bench.naive", "--port", str(port), "--build-dir", str(self.build_dir)],
                "listening on", log=self.work / "naive.log"))
            systems.append(HttpSystem("naive", "onnxruntime", [proc.pid], f"http://127.0.0.1:{port}",
                                      f"/{ROUTE}/matches", self.images))
        info: dict[str, Any] | None = None
        if "mlcloud" in self.config.systems:
            self.say(f"mlcloud: the whole lattice, PUT /{ROUTE}/matches (starting it…)")
            started = time.monotonic()
            proc, line = self.children.enter_context(_child(
                [sys.executable, "-m", "mlcloud.bench.stack", "--state-dir", str(self.work / "stack")], "{",
                timeout=STARTUP_TIMEOUT, log=self.work / "mlcloud.log"))
            info = json.loads(line)
            info["pid"] = proc.pid
            self.say(f"  lattice ready in {time.monotonic() - started:.1f} s at {info['http_url']}")
            systems.append(HttpSystem("mlcloud", "onnxruntime", [proc.pid], info["http_url"], f"/{ROUTE}/matches",
                                      self.images))
        for checkout in self.config.against:
            systems.append(self._start_other_mlcloud(Path(checkout)))
        await self._compare(systems, self.config.concurrency, self.config.requests)
        if info is not None:
            self.result.memory = self._memory_snapshot([int(info["pid"])])
            original = None
            try:
                if self.config.batching:
                    original = await self._batching_runs(info)
                if self.config.tract:
                    original = await self._tract_runs(info, original)
            finally:
                if original is not None:
                    await stack_control.relink(info["nats_url"], info["lattice"], info["nats_creds"], original)

    def _start_other_mlcloud(self, checkout: Path) -> System:
        """mlcloud from another checkout (a git worktree of an older commit), for A/B figures."""
        name = f"mlcloud@{checkout.name}"
        self.say(f"{name}: the lattice from {checkout} (starting it…)")
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        proc, line = self.children.enter_context(_child(
            [sys.executable, "-m", "mlcloud.bench.stack", "--state-dir", str(self.work / f"stack-{checkout.name}")],
            "{", timeout=STARTUP_TIMEOUT, env=env, log=self.work / f"{name}.log",
            cwd=checkout))  # `python -m` puts the working directory first on sys.path
        info = json.loads(line)
        return HttpSystem(name, "onnxruntime", [proc.pid], info["http_url"], f"/{ROUTE}/matches", self.images)

    async def _compare(self, systems: list[System], levels: tuple[int, ...], requests: int) -> None:
        """Each level: ``rounds`` rounds, each system in turn, so noise falls on all of them alike."""
        rounds = max(1, min(self.config.rounds, requests))
        for c in levels:
            pools = {id(system): _Pool() for system in systems}
            for r in range(rounds):
                share = requests // rounds + (1 if r < requests % rounds else 0)
                for system in systems:
                    label = f"{system.name} {system.variant} c={c} round {r + 1}/{rounds}"
                    progress = self._progress(label, self.config.warmup + share)
                    load, usage = await system.measure(c, share, self.config.warmup, progress)
                    pools[id(system)].add(load, usage)
            for system in systems:
                self._record(system, c, pools[id(system)])

    def _progress(self, label: str, total: int) -> Progress:
        return Progress(label, total, enabled=self.config.progress)

    def _record(self, system: System, c: int, pool: _Pool) -> Run:
        run = Run.of(system.name, system.variant, c, pool.load, pool.usage)
        if len(pool.round_throughputs) > 1:
            run.throughput = _round(float(np.median(pool.round_throughputs)))
        self.result.runs.append(run)
        self.say(f"  {run.system:8s} {run.variant:12s} c={c:<3d} {run.throughput:7.1f} req/s  p50 {run.p50_ms:6.1f} ms"
                 f"  p99 {run.p99_ms:6.1f} ms  cpu {run.cpu_cores:4.2f} cores  rss {run.peak_rss_mb:6.0f} MB")
        if pool.load.errors:
            self.result.notes.append(f"{system.name} {system.variant} c={c}: {pool.load.errors} failed requests "
                                     f"({pool.load.statuses})")
        return run

    # -- mlcloud variants ------------------------------------------------------------------
    async def _batching_runs(self, info: dict[str, Any]) -> dict[str, str]:
        bindle_id = await stack_control.push_dynamic_batch_model(
            info["bindle_url"], self.build_dir, self.work, Path(info["keys_dir"]))
        link, ctl = await stack_control.mlinference_link(info["nats_url"], info["lattice"], info["nats_creds"])
        await ctl.close()
        original = dict(link.values)
        base = {**original, BATCH_ROUTE: bindle_id}
        size = self.config.batch_max_size
        settings = [
            ("batch off", {**base, "batch_max_size": "1"}),
            (f"batch {size}", {**base, "batch_max_size": str(size),
                               "batch_max_wait_ms": str(self.config.batch_max_wait_ms)}),
        ]
        self.say(f"mlcloud batching: route {BATCH_ROUTE} = {bindle_id} (symbolic batch dimension), off vs on")
        self.result.notes.append(
            f"batching: {ROUTE} ({model_path(self.build_dir).name}) has a fixed batch dimension of 1, so the "
            f"registry keeps batching off for it; the batching runs use {bindle_id}, the same weights with a "
            f"symbolic batch dimension, on route {BATCH_ROUTE} (batch_max_size {size}, batch_max_wait_ms "
            f"{self.config.batch_max_wait_ms:g}); off and on alternate in rounds"
        )
        pid = int(info["pid"])
        # Batching is a link setting: alternate the link between rounds, one system per setting.
        for c in self._variant_levels():
            rounds = max(1, min(self.config.rounds, self._variant_requests()))
            pools = {variant: _Pool() for variant, _ in settings}
            for r in range(rounds):
                share = self._variant_requests() // rounds
                for variant, values in settings:
                    await stack_control.relink(info["nats_url"], info["lattice"], info["nats_creds"], values)
                    await stack_control.wait_route_ready(info["http_url"], BATCH_ROUTE, bindle_id=bindle_id)
                    await asyncio.sleep(0.3)  # the provider applies the link's batching
                    system = HttpSystem("mlcloud", variant, [pid], info["http_url"], f"/{BATCH_ROUTE}/matches",
                                        self.images)
                    progress = self._progress(f"mlcloud {variant} c={c} round {r + 1}/{rounds}",
                                              self.config.warmup + share)
                    pools[variant].add(*await system.measure(c, share, self.config.warmup, progress))
            for variant, _ in settings:
                system = HttpSystem("mlcloud", variant, [pid], "", "", [])
                self._record(system, c, pools[variant])
        return original

    async def _tract_runs(self, info: dict[str, Any], original: dict[str, str] | None) -> dict[str, str]:
        if original is None:
            link, ctl = await stack_control.mlinference_link(info["nats_url"], info["lattice"], info["nats_creds"])
            await ctl.close()
            original = dict(link.values)
        values = {**original, f"engine.{TRACT_ROUTE}": "tract"}
        self.say(f"tract: limit in-process vs mlcloud route {TRACT_ROUTE} relinked with engine.{TRACT_ROUTE}=tract")
        await stack_control.relink(info["nats_url"], info["lattice"], info["nats_creds"], values)
        await stack_control.wait_route_ready(info["http_url"], TRACT_ROUTE, engine="tract")
        systems: list[System] = []
        if "limit" in self.config.systems:
            systems.append(LimitSystem("tract", Pipeline(tract_infer(model_path(self.build_dir)),
                                                         labels(self.build_dir)), self.images))
        systems.append(HttpSystem("mlcloud", "tract", [int(info["pid"])], info["http_url"],
                                  f"/{TRACT_ROUTE}/matches", self.images))
        await self._compare(systems, self._variant_levels(), self._variant_requests())
        return original

    # -- helpers ---------------------------------------------------------------------------
    def _variant_levels(self) -> tuple[int, ...]:
        levels = self.config.concurrency
        return tuple(sorted({levels[0], levels[-1]}))

    def _variant_requests(self) -> int:
        return self.config.variant_requests or self.config.requests

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
    values["against"] = list(config.against)
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
def _child(argv: list[str], ready_prefix: str, *, timeout: float = 120.0, env: dict[str, str] | None = None,
           log: Path | None = None, cwd: Path | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a server process, wait for its ready line on stdout; stop it (TERM, then KILL) after.

    Its stderr (the lattice's logs) goes to ``log``, or nowhere.
    """
    with open(log, "ab") if log is not None else open(os.devnull, "wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, start_new_session=True, env=env, cwd=cwd)
    try:
        line = _wait_line(proc, " ".join(argv[1:3]), ready_prefix, timeout)
        # Keep reading its stdout so that a chatty child never blocks on a full pipe.
        threading.Thread(target=_drain, args=(proc.stdout,), name="bench-drain", daemon=True).start()
        yield proc, line
    finally:
        _stop(proc)


def _drain(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        for _ in stream:
            pass


def _wait_line(proc: subprocess.Popen[str], name: str, prefix: str, timeout: float) -> str:
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
                raise RuntimeError(f"{name} exited ({proc.wait()}) before it was ready")
            if line.startswith(prefix):
                return line.strip()
    raise RuntimeError(f"{name} was not ready within {timeout:g} s")


def _stop(proc: subprocess.Popen[str], grace: float = 20.0) -> None:
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
