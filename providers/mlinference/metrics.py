"""Per-route serving figures over a sliding window: requests, errors, p50 and p99 latency."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from mlcloud.interfaces import ModelInfo

WINDOW_SECONDS = 60.0


class _Timer:
    def __init__(self, metrics: RouteMetrics, route: str) -> None:
        self.metrics = metrics
        self.route = route
        self.started = time.monotonic()

    def succeeded(self) -> None:
        self.metrics.record(self.route, time.monotonic() - self.started, ok=True)

    def failed(self) -> None:
        self.metrics.record(self.route, time.monotonic() - self.started, ok=False)


class RouteMetrics:
    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}

    def start(self, route: str) -> _Timer:
        return _Timer(self, route)

    def record(self, route: str, seconds: float, *, ok: bool) -> None:
        samples = self._samples.setdefault(route, deque())
        now = time.monotonic()
        samples.append((now, seconds, ok))
        self._expire(samples, now)

    def _expire(self, samples: deque, now: float) -> None:
        while samples and samples[0][0] < now - self.window:
            samples.popleft()

    def annotate(self, info: ModelInfo) -> ModelInfo:
        """``info`` with the route's figures over the window filled in."""
        samples = self._samples.get(info.name, deque())
        self._expire(samples, time.monotonic())
        if not samples:
            return info
        latencies = np.fromiter((s[1] for s in samples if s[2]), dtype=np.float64)
        info.requests = len(samples)
        info.errors = sum(1 for s in samples if not s[2])
        if latencies.size:
            p50, p99 = np.percentile(latencies, [50, 99]) * 1000
            info.p50_ms, info.p99_ms = round(float(p50), 2), round(float(p99), 2)
        return info
