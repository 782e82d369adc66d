"""``mlcloud chaos``: SIGKILL the parts of a running system under load, swap its model, measure.

:class:`UpProcess` runs the default app as ``mlcloud up`` does (a child process in its own
process group, every port free, the state in a temporary directory, nats-server and the registry
supervised). :class:`ChaosRun` puts it under closed-loop load (``concurrency`` workers sending
``PUT /mobilenetv27/matches`` with images/cat.jpg), and :meth:`ChaosRun.kill` SIGKILLs one
process of a target and measures, from the requests' own log:

* the requests in flight at the kill, and the failed ones (by status; 0 is a broken connection)
  that ended between the kill and the end of its window (serving again, then ``SETTLE`` seconds);
* the longest time without a success, from the kill on;
* the time until serving again: the first success of a request sent after the kill;
* when the killed process was replaced, and for mlinference how long the new one took to load
  its model (its start to its ``model_loaded`` event).

:func:`soak` kills a target every ``kill_every`` seconds (shuffled rounds over :data:`TARGETS`,
so each is hit), swaps the model every ``swap_every`` seconds (load-then-swap, by relinking the
route between an explicit ``onnxruntime`` engine and the metadata's choice: two model keys, so
one of them loads while the other serves), and samples every process's RSS and open file
descriptors; :meth:`Report.misses` names each of issue 15's targets it missed.

A worker whose request failed waits ``FAILURE_PAUSE`` before its next one, as a client honouring
``Retry-After`` would (briefer, to count more): the fail-fast 503s while NATS is away would
otherwise spin a worker thousands of times a second on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import click
import msgspec
import psutil
import yaml
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mlcloud.bench.loadgen import Connection, request_head
from mlcloud.bench.monitor import process_name
from mlcloud.errors import MLCloudError
from mlcloud.lattice import subjects
from mlcloud.lattice.control import ModelChanged
from mlcloud.lattice.events import decode_event
from mlcloud.servers import free_port
from mlcloud.testing.stack import APP_MANIFEST, PROJECT_DIR, build_models

ACTORS = ("api", "preprocess", "postprocess")
PROVIDERS = ("mlinference", "httpserver")
SERVERS = {"nats-server": "nats-server", "registry": "docker-registry"}  # target → its process's name
TARGETS = (*ACTORS, *PROVIDERS, *SERVERS)
ROUTE = "mobilenetv27"
IMAGE = PROJECT_DIR / "images" / "cat.jpg"
CONCURRENCY = 8

FAILURE_PAUSE = 0.1  # seconds a worker waits after a failed request (see the module docstring)
REQUEST_TIMEOUT = 30.0  # a request without an answer by then counts as failed (status 0)
SETTLE = 1.0  # seconds a kill's window lasts after serving again
WINDOW_MAX = 30.0  # a kill's window ends by then even if serving never came back
SAMPLE_EVERY = 1.0  # seconds between RSS / fd samples

# Issue 15's targets.
ACTOR_GAP = 1.0  # an actor's kill with 1 replica: under 1 s without a success
HTTPSERVER_BACK = 1.0  # the httpserver serves again within 1 s
LOAD_SLACK = 1.0  # mlinference serves again within its model's load time + 1 s
NATS_BACK = 5.0  # serving resumes within 5 s of nats-server's kill
SERVER_BACK = 2.0  # a supervised server is restarted within 2 s
RSS_FLAT = 0.10  # after warm-up, each process's RSS stays within 10 %


def _now() -> float:
    return time.monotonic()


def _mono(epoch: float) -> float:
    """An epoch time (psutil's create_time) on the monotonic clock."""
    return epoch - (time.time() - time.monotonic())


# --------------------------------------------------------------------------- the system


class UpProcess:
    """``mlcloud up --no-washboard --app MANIFEST`` in its own process group, on free ports.

    The manifest is deploy/app.yaml with ``replicas`` instances of each actor. Output goes to
    ``state_dir/up.log``. Use it as a context manager: the exit asks it to stop (SIGINT), then kills.
    """

    def __init__(self, state_dir: Path, *, replicas: int = 1, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.replicas = replicas
        self.lattice = f"chaos-{uuid.uuid4().hex[:8]}"
        self.nats_port = free_port()
        self.http_url = f"http://127.0.0.1:{free_port()}"
        self.registry = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            **(env or {}),
            "MLCLOUD_STATE_DIR": str(state_dir),
            "MLCLOUD_NATS_PORT": str(self.nats_port),
            "MLCLOUD_NATS_URL": "",
            "MLCLOUD_BINDLE_ADDRESS": f"127.0.0.1:{free_port()}",
            "MLCLOUD_REGISTRY": self.registry,
            "MLCLOUD_HTTP_ADDRESS": urlsplit(self.http_url).netloc,
            "MLCLOUD_LATTICE": self.lattice,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def ctl_creds(self) -> Path:
        return self.state_dir / "nats-auth" / "ctl.creds"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "up.log"

    def manifest(self) -> Path:
        app = yaml.safe_load(APP_MANIFEST.read_text())
        for component in app["spec"]["components"]:
            if component["type"] == "actor":
                for trait in component.get("traits", []):
                    if trait["type"] == "spreadscaler":
                        trait["properties"]["replicas"] = self.replicas
        path = self.state_dir / "app.yaml"
        path.write_text(yaml.safe_dump(app, sort_keys=False))
        return path

    def start(self, timeout: float = 180.0) -> None:
        build_models()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlcloud.cli", "up", "--no-washboard", "--app", str(manifest)],
                env=self.env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = _now() + timeout
        while b"mlcloud is up" not in self.log_path.read_bytes():
            if self.process.poll() is not None or _now() > deadline:
                raise RuntimeError(f"mlcloud up did not come up; its output:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        while self._status("/v2/health/ready") != 200:
            if _now() > deadline:
                raise RuntimeError(f"{self.http_url} is not ready; mlcloud up's output:\n"
                                   f"{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> UpProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _status(self, path: str, base: str | None = None) -> int | None:
        try:
            with urllib.request.urlopen(f"{base or self.http_url}{path}", timeout=1.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, OSError):
            return None

    def registry_answers(self) -> bool:
        return self._status("/v2/", f"http://{self.registry}") == 200

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The system's processes by what they are (:data:`TARGETS`, ``mlcloud`` for up itself, …)."""
        assert self.process is not None
        found: dict[str, list[psutil.Process]] = {}
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return found
        names = {process: target for target, process in SERVERS.items()}
        for proc in tree:
            try:
                name = "mlcloud" if proc.pid == root.pid else process_name(proc)
            except psutil.Error:
                continue
            found.setdefault(names.get(name, name), []).append(proc)
        return found


# --------------------------------------------------------------------------- what is measured


@dataclass
class Sent:
    sent: float
    done: float
    status: int  # 0: the connection broke or the request timed out


@dataclass
class Kill:
    target: str
    replicas: int  # instances of the target when it was killed
    pid: int
    at: float
    in_flight: int
    window_end: float = 0.0
    back_after: float | None = None  # a new process replaced the killed one (a server: and answers)
    serving_again: float | None = None
    longest_gap: float | None = None
    failed: dict[int, int] = field(default_factory=dict)
    load_time: float | None = None  # mlinference: the new process's start to its model_loaded event

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def misses(self) -> list[str]:
        """Issue 15's targets this kill missed, each said in a few words."""
        missed = []
        if self.target in ACTORS and self.replicas >= 2:
            if self.failures:
                missed.append(f"{self.failures} failed with {self.replicas} replicas (target 0)")
        elif self.target != "nats-server" and self.failures > self.in_flight:
            missed.append(f"{self.failures} failed, more than the {self.in_flight} in flight")
        if self.serving_again is None:
            return [*missed, "not serving again"]
        if self.target in ACTORS and self.replicas < 2 and (self.longest_gap or 0) >= ACTOR_GAP:
            missed.append(f"{self.longest_gap:.2f} s without a success (target < {ACTOR_GAP} s)")
        if self.target == "mlinference":
            if self.load_time is None:
                missed.append("no model_loaded event from the restarted provider")
            elif self.serving_again > self.load_time + LOAD_SLACK:
                missed.append(f"serving again after {self.serving_again:.2f} s (target: load time "
                              f"{self.load_time:.2f} s + {LOAD_SLACK} s)")
        if self.target == "httpserver" and self.serving_again > HTTPSERVER_BACK:
            missed.append(f"serving again after {self.serving_again:.2f} s (target {HTTPSERVER_BACK} s)")
        if self.target == "nats-server" and self.serving_again > NATS_BACK:
            missed.append(f"serving again after {self.serving_again:.2f} s (target {NATS_BACK} s)")
        if self.target in SERVERS and (self.back_after is None or self.back_after > SERVER_BACK):
            missed.append(f"restarted after {self.back_after} s (target {SERVER_BACK} s)")
        return missed


@dataclass
class Swap:
    at: float
    engine: str
    took: float | None = None  # relink until the route's model_swapped event


@dataclass
class Samples:
    """RSS and open fds of one process over the run (time, rss bytes, fds)."""

    target: str
    pid: int
    started: float
    points: list[tuple[float, int, int]] = field(default_factory=list)

    def warm(self, warmup: float) -> list[tuple[float, int, int]]:
        return [p for p in self.points if p[0] - self.started >= warmup]


@dataclass
class Growth:
    target: str
    pid: int
    span: float  # seconds between the first and last warm samples
    rss_first: int
    rss_last: int
    fds_first: int
    fds_last: int

    @property
    def rss_change(self) -> float:
        return (self.rss_last - self.rss_first) / self.rss_first if self.rss_first else 0.0

    def misses(self) -> list[str]:
        missed = []
        if abs(self.rss_change) > RSS_FLAT:
            missed.append(f"{self.target} ({self.pid}): RSS {self.rss_change:+.1%} (target within {RSS_FLAT:.0%})")
        if self.fds_last > self.fds_first:
            missed.append(f"{self.target} ({self.pid}): {self.fds_first} → {self.fds_last} open fds")
        return missed


@dataclass
class Report:
    duration: float
    requests: int
    successes: int
    kills: list[Kill]
    swaps: list[Swap]
    growth: list[Growth]
    failed_outside_kills: dict[int, int]

    def misses(self) -> list[str]:
        missed = [f"kill {i} ({k.target}): {m}" for i, k in enumerate(self.kills, 1) for m in k.misses()]
        missed += [m for g in self.growth for m in g.misses()]
        if self.failed_outside_kills:
            missed.append(f"requests failed outside any kill's window: {self.failed_outside_kills}")
        missed += [f"swap to engine {s.engine or 'default'} did not finish" for s in self.swaps if s.took is None]
        return missed


# --------------------------------------------------------------------------- load, kills, swaps


class ChaosRun:
    """Load on an :class:`UpProcess`, with the events it publishes followed; kill and swap on demand.

    Use it as an async context manager: the load runs from entry to exit.
    """

    def __init__(self, up: UpProcess, *, concurrency: int = CONCURRENCY, seed: int | None = None) -> None:
        self.up = up
        self.concurrency = concurrency
        self.random = random.Random(seed)
        self.log: list[Sent] = []
        self.in_flight = 0
        self.kills: list[Kill] = []
        self.swaps: list[Swap] = []
        self.samples: dict[int, Samples] = {}
        self.model_events: list[tuple[float, str, ModelChanged]] = []  # (when, event name, info)
        self.started = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: NATS | None = None
        self._engine = ""  # the route's engine override now ("": the metadata's choice)

    async def __aenter__(self) -> ChaosRun:
        from mlcloud.lattice.auth import Credentials
        from mlcloud.lattice.connect import connect

        self._nc = await connect(self.up.nats_url, name="chaos", credentials=Credentials.load(self.up.ctl_creds))
        await self._nc.subscribe(subjects.events(self.up.lattice), cb=self._on_event)
        self.started = _now()
        body = IMAGE.read_bytes()
        self._tasks = [asyncio.create_task(self._worker(body), name=f"chaos-load-{i}")
                       for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._sampler(), name="chaos-sampler"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _on_event(self, msg: Msg) -> None:
        with contextlib.suppress(MLCloudError, msgspec.DecodeError):
            event = decode_event(msg.data)
            if isinstance(event.data, ModelChanged) and event.data.model == ROUTE:
                self.model_events.append((_now(), event.name, event.data))

    async def _worker(self, body: bytes) -> None:
        split = urlsplit(self.up.http_url)
        connection = Connection(split.hostname or "127.0.0.1", split.port or 80)
        head = request_head(self.up.http_url, f"/{ROUTE}/matches", body)
        while not self._stop.is_set():
            sent = _now()
            self.in_flight += 1
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, _ = await connection.request(head, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                await connection.close()
                status = 0
            finally:
                self.in_flight -= 1
            self.log.append(Sent(sent, _now(), status))
            if status != 200:
                await asyncio.sleep(FAILURE_PAUSE)
        await connection.close()

    async def _sampler(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self._sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SAMPLE_EVERY)

    def _sample(self) -> None:
        now = _now()
        for target, procs in self.up.processes().items():
            for proc in procs:
                try:
                    with proc.oneshot():
                        point = (now, proc.memory_info().rss, proc.num_fds())
                        started = _mono(proc.create_time())
                except psutil.Error:
                    continue
                self.samples.setdefault(proc.pid, Samples(target, proc.pid, started)).points.append(point)

    # -- successes and failures ------------------------------------------------------------------

    def successes_since(self, since: float) -> int:
        return sum(1 for s in self.log if s.done >= since and s.status == 200)

    async def wait_serving(self, count: int = 20, timeout: float = 60.0) -> None:
        """Wait until ``count`` requests in a row have succeeded (after start-up, a scale, a swap)."""
        async with asyncio.timeout(timeout):
            while len(self.log) < count or any(s.status != 200 for s in self.log[-count:]):
                await asyncio.sleep(0.1)

    # -- kills -------------------------------------------------------------------------------------

    async def kill(self, target: str) -> Kill:
        """SIGKILL one process of ``target`` (a random one of its replicas) and measure its window."""
        procs = self.up.processes().get(target, [])
        if not procs:
            raise RuntimeError(f"no process of {target} runs")
        victim = self.random.choice(procs)
        before = {p.pid for p in procs}
        kill = Kill(target, len(procs), victim.pid, _now(), self.in_flight)
        victim.kill()
        self.kills.append(kill)
        loaded_before = len(self.model_events)
        deadline = kill.at + WINDOW_MAX
        replaced: psutil.Process | None = None
        while _now() < deadline:
            await asyncio.sleep(0.05)
            if replaced is None:
                replaced = await asyncio.to_thread(self._replacement, target, before)
                if replaced is not None:
                    kill.back_after = _now() - kill.at
            kill.serving_again = self._first_success_after(kill.at)
            if replaced is not None and kill.serving_again is not None and \
                    _now() >= kill.at + kill.serving_again + SETTLE:
                break
        kill.window_end = _now()
        if target == "mlinference" and replaced is not None:
            with contextlib.suppress(psutil.Error):
                loaded = [t for t, name, _ in self.model_events[loaded_before:] if name == "model_loaded"]
                if loaded:
                    kill.load_time = loaded[0] - _mono(replaced.create_time())
        self._measure(kill)
        return kill

    def _replacement(self, target: str, before: set[int]) -> psutil.Process | None:
        """A new process of ``target`` once there are as many as before the kill (a server: once it answers)."""
        now = self.up.processes().get(target, [])
        new = [p for p in now if p.pid not in before]
        if len(now) < len(before) or not new or (target == "registry" and not self.up.registry_answers()):
            return None
        return new[0]

    def _first_success_after(self, at: float) -> float | None:
        done = [s.done for s in self.log if s.sent >= at and s.status == 200]
        return min(done) - at if done else None

    def _measure(self, kill: Kill) -> None:
        window = [s for s in self.log if kill.at <= s.done <= kill.window_end]
        for s in window:
            if s.status != 200:
                kill.failed[s.status] = kill.failed.get(s.status, 0) + 1
        times = sorted(s.done for s in window if s.status == 200)
        if times:
            kill.longest_gap = max(b - a for a, b in itertools.pairwise([kill.at, *times]))

    # -- swaps and scaling ---------------------------------------------------------------------------

    async def swap(self, timeout: float = 60.0) -> Swap:
        """Relink the route to the other model key and wait for its ``model_swapped`` event.

        Every route serving the same bindle moves with it, so one model stays loaded between
        swaps (two while a swap loads the new one), and RSS compares across swaps.
        """
        from mlcloud.bench.stack import mlinference_link

        engine = "" if self._engine else "onnxruntime"
        swap = Swap(_now(), engine)
        seen = len(self.model_events)
        link, ctl = await mlinference_link(self.up.nats_url, self.up.lattice, str(self.up.ctl_creds))
        try:
            routes = [r for r, bindle_id in link.values.items() if bindle_id == link.values[ROUTE]]
            values = {k: v for k, v in link.values.items() if k not in {f"engine.{r}" for r in routes}}
            if engine:
                values.update({f"engine.{r}": engine for r in routes})
            await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name, values)
        finally:
            await ctl.close()
        self._engine = engine
        self.swaps.append(swap)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not any(name == "model_swapped" for _, name, _ in self.model_events[seen:]):
                    await asyncio.sleep(0.05)
                swap.took = _now() - swap.at
        return swap

    async def scale_actors(self, replicas: int, timeout: float = 60.0) -> None:
        """Run ``replicas`` instances of each actor, and wait until they all are up and serving."""
        from mlcloud.lattice.ctl_client import CtlClient
        from mlcloud.settings import Settings

        settings = Settings.from_env({}, nats_url=self.up.nats_url, lattice=self.up.lattice,
                                     nats_creds=self.up.ctl_creds)
        async with await CtlClient.connect(settings) as ctl:
            (inventory,) = await ctl.get_inventories()
            for actor in inventory.actors:
                if actor.name in ACTORS and len(actor.instances) != replicas:
                    await ctl.scale_actor(inventory.host_id, actor.id, replicas)
            async with asyncio.timeout(timeout):
                while True:
                    (inventory,) = await ctl.get_inventories()
                    if all(len(a.instances) == replicas and all(i.status == "healthy" for i in a.instances)
                           for a in inventory.actors if a.name in ACTORS):
                        break
                    await asyncio.sleep(0.2)
        self.up.replicas = replicas
        await self.wait_serving()

    # -- the report --------------------------------------------------------------------------------

    def report(self, warmup: float, min_span: float) -> Report:
        """Everything measured; RSS and fds of each process compared over its warm samples (those
        ``warmup`` seconds after both the process's start and the run's) that span ``min_span``."""
        growth = []
        for samples in self.samples.values():
            warm = [p for p in samples.warm(warmup) if p[0] - self.started >= warmup]
            if len(warm) < 6 or warm[-1][0] - warm[0][0] < min_span:
                continue
            first, last = warm[:3], warm[-3:]
            growth.append(Growth(
                samples.target, samples.pid, warm[-1][0] - warm[0][0],
                int(statistics.median(p[1] for p in first)), int(statistics.median(p[1] for p in last)),
                int(statistics.median(p[2] for p in first)), int(statistics.median(p[2] for p in last))))
        outside: dict[int, int] = {}
        for s in self.log:
            if s.status != 200 and not any(k.at <= s.done <= k.window_end for k in self.kills):
                outside[s.status] = outside.get(s.status, 0) + 1
        return Report(
            duration=_now() - self.started, requests=len(self.log),
            successes=sum(1 for s in self.log if s.status == 200), kills=list(self.kills),
            swaps=list(self.swaps), growth=sorted(growth, key=lambda g: (g.target, g.pid)),
            failed_outside_kills=outside)


def kill_order(targets: tuple[str, ...], rng: random.Random) -> Iterator[str]:
    """Targets in shuffled rounds: random, and each one hit once per round."""
    while True:
        round_ = list(targets)
        rng.shuffle(round_)
        yield from round_


@dataclass
class SoakOptions:
    duration: float = 600.0
    kill_every: float = 30.0
    swap_every: float = 60.0  # 0: no swaps
    warmup: float = 30.0  # seconds before the first kill, and before a process's RSS counts
    replicas: int = 1
    targets: tuple[str, ...] = TARGETS
    concurrency: int = CONCURRENCY
    seed: int | None = None

    @property
    def min_span(self) -> float:
        """How long a process must have lived, warm, for its RSS and fds to be compared."""
        return max(10.0, (self.duration - self.warmup) / 4)


async def soak(run: ChaosRun, options: SoakOptions, say: Callable[[str], None] = print) -> Report:
    """Kill and swap on ``run`` for ``options.duration`` seconds (the warm-up included)."""
    await run.wait_serving()
    start = _now()
    end = start + options.duration
    order = kill_order(options.targets, run.random)
    next_kill = start + options.warmup
    next_swap = start + options.warmup / 2 if options.swap_every else float("inf")
    swapping: asyncio.Task[Swap] | None = None
    while (now := _now()) < end:
        if swapping is not None and swapping.done():
            try:
                swap = swapping.result()
                say(f"{swap.at - start:6.1f} s  swapped to engine {swap.engine or 'default'} in {_fmt(swap.took)} s")
            except (MLCloudError, OSError) as err:  # NATS away at that moment: try again in a second
                say(f"{now - start:6.1f} s  swap postponed: {err}")
                next_swap = now + 1.0
            swapping = None
        if swapping is None and now >= next_swap:
            swapping = asyncio.create_task(run.swap(timeout=max(1.0, min(60.0, end - now))), name="chaos-swap")
            next_swap += options.swap_every
        if now >= next_kill and end - now > WINDOW_MAX / 3:
            kill = await run.kill(next(order))
            say(f"{kill.at - start:6.1f} s  killed {kill.target} ({kill.pid}): {kill.failures} failed of "
                f"{kill.in_flight} in flight, serving again after {_fmt(kill.serving_again)} s")
            next_kill = max(next_kill + options.kill_every, _now())
        else:
            await asyncio.sleep(0.2)
    if swapping is not None:
        await asyncio.gather(swapping, return_exceptions=True)
    return run.report(options.warmup, options.min_span)


@contextlib.asynccontextmanager
async def chaos_system(options: SoakOptions, state_dir: Path | None = None) -> AsyncIterator[ChaosRun]:
    """The default app under ``mlcloud up`` with load on it, in a temporary state dir unless given."""
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlcloud-chaos-")))
        up = UpProcess(state_dir, replicas=options.replicas)
        stack.callback(up.stop)
        await asyncio.to_thread(up.start)
        async with ChaosRun(up, concurrency=options.concurrency, seed=options.seed) as run:
            yield run


# --------------------------------------------------------------------------- printing


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def kills_table(kills: list[Kill], started: float = 0.0) -> str:
    rows = [[
        f"{k.at - started:.0f}", k.target, str(k.replicas), str(k.in_flight),
        str(k.failures) + (" (" + ", ".join(f"{n}×{s or 'conn'}" for s, n in sorted(k.failed.items())) + ")"
                           if k.failed else ""),
        _fmt(k.longest_gap), _fmt(k.serving_again), _fmt(k.back_after), _fmt(k.load_time),
        "; ".join(k.misses()) or "met",
    ] for k in kills]
    return table(rows, ["at s", "killed", "instances", "in flight", "failed (by status)",
                        "longest without success s", "serving again s", "replaced s", "model load s",
                        "targets"])


def growth_table(growth: list[Growth]) -> str:
    rows = [[g.target, str(g.pid), f"{g.span:.0f}", f"{g.rss_first / 2**20:.1f}", f"{g.rss_last / 2**20:.1f}",
             f"{g.rss_change:+.1%}", str(g.fds_first), str(g.fds_last)] for g in growth]
    return table(rows, ["process", "pid", "compared over s", "RSS first MiB", "RSS last MiB", "change",
                        "fds first", "fds last"])


def render(report: Report, started: float = 0.0) -> str:
    lost = sum(k.failures for k in report.kills) + sum(report.failed_outside_kills.values())
    swaps = [s.took for s in report.swaps if s.took is not None]
    parts = [
        kills_table(report.kills, started), "",
        growth_table(report.growth), "",
        f"{report.requests} requests in {report.duration:.0f} s, {report.successes} succeeded, {lost} failed "
        f"({sum(report.failed_outside_kills.values())} outside any kill's window); {len(report.swaps)} swaps"
        + (f", longest {max(swaps):.2f} s" if swaps else ""),
    ]
    missed = report.misses()
    parts.append("every target met" if not missed else "targets missed:\n  " + "\n  ".join(missed))
    return "\n".join(parts)


# --------------------------------------------------------------------------- the command


def _targets(text: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown or not chosen:
        raise click.BadParameter(f"expected some of {', '.join(TARGETS)}; got {text!r}")
    return chosen


@click.command("chaos")
@click.option("--duration", type=float, default=SoakOptions.duration, show_default=True,
              help="Seconds, warm-up included.")
@click.option("--kill-every", type=float, default=SoakOptions.kill_every, show_default=True,
              help="Seconds between SIGKILLs.")
@click.option("--swap-every", type=float, default=SoakOptions.swap_every, show_default=True,
              help="Seconds between model swaps (0: none).")
@click.option("--warmup", type=float, default=SoakOptions.warmup, show_default=True,
              help="Seconds before the first kill, and before a process's RSS and fds count.")
@click.option("--replicas", type=int, default=SoakOptions.replicas, show_default=True,
              help="Instances of each actor.")
@click.option("--targets", default=",".join(TARGETS), show_default=True, help="What may be killed (comma-separated).")
@click.option("--concurrency", type=int, default=CONCURRENCY, show_default=True)
@click.option("--seed", type=int, help="Seed of the random choices, to repeat a run.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the system's state and up.log here (default: a temporary directory).")
def chaos_command(duration: float, kill_every: float, swap_every: float, warmup: float, replicas: int,
                  targets: str, concurrency: int, seed: int | None, state_dir: Path | None) -> None:
    """Run the default app under load, SIGKILL its parts and swap its model; print what it cost.

    Exits 1 when a target of issue 15 is missed (docs/reliability.md).
    """
    options = SoakOptions(duration=duration, kill_every=kill_every, swap_every=swap_every, warmup=warmup,
                          replicas=replicas, targets=_targets(targets), concurrency=concurrency, seed=seed)

    async def main() -> tuple[Report, float]:
        click.echo(f"starting the default app with {replicas} replica(s) of each actor …", err=True)
        async with chaos_system(options, state_dir) as run:
            return await soak(run, options, lambda line: click.echo(line, err=True)), run.started

    report, started = asyncio.run(main())
    click.echo(render(report, started))
    if state_dir is not None:
        (state_dir / "chaos.json").write_bytes(msgspec.json.encode(report))
    if report.misses():
        sys.exit(1)
