"""Import ONNX model-zoo files that mlcloud cannot ship (``mobilenetv2-7``, ``squeezenetv1-1-7``).

``models/zoo.toml`` records, per file, the bindle it belongs to, its exact size and fragments
of its sha256 (all that is known of the originals). :func:`import_file` checks a user's file
against that record and the ONNX graph against the expected shapes, then stages the bindle in
``models/build/`` exactly like a generated one; pushing it to Bindle is the caller's next step.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from mlcloud.digests import sha256_file
from mlcloud.modelbuild import bundles
from mlcloud.modelbuild.errors import ChecksumMismatch, ModelBuildError

ZOO_FILE = "zoo.toml"


@dataclass(frozen=True)
class ZooEntry:
    file: str
    bindle: str
    size: int
    sha256_prefix: str
    sha256_suffix: str
    tensor_dimensions_in: tuple[int, ...]
    tensor_dimensions_out: tuple[int, ...]
    source: str
    license: str
    route: str = ""  # the HTTP route `models import` relinks to this bindle

    @property
    def name(self) -> str:
        return self.bindle.rsplit("/", 1)[0]

    @property
    def version(self) -> str:
        return self.bindle.rsplit("/", 1)[1]


def load_zoo(models_dir: str | Path) -> list[ZooEntry]:
    path = Path(models_dir) / ZOO_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return [
            ZooEntry(
                file=m["file"], bindle=m["bindle"], size=int(m["size"]),
                sha256_prefix=m["sha256_prefix"].lower(), sha256_suffix=m["sha256_suffix"].lower(),
                tensor_dimensions_in=tuple(m["tensor_dimensions_in"]),
                tensor_dimensions_out=tuple(m["tensor_dimensions_out"]),
                source=m["source"], license=m["license"], route=m.get("route", ""),
            )
            for m in data.get("model", [])
        ]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelBuildError(f"{path}: {exc}") from exc


def find_entry(entries: list[ZooEntry], path: Path) -> ZooEntry:
    """The entry for ``path``: by file name, else by size (users rename downloads)."""
    by_name = [e for e in entries if e.file == path.name]
    if by_name:
        return by_name[0]
    size = path.stat().st_size
    by_size = [e for e in entries if e.size == size]
    if len(by_size) == 1:
        return by_size[0]
    known = ", ".join(e.file for e in entries)
    raise ModelBuildError(f"{path.name} is not a known model-zoo file (known: {known})")


def check_file(path: Path, entry: ZooEntry) -> str:
    """Raise :class:`ChecksumMismatch` unless ``path`` is the recorded file; returns its sha256."""
    size = path.stat().st_size
    if size != entry.size:
        raise ChecksumMismatch(f"{path}: {size:,} bytes, expected {entry.size:,} for {entry.file}")
    digest = sha256_file(path)
    if not (digest.startswith(entry.sha256_prefix) and digest.endswith(entry.sha256_suffix)):
        raise ChecksumMismatch(
            f"{path}: sha256 {digest} does not match {entry.sha256_prefix}…{entry.sha256_suffix} of {entry.file}"
        )
    return digest


def onnx_io(path: Path) -> tuple[str, list[int], list[int]]:
    """(input name, input dims, output dims) read from the file; the name is never assumed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    # Old zoo files list weights among the graph inputs; the real input is the one that is not.
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelBuildError(f"{path}: expected one input and one output")

    def dims(value_info: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value_info.type.tensor_type.shape.dim]

    return inputs[0].name, dims(inputs[0]), dims(model.graph.output[0])


def import_file(
    path: str | Path, models_dir: str | Path, out: str | Path, *, progress: bundles.Progress = bundles.no_progress,
) -> tuple[ZooEntry, bundles.BuildResult | None]:
    """Check a model-zoo file and stage its bindle under ``out``.

    The result is ``None`` when that very file is already staged and the bundle up to date.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelBuildError(f"{path}: no such file")
    entry = find_entry(load_zoo(models_dir), path)
    digest = check_file(path, entry)
    progress(f"{path.name}: size and sha256 match {entry.file} ({digest[:12]}…)")
    name, dims_in, dims_out = onnx_io(path)
    if tuple(dims_in) != entry.tensor_dimensions_in or tuple(dims_out) != entry.tensor_dimensions_out:
        raise ModelBuildError(f"{path}: shapes {dims_in} → {dims_out} differ from {ZOO_FILE}")
    source = bundles.load_source(Path(models_dir) / entry.name / entry.version)
    result = bundles.build_bundle(source, out, supplied={entry.file: path}, progress=progress)
    if result is not None:
        result.notes.append(f"input name {name!r}")
    return entry, result
