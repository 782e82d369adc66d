"""The benchmark: the limit, the naive server and mlcloud, one after another, in one run.

All three are started first; then, for each concurrency, they take turns in ``rounds`` rounds
(limit, naive, mlcloud, limit, naive, mlcloud, …), each round warming up and then running its
share of a fixed number of requests in a closed loop, so that the machine's noise (other
processes, frequency changes) falls on all of them alike. Per system and level it records
throughput (median over the rounds, each counted over the steady state: see
:meth:`~mlcloud.bench.loadgen.LoadResult.steady_window`), p50/p90/p99 latency (over all rounds),
CPU (cores busy, CPU ms per request) and peak memory (RSS summed over the system's processes).
Then the mlcloud variants: adaptive batching off and on (the link's ``batch_max_size``; the
model's batch dimension is symbolic), and tract instead of onnxruntime, each beside the limit
on tract.

The systems under test:

* **limit**: in this process, decode + preprocess + onnxruntime + top-5 in a loop
  (concurrency 1) or a thread pool of ``concurrency`` threads; no HTTP, no NATS. It is measured
  with each onnxruntime set-up (:data:`~mlcloud.bench.workload.ORT_SETUPS`, variants
  ``onnxruntime/<set-up>``), and the best of them at a level is that level's limit.
* **naive**: :mod:`mlcloud.bench.naive`, one aiohttp process per set-up, as subprocesses; the
  best of them at a level is the naive server there.
* **peers** (``--peers``, off by default): MLServer and BentoML serving the same pipeline from
  venvs of their own (:mod:`mlcloud.bench.peers`).
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

from mlcloud.bench import peers, stack as stack_control
from mlcloud.bench.loadgen import LoadError, LoadResult, Progress, http_load, inprocess_load
from mlcloud.bench.monitor import ProcessUsage, TreeMonitor, Usage
from mlcloud.bench.result import ORT, BenchResult, Run, round_figure
from mlcloud.bench.workload import (
    ORT_SETUPS,
    Pipeline,
    labels,
    load_images,
    model_path,
    ort_setup_infer,
    tract_infer,
)
from mlcloud.host.runner import tune_malloc
from mlcloud.servers import free_port
from mlcloud.settings import Settings

ROUTE = "mobilenetv27"  # the default app's route for EfficientNet-Lite0 on onnxruntime
TRACT_ROUTE = "efficientnetlite0"  # the same bindle under a second route, relinked to tract
STARTUP_TIMEOUT = 300.0

@dataclass
class BenchConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 300  # timed requests per system and concurrency (split over the rounds)
    warmup: int = 10  # untimed requests before each measured round
    rounds: int = 3  # the systems take turns this many times per level (noise hits them alike)
    systems: tuple[str, ...] = ("limit", "naive", "mlcloud")
    setups: tuple[str, ...] = tuple(ORT_SETUPS)  # onnxruntime set-ups of the limit and the naive server
    peers: tuple[str, ...] = ()  # framework peers to install and measure too (mlcloud.bench.peers)
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
    """A server: ``body`` makes the request (content type, body) of a photo when the server
    wants something other than the photo itself as ``image/jpeg`` (a framework peer's format)."""

    def __init__(self, name: str, variant: str, pids: list[int], url: str, path: str, images: list[bytes],
                 body: Callable[[bytes], tuple[str, bytes]] | None = None) -> None:
        super().__init__(variant, pids)
        self.name, self.url, self.path = name, url, path
        self.content_type, self.images = "image/jpeg", images
        if body is not None and images:
            made = [body(image) for image in images]
            self.content_type, self.images = made[0][0], [data for _, data in made]

    async def load(self, c: int, requests: int, warmup: int, progress: Progress) -> LoadResult:
        return await http_load(self.url, self.path, self.images, concurrency=c, requests=requests, warmup=warmup,
                               progress=progress, content_type=self.content_type)


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
        for label, share in usage.processes.items():
            name = label.rsplit(" (", 1)[0]  # by name: a process restarted between rounds is the same one
            pooled = self.usage.processes.setdefault(name, ProcessUsage())
            pooled.cpu_seconds += share.cpu_seconds
            pooled.wakeups += share.wakeups
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
        with work_dir_or_temp(self.config.work_dir) as work, contextlib.ExitStack() as children:
            self.work = work
            self.children = children
            asyncio.run(self._run())
        return self.result

    async def _run(self) -> None:
        systems: list[System] = []
        path = model_path(self.build_dir)
        if "limit" in self.config.systems:
            # The limit gets the allocator settings mlcloud's processes run with (and the bench's
            # own HTTP client with it): a limit slowed by page faults would flatter mlcloud.
            tune_malloc()
            self.say(f"limit: in-process decode + preprocess + onnxruntime + top-5 (loop / thread pool), "
                     f"set-ups {', '.join(self.config.setups)}")
            for setup in self.config.setups:
                pipeline = Pipeline(ort_setup_infer(path, setup), labels(self.build_dir))
                systems.append(LimitSystem(f"{ORT}/{setup}", pipeline, self.images))
        if "naive" in self.config.systems:
            self.say("naive: one aiohttp process per set-up, onnxruntime in its thread pool (starting them…)")
            for setup in self.config.setups:
                port = free_port()
                proc, _ = self.children.enter_context(child_process(
                    [sys.executable, "-m", "mlcloud.bench.naive", "--port", str(port), "--build-dir",
                     str(self.build_dir), "--setup", setup], "listening on", log=self.work / f"naive-{setup}.log"))
                systems.append(HttpSystem("naive", f"{ORT}/{setup}", [proc.pid], f"http://127.0.0.1:{port}",
                                          f"/{ROUTE}/matches", self.images))
        for name in self.config.peers:
            self.say(f"{name}: installing it into its own venv if needed, then starting it…")
            state_dir = Settings.from_env().state_dir
            peer = self.children.enter_context(peers.serving(name, state_dir, self.build_dir, self.work, self.say))
            systems.append(HttpSystem(name, ORT, [peer.pid], peer.url, peer.path, self.images,
                                      body=peer.request))
        info: dict[str, Any] | None = None
        if "mlcloud" in self.config.systems:
            self.say(f"mlcloud: the whole lattice, PUT /{ROUTE}/matches (starting it…)")
            started = time.monotonic()
            proc, line = self.children.enter_context(child_process(
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
            variants = [run for run, wanted in ((self._batching_runs, self.config.batching),
                                                (self._tract_runs, self.config.tract)) if wanted]
            if not variants:
                return
            link, ctl = await stack_control.mlinference_link(info["nats_url"], info["lattice"], info["nats_creds"])
            await ctl.close()
            original = dict(link.values)
            try:
                for variant in variants:
                    try:
                        await variant(info, original)
                    except LoadError as exc:  # a variant that fails must not lose the main results
                        self.say(f"  {exc}")
                        self.result.notes.append(f"{variant.__name__.strip('_').replace('_', ' ')} stopped: {exc}")
            finally:
                await stack_control.relink(info["nats_url"], info["lattice"], info["nats_creds"], original)

    def _start_other_mlcloud(self, checkout: Path) -> System:
        """mlcloud from another checkout (a git worktree of an older commit), for A/B figures."""
        name = f"mlcloud@{checkout.name}"
        self.say(f"{name}: the lattice from {checkout} (starting it…)")
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        proc, line = self.children.enter_context(child_process(
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
            run.throughput = round_figure(float(np.median(pool.round_throughputs)))
        self.result.runs.append(run)
        self.say(f"  {run.system:8s} {run.variant:12s} c={c:<3d} {run.throughput:7.1f} req/s  p50 {run.p50_ms:6.1f} ms"
                 f"  p99 {run.p99_ms:6.1f} ms  cpu {run.cpu_cores:4.2f} cores  rss {run.peak_rss_mb:6.0f} MB")
        if pool.load.errors:
            self.result.notes.append(f"{system.name} {system.variant} c={c}: {pool.load.errors} failed requests "
                                     f"({pool.load.statuses})")
        return run

    # -- mlcloud variants ------------------------------------------------------------------
    async def _batching_runs(self, info: dict[str, Any], original: dict[str, str]) -> None:
        """The default route with adaptive batching off and on (its model's batch dimension is
        symbolic), the link's values alternating between rounds."""
        size = self.config.batch_max_size
        settings = [
            ("batch off", {**original, "batch_max_size": "1"}),
            (f"batch {size}", {**original, "batch_max_size": str(size),
                               "batch_max_wait_ms": str(self.config.batch_max_wait_ms)}),
        ]
        self.say(f"mlcloud batching: route {ROUTE}, off vs on (batch_max_size {size})")
        self.result.notes.append(
            f"batching: route {ROUTE} with batch_max_size 1 (off) and {size} with batch_max_wait_ms "
            f"{self.config.batch_max_wait_ms:g} (on), alternating in rounds"
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
                    await stack_control.wait_route_ready(info["http_url"], ROUTE)
                    await asyncio.sleep(0.3)  # the provider applies the link's batching
                    system = HttpSystem("mlcloud", variant, [pid], info["http_url"], f"/{ROUTE}/matches",
                                        self.images)
                    progress = self._progress(f"mlcloud {variant} c={c} round {r + 1}/{rounds}",
                                              self.config.warmup + share)
                    pools[variant].add(*await system.measure(c, share, self.config.warmup, progress))
            for variant, _ in settings:
                system = HttpSystem("mlcloud", variant, [pid], "", "", [])
                self._record(system, c, pools[variant])

    async def _tract_runs(self, info: dict[str, Any], original: dict[str, str]) -> None:
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
            "rss_mb_now": round_figure(usage.peak_rss / 2**20),
            "processes_mb": {name: round_figure(rss / 2**20) for name, rss in sorted(usage.peak_processes.items())},
        }


def _config_json(config: BenchConfig) -> dict[str, Any]:
    values = asdict(config)
    for key in ("build_dir", "work_dir"):
        values[key] = str(values[key]) if values[key] else None
    values["concurrency"] = list(config.concurrency)
    values["systems"] = list(config.systems)
    values["against"] = list(config.against)
    values["setups"] = list(config.setups)
    values["peers"] = list(config.peers)
    return values


@contextlib.contextmanager
def work_dir_or_temp(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlcloud-bench-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def child_process(argv: list[str], ready_prefix: str, *, timeout: float = 120.0, env: dict[str, str] | None = None,
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
