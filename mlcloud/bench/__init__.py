"""Side-by-side benchmark of mlcloud against the machine's limit and a naive server (issue 9).

``mlcloud bench`` (:mod:`mlcloud.bench.cli`) runs :func:`run_bench`; see :mod:`mlcloud.bench.runner`
for what is measured and how, and docs/performance.md for the figures.
"""

from mlcloud.bench.runner import BenchConfig, BenchResult, Run, run_bench

__all__ = ["BenchConfig", "BenchResult", "Run", "run_bench"]
