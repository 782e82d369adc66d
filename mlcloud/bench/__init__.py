"""Side-by-side benchmark of mlcloud against the machine's limit, a naive server and framework peers.

``mlcloud bench`` (:mod:`mlcloud.bench.cli`) runs :func:`run_bench`; see :mod:`mlcloud.bench.runner`
for what is measured and how, :mod:`mlcloud.bench.result` for how it is judged (issue 19's
targets), and docs/performance.md for the figures.
"""

from mlcloud.bench.result import BenchResult, Run
from mlcloud.bench.runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "BenchResult", "Run", "run_bench"]
