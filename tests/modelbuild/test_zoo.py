"""Importing model-zoo files: size and sha256 checked, shapes read from the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlcloud.modelbuild import bundles, zoo
from mlcloud.modelbuild.errors import ChecksumMismatch, ModelBuildError

from .conftest import MODELS


def test_zoo_records_the_model_zoo_files():
    entries = {e.file: e for e in zoo.load_zoo(MODELS)}
    mnv2 = entries["mobilenetv2-7.onnx"]
    assert (mnv2.bindle, mnv2.size, mnv2.sha256_prefix, mnv2.sha256_suffix) == (
        "mobilenetv2-7/0.1.0", 13_963_115, "0e7c0aa4", "e092")
    sq = entries["squeezenetv1-1-7.onnx"]
    assert (sq.bindle, sq.size, sq.sha256_prefix, sq.sha256_suffix) == (
        "squeezenetv1-1-7/0.1.0", 4_956_208, "1eeff551", "4088")
    assert sq.tensor_dimensions_out == (1, 1000, 1, 1)
    for e in entries.values():
        assert (MODELS / e.name / e.version / "invoice.toml").is_file()


def test_wrong_size_is_refused(tmp_path: Path):
    fake = tmp_path / "mobilenetv2-7.onnx"
    fake.write_bytes(b"\0" * 1000)
    with pytest.raises(ChecksumMismatch, match="13,963,115"):
        zoo.import_file(fake, MODELS, tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_right_size_wrong_digest_is_refused(tmp_path: Path):
    fake = tmp_path / "renamed.onnx"  # found by size although renamed
    fake.write_bytes(b"\0" * 4_956_208)
    with pytest.raises(ChecksumMismatch, match="1eeff551"):
        zoo.import_file(fake, MODELS, tmp_path / "build")


def test_unknown_file_is_refused(tmp_path: Path):
    other = tmp_path / "resnet.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ModelBuildError, match="not a known model-zoo file"):
        zoo.import_file(other, MODELS, tmp_path / "build")


def _classifier(path: Path) -> Path:
    """A stand-in with the zoo file's interface (the real weights are not available here)."""
    w = numpy_helper.from_array(__import__("numpy").ones((1000, 3), "float32"), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["data"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "w"], ["scores"], transB=1)],
        "stand_in",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1000])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_import_stages_a_complete_bundle(tmp_path: Path, models_copy: Path):
    model = _classifier(tmp_path / "mobilenetv2-7.onnx")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    zoo_toml = models_copy / "zoo.toml"
    zoo_toml.write_text(
        zoo_toml.read_text()
        .replace("13963115", str(model.stat().st_size))
        .replace('"0e7c0aa4"', f'"{digest[:8]}"')
        .replace('"e092"', f'"{digest[-4:]}"')
    )
    out = tmp_path / "build"
    entry, result = zoo.import_file(model, models_copy, out)
    assert entry.bindle == "mobilenetv2-7/0.1.0"
    assert "input name 'data'" in result.notes
    directory = out / "mobilenetv2-7-0.1.0"
    invoice = bundles.read_invoice(directory)
    assert bundles.validate_invoice(invoice) == []
    assert {p["label"]["name"] for p in invoice["parcel"]} == {"mobilenetv2-7.onnx", "metadata.json", "synset.txt"}
    assert (directory / "mobilenetv2-7.onnx").read_bytes() == model.read_bytes()
    # Once imported, `models build` keeps it and has nothing to do.
    source = bundles.load_source(models_copy / "mobilenetv2-7" / "0.1.0")
    assert bundles.status(source, out).state is bundles.State.UP_TO_DATE
    results = dict((st.source.id, r) for st, r in bundles.build_all(models_copy, out, only=["mobilenetv2-7"]))
    assert results == {"mobilenetv2-7/0.1.0": None}
    # Importing the same file again is a no-op too.
    assert zoo.import_file(model, models_copy, out)[1] is None
