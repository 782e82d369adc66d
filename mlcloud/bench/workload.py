"""The work every system under test does per request, defined once: image → top-5 labels.

The bench compares three ways of serving the same thing, so the pipeline itself is shared: the
preprocess actor's ``imaging`` module (decode, resize, normalise), an onnxruntime session of the
same EfficientNet-Lite0 file the lattice serves, and the postprocess actor's ``topk`` module.
The actor modules are imported from their folders under private names (inside the lattice they
are top-level modules of their own processes), so the limit and the naive server run exactly the
code mlcloud runs.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[2]
IMAGES_DIR = PROJECT_DIR / "images"
MODEL_BUNDLE = "efficientnet-lite0-1.0.0"
MODEL_FILE = "efficientnet-lite0.onnx"
INPUT_DIMENSIONS = (1, 3, 224, 224)
TOP_K = 5


def _actor_module(actor: str, module: str) -> ModuleType:
    name = f"_mlcloud_bench_{actor}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    path = PROJECT_DIR / "actors" / actor / f"{module}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def imaging() -> ModuleType:
    return _actor_module("preprocess", "imaging")


@functools.cache
def topk() -> ModuleType:
    return _actor_module("postprocess", "topk")


def load_images(directory: Path = IMAGES_DIR) -> list[tuple[str, bytes]]:
    """The committed test photos, ``(name, bytes)``, in a stable order."""
    found = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        raise FileNotFoundError(f"no images in {directory}")
    return [(p.name, p.read_bytes()) for p in found]


def model_path(build_dir: Path) -> Path:
    path = build_dir / MODEL_BUNDLE / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `mlcloud models build`")
    return path


@functools.cache
def labels(build_dir: Path) -> list[str]:
    found: list[str] = topk().load_labels(build_dir / MODEL_BUNDLE / "synset.txt")  # a module loaded by path: Any
    return found


def ort_session(path: Path, *, intra_op_threads: int = 0, spinning: bool = True) -> Any:
    """An onnxruntime session as a user would open it (``intra_op_threads`` 0: ort's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# The onnxruntime set-ups the limit and the naive server are measured with, each at every
# concurrency; the best one at a level is that level's limit (issue 19: a limit is only a limit
# when it is the best this machine can do).
ORT_SETUPS: dict[str, str] = {
    "default": "one session with onnxruntime's defaults: a thread per core, spinning",
    "one-thread": "one session of one intra-op thread, no spinning (runs in parallel use the cores)",
    "mlcloud": "the mlinference provider's engine (an idle session that spins within a run, "
               "a one-thread session while another run is in flight)",
}


def ort_setup_infer(path: Path, setup: str) -> Callable[[np.ndarray], np.ndarray]:
    """Inference with one of :data:`ORT_SETUPS`."""
    if setup == "default":
        return ort_infer(ort_session(path))
    if setup == "one-thread":
        return ort_infer(ort_session(path, intra_op_threads=1, spinning=False))
    if setup == "mlcloud":
        from mlcloud.inference.engines.onnxruntime import OnnxRuntimeEngine
        from mlcloud.inference.metadata import ModelMetadata

        metadata = ModelMetadata.parse((path.parent / "metadata.json").read_bytes())
        session = OnnxRuntimeEngine().load(path, metadata)
        return lambda array: session.predict([array])[0]
    raise ValueError(f"unknown onnxruntime set-up {setup!r}; known: {', '.join(ORT_SETUPS)}")


def tract_infer(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The model on tract, loaded by the mlinference provider's own tract engine."""
    from mlcloud.inference.engines.tract import TractEngine
    from mlcloud.inference.metadata import ModelMetadata

    metadata = ModelMetadata.parse((path.parent / "metadata.json").read_bytes())
    session = TractEngine().load(path, metadata)
    return lambda array: session.predict([array])[0]


def ort_infer(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda array: session.run(None, {name: array})[0]


@dataclass
class Pipeline:
    """decode + preprocess + inference + top-5, in one process (the limit and the naive server)."""

    infer: Callable[[np.ndarray], np.ndarray]
    labels: list[str]

    def __post_init__(self) -> None:
        self._imaging = imaging()
        self._topk = topk()

    def classify(self, image: bytes) -> list[dict[str, Any]]:
        array = self._imaging.image_to_array(image, INPUT_DIMENSIONS)
        found = self._topk.top_k(np.asarray(self.infer(array)), self.labels, TOP_K)
        return [{"label": m.label, "probability": m.probability} for m in found]


def peer_pipeline(build_dir: Path) -> Pipeline:
    """The pipeline a framework peer serves (mlcloud.bench.peers): onnxruntime's default session,
    as that framework's user writes it."""
    return Pipeline(ort_setup_infer(model_path(build_dir), "default"), labels(build_dir))
