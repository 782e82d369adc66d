"""CPU and memory of a system under test: every process of its tree, sampled with psutil.

A system is named by its root process ids; their descendants (unless ``children=False``: the
limit runs in the bench's own process, whose children are the other systems) are found afresh
every second, so processes a host starts or restarts during the run are counted. CPU is user +
system time summed over the tree between :meth:`start` and :meth:`stop` (a process that exits
keeps its last reading); memory is the peak of the tree's summed RSS over the samples (every
100 ms), with the processes that made it up. Per process it also keeps the CPU time and the
voluntary context switches (each one a sleep on a socket, lock or futex, so a wake-up) between
start and stop: the breakdown by process that stays readable on a loaded machine, where wall
times do not.

The monitor runs in the bench's process, beside the load generator, so it must cost little: a
sample reads each known process's CPU and RSS (0.35 ms for the lattice's 8 processes); the tree
is rescanned every second and each process labelled once. Rescanning and relabelling at every
sample cost ~3 ms with the GIL held every 50 ms, which delayed the load generator's requests to
the multi-process systems and so inflated their latency.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_INTERVAL = 0.1
FULL_SAMPLE_EVERY = 10  # samples between rescans of the process tree


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss: int = 0  # bytes, summed over the tree at its peak
    peak_processes: dict[str, int] = field(default_factory=dict)  # name (pid) → RSS at the peak
    processes: dict[str, ProcessUsage] = field(default_factory=dict)  # name (pid) → its share

    @property
    def cpu_cores(self) -> float:
        """Average number of cores busy (1.0 = one core flat out)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class ProcessUsage:
    """One process's CPU seconds and voluntary context switches (wake-ups) over the run."""

    cpu_seconds: float = 0.0
    wakeups: int = 0


def _wakeups(proc: psutil.Process) -> int:
    """Voluntary context switches of all the process's threads (psutil's figure is the main
    thread's alone on Linux: a worker thread's sleeps would not count)."""
    total = 0
    try:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    except OSError:  # not Linux, or gone
        return int(proc.num_ctx_switches().voluntary)
    return total


def _label(proc: psutil.Process) -> str:
    return f"{process_name(proc)} ({proc.pid})"


def process_name(proc: psutil.Process) -> str:
    """What a process of the system is: an instance's component name, a ``-m`` module, or its name."""
    try:
        cmd = proc.cmdline()
    except (psutil.Error, OSError):
        cmd = []
    name = proc.name()
    words = " ".join(cmd).split()
    if len(words) == 4 and words[0] == "mlcloud" and words[1] in ("actor", "provider"):
        name = words[2]  # an instance's title (InstanceSpec.title), set once it has started
    elif "mlcloud.host.runner" in cmd:
        try:  # the instance's component name, from the spec its host passed it
            name = json.loads(proc.environ().get("MLCLOUD_INSTANCE_SPEC", "{}")).get("name") or "runner"
        except (psutil.Error, OSError, ValueError):
            name = "runner"
    elif len(cmd) > 2 and cmd[1] == "-m":
        name = cmd[2]
    return name


class TreeMonitor:
    """Samples the process trees under ``pids`` in a background thread."""

    def __init__(self, pids: list[int], *, children: bool = True, interval: float = SAMPLE_INTERVAL) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self.children = children
        self.interval = interval
        self._procs: dict[int, psutil.Process] = {}
        self._labels: dict[int, str] = {}
        self._current: list[psutil.Process] = []
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._wakeups_start: dict[int, int] = {}
        self._wakeups_last: dict[int, int] = {}
        self._usage = Usage()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _tree(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for root in self.roots:
            try:
                found.append(root)
                if self.children:
                    found.extend(root.children(recursive=True))
            except psutil.Error:
                continue
        procs = []
        for proc in found:
            known = self._procs.setdefault(proc.pid, proc)  # keep one object per pid (cpu_times cache)
            if proc.pid not in self._labels:
                try:
                    self._labels[proc.pid] = _label(proc)
                except psutil.Error:  # gone already
                    continue
            procs.append(known)
        return procs

    def _sample(self, *, baseline: bool = False, full: bool = True, wakeups: bool = False) -> None:
        """CPU and RSS of the known processes; with ``full``, find the tree afresh first; with
        ``wakeups`` (at start and stop only: one more read per process), context switches."""
        if full or not self._current:
            self._current = self._tree()
        rss_total = 0
        parts: dict[str, int] = {}
        for proc in self._current:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    switches = _wakeups(proc) if wakeups else 0
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if baseline:
                self._cpu_start[proc.pid] = cpu
                self._wakeups_start[proc.pid] = switches
            else:
                self._cpu_start.setdefault(proc.pid, 0.0)  # started during the run: all of it counts
                self._wakeups_start.setdefault(proc.pid, 0)
            self._cpu_last[proc.pid] = cpu
            if wakeups:
                self._wakeups_last[proc.pid] = switches
            rss_total += rss
            parts[self._labels.get(proc.pid, f"? ({proc.pid})")] = rss
        if rss_total > self._usage.peak_rss:
            self._usage.peak_rss = rss_total
            self._usage.peak_processes = parts

    def _loop(self) -> None:
        count = 0
        while not self._stop.wait(self.interval):
            count += 1
            self._sample(full=count % FULL_SAMPLE_EVERY == 0)

    def start(self) -> TreeMonitor:
        self._sample(baseline=True, wakeups=True)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(wakeups=True)
        self._usage.wall_seconds = time.perf_counter() - self._t0
        self._usage.cpu_seconds = sum(self._cpu_last[pid] - self._cpu_start.get(pid, 0.0) for pid in self._cpu_last)
        self._usage.processes = {
            self._labels.get(pid, f"? ({pid})"): ProcessUsage(
                cpu - self._cpu_start.get(pid, 0.0),
                self._wakeups_last.get(pid, 0) - self._wakeups_start.get(pid, 0))
            for pid, cpu in self._cpu_last.items()
        }
        return self._usage

    def __enter__(self) -> TreeMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()
