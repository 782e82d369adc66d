"""Bundles: complete invoices, idempotent builds, rebuilds of exactly what went stale."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from mlcloud.modelbuild import bundles
from mlcloud.modelbuild.bundles import State
from mlcloud.modelbuild.errors import ModelBuildError

from .conftest import MODELS

BUILT = {
    "identity_model-0.2.0": {"identity_model.onnx": "model", "metadata.json": "metadata"},
    "plus3-0.1.0": {"plus3.pb": "model", "metadata.json": "metadata"},
    "efficientnet-lite0-1.0.0": {
        "efficientnet-lite0.onnx": "model", "metadata.json": "metadata", "synset.txt": "labels",
    },
}
METADATA_KEYS = {"model_name", "graph_encoding", "execution_target", "tensor_type",
                 "tensor_dimensions_in", "tensor_dimensions_out"}


def test_sources_cover_every_model():
    ids = [s.id for s in bundles.discover(MODELS)]
    assert ids == ["efficientnet-lite0/1.0.0", "identity_model/0.2.0", "mobilenetv2-7/0.1.0",
                   "plus3-tflite/0.1.0", "plus3/0.1.0", "squeezenetv1-1-7/0.1.0"]
    for source in bundles.discover(MODELS):
        meta = json.loads((source.directory / "metadata.json").read_text())
        assert METADATA_KEYS <= set(meta), source.id
        assert meta["tensor_type"] == "F32"
        encodings = {"plus3": "tensorflow", "plus3-tflite": "tflite"}
        assert meta["graph_encoding"] == encodings.get(source.name, "onnx")


@pytest.mark.parametrize("dirname", sorted(BUILT))
def test_built_invoice_is_complete(built_tree: Path, dirname: str):
    directory = built_tree / dirname
    invoice = tomllib.loads((directory / "invoice.toml").read_text())
    assert bundles.validate_invoice(invoice) == []
    assert invoice["bindleVersion"] == "1.0.0"
    name, version = dirname.rsplit("-", 1)
    assert invoice["bindle"]["name"] == name and invoice["bindle"]["version"] == version
    assert invoice["bindle"]["description"]
    groups = {g["name"] for g in invoice["group"]}
    parcels = {}
    for parcel in invoice["parcel"]:
        label = parcel["label"]
        assert set(label) == {"sha256", "mediaType", "name", "size"}
        data = (directory / label["name"]).read_bytes()
        assert label["size"] == len(data)
        assert label["sha256"] == hashlib.sha256(data).hexdigest()
        (member,) = parcel["conditions"]["memberOf"]
        assert member in groups
        parcels[label["name"]] = member
    assert parcels == BUILT[dirname]
    assert groups == set(BUILT[dirname].values())
    meta_label = next(p["label"] for p in invoice["parcel"] if p["label"]["name"] == "metadata.json")
    assert meta_label["mediaType"] == "application/json"


def test_synset_parcel_has_the_model_zoo_digest(built_tree: Path):
    invoice = bundles.read_invoice(built_tree / "efficientnet-lite0-1.0.0")
    (label,) = [p["label"] for p in invoice["parcel"] if p["conditions"]["memberOf"] == ["labels"]]
    assert label["sha256"] == "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355"
    assert label["mediaType"] == "text/plain"


def test_second_build_rebuilds_nothing(built_tree: Path):
    before = {p: p.stat().st_mtime_ns for p in built_tree.rglob("*")}
    results = bundles.build_all(MODELS, built_tree)
    assert all(result is None for _, result in results)
    assert {st.source.id: st.state for st, _ in results} == {
        "efficientnet-lite0/1.0.0": State.UP_TO_DATE,
        "identity_model/0.2.0": State.UP_TO_DATE,
        "mobilenetv2-7/0.1.0": State.NEEDS_IMPORT,
        "plus3/0.1.0": State.UP_TO_DATE,
        "plus3-tflite/0.1.0": State.UP_TO_DATE,
        "squeezenetv1-1-7/0.1.0": State.NEEDS_IMPORT,
    }
    assert {p: p.stat().st_mtime_ns for p in built_tree.rglob("*")} == before


def test_edited_metadata_rebuilds_only_that_parcel(models_copy: Path, build_copy: Path):
    meta = models_copy / "efficientnet-lite0" / "1.0.0" / "metadata.json"
    meta.write_text(meta.read_text().replace('"cpu"', '"gpu"'))
    onnx_before = (build_copy / "efficientnet-lite0-1.0.0" / "efficientnet-lite0.onnx").stat().st_ino
    source = bundles.load_source(meta.parent)
    st = bundles.status(source, build_copy)
    assert st.state is State.STALE and set(st.stale_parcels) == {"metadata.json"}
    result = bundles.build_bundle(source, build_copy, verify=False)
    assert result.built == ["metadata.json"]
    assert sorted(result.reused) == ["efficientnet-lite0.onnx", "synset.txt"]
    onnx_path = build_copy / "efficientnet-lite0-1.0.0" / "efficientnet-lite0.onnx"
    assert onnx_path.stat().st_ino == onnx_before  # hard-linked, not regenerated
    invoice = bundles.read_invoice(build_copy / "efficientnet-lite0-1.0.0")
    label = next(p["label"] for p in invoice["parcel"] if p["label"]["name"] == "metadata.json")
    assert label["sha256"] == hashlib.sha256(meta.read_bytes()).hexdigest()
    assert bundles.status(source, build_copy).state is State.UP_TO_DATE


def test_edited_template_rewrites_the_invoice(models_copy: Path, build_copy: Path):
    template = models_copy / "plus3" / "0.1.0" / "invoice.toml"
    template.write_text(template.read_text().replace("output = input + 3", "adds three"))
    source = bundles.load_source(template.parent)
    assert bundles.status(source, build_copy).state is State.STALE
    result = bundles.build_bundle(source, build_copy)
    assert result.built == [] and len(result.reused) == 2
    assert "adds three" in bundles.read_invoice(build_copy / "plus3-0.1.0")["bindle"]["description"]


def test_damaged_parcel_is_rebuilt(build_copy: Path):
    path = build_copy / "identity_model-0.2.0" / "identity_model.onnx"
    good = path.read_bytes()
    path.write_bytes(b"garbage")
    source = bundles.load_source(MODELS / "identity_model" / "0.2.0")
    st = bundles.status(source, build_copy)
    assert st.stale_parcels == {"identity_model.onnx": "file does not match the invoice"}
    bundles.build_bundle(source, build_copy)
    assert path.read_bytes() == good


def test_changed_generator_fingerprint_makes_the_parcel_stale(build_copy: Path, monkeypatch):
    source = bundles.load_source(MODELS / "identity_model" / "0.2.0")
    gen = bundles.generators()["identity_model.onnx"]
    monkeypatch.setitem(bundles.GENERATORS, "identity_model.onnx",
                        bundles.Generator(gen.filename, gen.build, gen.modules,
                                          versions=lambda: {"onnx": "99.0"}))
    st = bundles.status(source, build_copy)
    assert st.stale_parcels == {"identity_model.onnx": "its sources changed"}


def test_only_selects_models(tmp_path: Path):
    results = bundles.build_all(MODELS, tmp_path, only=["plus3"])
    assert [st.source.id for st, _ in results] == ["plus3/0.1.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plus3-0.1.0"]
    with pytest.raises(ModelBuildError, match="no model named"):
        bundles.build_all(MODELS, tmp_path, only=["nope"])


def test_failed_build_leaves_the_previous_bundle(build_copy: Path, monkeypatch):
    source = bundles.load_source(MODELS / "identity_model" / "0.2.0")

    def boom(out: Path) -> Path:
        out.write_bytes(b"half")
        raise ModelBuildError("interrupted")

    gen = bundles.generators()["identity_model.onnx"]
    monkeypatch.setitem(bundles.GENERATORS, "identity_model.onnx",
                        bundles.Generator(gen.filename, boom, gen.modules))
    before = sorted(p.name for p in (build_copy / "identity_model-0.2.0").iterdir())
    with pytest.raises(ModelBuildError, match="interrupted"):
        bundles.build_bundle(source, build_copy, force=True)
    assert sorted(p.name for p in (build_copy / "identity_model-0.2.0").iterdir()) == before
    assert not [p for p in build_copy.iterdir() if p.name.startswith(".tmp-")]


def _template() -> dict:
    return tomllib.loads((MODELS / "plus3" / "0.1.0" / "invoice.toml").read_text())


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda i: i.update(bindleVersion="0.9"), "bindleVersion"),
        (lambda i: i["bindle"].update(version="1.0"), "SemVer"),
        (lambda i: i.update(extra=1), "unknown keys"),
        (lambda i: i["parcel"][0]["label"].update(media_type="x"), "unknown keys"),
        (lambda i: i["parcel"][0]["conditions"].update(memberOf=["nope"]), "unknown group"),
        (lambda i: i["group"].append({"name": "empty"}), "has no parcel"),
        (lambda i: i["group"][0].update(satisfiedBy="all"), "satisfiedBy"),
        (lambda i: i["parcel"][0]["label"].pop("mediaType"), "mediaType"),
    ],
)
def test_validate_invoice_finds_what_the_reference_server_refuses(edit, problem):
    invoice = copy.deepcopy(_template())
    assert bundles.validate_invoice(invoice, complete=False) == []
    edit(invoice)
    assert any(problem in p for p in bundles.validate_invoice(invoice, complete=False))


def test_template_is_not_a_complete_invoice():
    problems = bundles.validate_invoice(_template())
    assert any("sha256" in p for p in problems) and any("size" in p for p in problems)


def test_dumped_invoice_reads_back_identically(built_tree: Path):
    invoice = bundles.read_invoice(built_tree / "efficientnet-lite0-1.0.0")
    text = bundles.dump_invoice(invoice)
    assert tomllib.loads(text) == invoice
    assert "[[parcel]]" in text and "[[group]]" in text and "[parcel.label]" in text
