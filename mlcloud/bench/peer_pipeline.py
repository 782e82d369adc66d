"""What a framework peer of the bench serves (mlcloud.bench.peers), loaded inside the peer's venv.

mlcloud is not installed there: ``mlcloud/bench/workload.py`` is loaded by its path (it needs
numpy only; the actor modules it loads need Pillow and msgspec, which the peer's venv has), and
the files come from the environment the bench sets.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any


def load_pipeline() -> Any:
    """The bench's Pipeline on onnxruntime's default session (``workload.peer_pipeline``)."""
    project = Path(os.environ["MLCLOUD_BENCH_PROJECT"])
    name = "_mlcloud_bench_workload"
    spec = importlib.util.spec_from_file_location(name, project / "mlcloud" / "bench" / "workload.py")
    assert spec is not None and spec.loader is not None
    workload = importlib.util.module_from_spec(spec)
    sys.modules[name] = workload  # dataclasses look their module up while the class is made
    spec.loader.exec_module(workload)
    return workload.peer_pipeline(Path(os.environ["MLCLOUD_BENCH_BUILD_DIR"]))
