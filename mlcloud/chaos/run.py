"""Load on the system, kills and swaps on demand (:class:`ChaosRun`), and the soak that times them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import psutil
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mlcloud.bench.loadgen import Connection, request_head
from mlcloud.chaos.measures import Growth, Kill, Report, Samples, Sent, Swap, fmt
from mlcloud.chaos.system import ACTORS, TARGETS, UpProcess, clock, monotonic_of
from mlcloud.errors import MLCloudError
from mlcloud.lattice import subjects
from mlcloud.lattice.control import ModelChanged
from mlcloud.lattice.events import decode_event
from mlcloud.testing.stack import PROJECT_DIR

ROUTE = "mobilenetv27"
IMAGE = PROJECT_DIR / "images" / "cat.jpg"
CONCURRENCY = 8

FAILURE_PAUSE = 0.1  # seconds a worker waits after a failed request (see mlcloud.chaos)
REQUEST_TIMEOUT = 30.0  # a request without an answer by then counts as failed (status 0)
SETTLE = 1.0  # seconds a kill's window lasts after serving again
WINDOW_MAX = 30.0  # a kill's window ends by then even if serving never came back
SAMPLE_EVERY = 1.0  # seconds between RSS / fd samples
RSS_WINDOW = 10  # samples whose median is a process's first and last RSS


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
        self.started = clock()
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
                self.model_events.append((clock(), event.name, event.data))

    async def _worker(self, body: bytes) -> None:
        split = urlsplit(self.up.http_url)
        connection = Connection(split.hostname or "127.0.0.1", split.port or 80)
        head = request_head(self.up.http_url, f"/{ROUTE}/matches", body)
        while not self._stop.is_set():
            sent = clock()
            self.in_flight += 1
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, _ = await connection.request(head, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                await connection.close()
                status = 0
            finally:
                self.in_flight -= 1
            self.log.append(Sent(sent, clock(), status))
            if status != 200:
                await asyncio.sleep(FAILURE_PAUSE)
        await connection.close()

    async def _sampler(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self._sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SAMPLE_EVERY)

    def _sample(self) -> None:
        now = clock()
        for target, procs in self.up.processes().items():
            for proc in procs:
                try:
                    with proc.oneshot():
                        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped: no fds
                            continue
                        point = (now, proc.memory_info().rss, proc.num_fds())
                        started = monotonic_of(proc.create_time())
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
        kill = Kill(target, len(procs), victim.pid, clock(), self.in_flight)
        victim.kill()
        self.kills.append(kill)
        loaded_before = len(self.model_events)
        deadline = kill.at + WINDOW_MAX
        replaced: psutil.Process | None = None
        while clock() < deadline:
            await asyncio.sleep(0.05)
            if replaced is None:
                replaced = await asyncio.to_thread(self._replacement, target, before)
                if replaced is not None:
                    kill.back_after = clock() - kill.at
            kill.serving_again = self._first_success_after(kill.at)
            if replaced is not None and kill.serving_again is not None and \
                    clock() >= kill.at + kill.serving_again + SETTLE:
                break
        kill.window_end = clock()
        if target == "mlinference" and replaced is not None:
            with contextlib.suppress(psutil.Error):
                loaded = [t for t, name, _ in self.model_events[loaded_before:] if name == "model_loaded"]
                if loaded:
                    kill.load_time = loaded[0] - monotonic_of(replaced.create_time())
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
        swap = Swap(clock(), engine)
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
                swap.took = clock() - swap.at
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

    def report(self, warmup: float, process_warmup: float, min_span: float) -> Report:
        """Everything measured. Each process's RSS and fds are compared over its warm samples
        (``warmup`` seconds after the run's start and ``process_warmup`` after its own) when
        they span ``min_span`` seconds: the median RSS of the first ``RSS_WINDOW`` samples
        against that of the last, and the usual (most frequent) fd count of the first half against
        the fewest of the second: connections come and go with the kills (a restarted mlinference
        holds three to Bindle for a while), but leaked fds never close."""
        growth = []
        for samples in self.samples.values():
            warm = [p for p in samples.warm(process_warmup) if p[0] - self.started >= warmup]
            if len(warm) < 6 or warm[-1][0] - warm[0][0] < min_span:
                continue
            window = min(RSS_WINDOW, len(warm) // 3)
            half = len(warm) // 2
            growth.append(Growth(
                samples.target, samples.pid, warm[-1][0] - warm[0][0],
                int(statistics.median(p[1] for p in warm[:window])),
                int(statistics.median(p[1] for p in warm[-window:])),
                statistics.mode(p[2] for p in warm[:half]), min(p[2] for p in warm[half:])))
        outside: dict[int, int] = {}
        for s in self.log:
            if s.status != 200 and not any(k.at <= s.done <= k.window_end for k in self.kills):
                outside[s.status] = outside.get(s.status, 0) + 1
        return Report(
            duration=clock() - self.started, requests=len(self.log),
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
    warmup: float = 30.0  # seconds before the first kill and before any RSS or fd count counts
    # Seconds after its start before a process's RSS and fds count: a restarted nats-server's
    # heap grows for about a minute, as onnxruntime's arenas do under a new load.
    process_warmup: float = 60.0
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
    start = clock()
    end = start + options.duration
    order = kill_order(options.targets, run.random)
    next_kill = start + options.warmup
    next_swap = start + options.warmup / 2 if options.swap_every else float("inf")
    swapping: asyncio.Task[Swap] | None = None
    while (now := clock()) < end:
        if swapping is not None and swapping.done():
            try:
                swap = swapping.result()
                say(f"{swap.at - start:6.1f} s  swapped to engine {swap.engine or 'default'} in {fmt(swap.took)} s")
            except (MLCloudError, OSError) as err:  # NATS away at that moment: try again in a second
                say(f"{now - start:6.1f} s  swap postponed: {err}")
                next_swap = now + 1.0
            swapping = None
        if swapping is None and now >= next_swap:
            # A swap keeps its whole timeout even near the end: the soak waits for it below (cutting it
            # to the time left failed a swap that started 2.4 s before the end and took 3 s).
            swapping = asyncio.create_task(run.swap(), name="chaos-swap")
            next_swap += options.swap_every
        if now >= next_kill and end - now > WINDOW_MAX / 3:
            kill = await run.kill(next(order))
            say(f"{kill.at - start:6.1f} s  killed {kill.target} ({kill.pid}): {kill.failures} failed of "
                f"{kill.in_flight} in flight, serving again after {fmt(kill.serving_again)} s")
            next_kill = max(next_kill + options.kill_every, clock())
        else:
            await asyncio.sleep(0.2)
    if swapping is not None:
        await asyncio.gather(swapping, return_exceptions=True)
    return run.report(options.warmup, options.process_warmup, options.min_span)


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
