"""Per-route serving figures over the last minute (requests, errors, p50 and p99), for the washboard.

Read from the provider's Prometheus metrics (:data:`mlcloud.metrics.INFERENCE_REQUESTS` and
``INFERENCE_DURATION``), the same figures ``GET /metrics`` shows: each reading is kept for a
window, and the figures are the difference between now and the oldest reading still in it (since
the provider started, until it has run a window long). The percentiles are estimated from the
histogram's buckets as Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field

from mlcloud.interfaces import ModelInfo
from mlcloud.metrics import INFERENCE_DURATION, INFERENCE_REQUESTS

WINDOW_SECONDS = 60.0
SUCCESS = "Success"


@dataclass
class _Route:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound → cumulative count


def read() -> dict[str, _Route]:
    """Every route's counts now, summed over versions."""
    routes: dict[str, _Route] = {}
    for metric in INFERENCE_REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                route = routes.setdefault(sample.labels["model"], _Route())
                route.requests += sample.value
                if sample.labels["result"] != SUCCESS:
                    route.errors += sample.value
    for metric in INFERENCE_DURATION.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets = routes.setdefault(sample.labels["model"], _Route()).buckets
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return routes


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative ``buckets`` (bound, count), interpolated within its bucket."""
    total = buckets[-1][1]
    rank = q * total
    index = bisect.bisect_left([count for _, count in buckets], rank)
    bound, count = buckets[index]
    if bound == float("inf"):
        return buckets[index - 1][0] if index > 0 else 0.0
    lower, below = buckets[index - 1] if index > 0 else (0.0, 0.0)
    return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)


class RouteFigures:
    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._readings: deque[tuple[float, dict[str, _Route]]] = deque([(time.monotonic(), {})])

    def annotate(self, infos: list[ModelInfo]) -> list[ModelInfo]:
        """``infos`` with each route's figures over the window filled in."""
        now = time.monotonic()
        current = read()
        self._readings.append((now, current))
        while len(self._readings) > 1 and self._readings[1][0] <= now - self.window:
            self._readings.popleft()
        base = self._readings[0][1]
        for info in infos:
            figures, before = current.get(info.name, _Route()), base.get(info.name, _Route())
            info.requests = round(figures.requests - before.requests)
            info.errors = round(figures.errors - before.errors)
            buckets = sorted((b, n - before.buckets.get(b, 0.0)) for b, n in figures.buckets.items())
            if buckets and buckets[-1][1] > 0:
                info.p50_ms = round(quantile(0.5, buckets) * 1000, 2)
                info.p99_ms = round(quantile(0.99, buckets) * 1000, 2)
        return infos
