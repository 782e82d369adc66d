"""``mlcloud.deploy`` of XGBoost, LightGBM and real TF1 graphs, against the real stack.

Each converter is an extra (``mlcloud[xgboost]``, ``mlcloud[lightgbm]``, ``mlcloud[tensorflow]``);
``make venv`` installs them all, so these tests run in CI and skip only where an extra is absent.
The TF1 graph is a MobileNet-style classifier built, frozen and run by TensorFlow itself (random
weights, 64×64 input): the route must answer as TensorFlow does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from mlcloud.deployment import write_bundle
from mlcloud.modelbuild import convert
from mlcloud.modelbuild.errors import ConversionError, MissingExtra
from tests.inference.models import plus3_graphdef

X, Y = load_iris(return_X_y=True)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IMAGE = (64, 64, 3)
CLASSES = 10


def mobilenet_frozen_graph(path: Path, images: np.ndarray) -> np.ndarray:
    """Write a frozen MobileNet-v1-style classifier to ``path``; TensorFlow's answer for ``images``.

    conv 3×3/2 → BN → Relu6, two depthwise-separable blocks (depthwise 3×3 → BN → Relu6, pointwise
    1×1 → BN → Relu6), max and average pooling, a 1×1 conv with bias as the classifier, Reshape,
    Softmax: the ops of MobileNet v1/v2, frozen as TF1 did (variables → constants).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        def weight(name: str, shape: list[int], low: float = -0.5, high: float = 0.5) -> tf.Variable:
            return v1.get_variable(name, initializer=rng.uniform(low, high, shape).astype(np.float32))

        def batch_norm(h: tf.Tensor, name: str) -> tf.Tensor:
            c = int(h.shape[-1])
            return v1.nn.fused_batch_norm(h, weight(f"{name}/gamma", [c], 0.5, 1.5), weight(f"{name}/beta", [c]),
                                          mean=weight(f"{name}/mean", [c]),
                                          variance=weight(f"{name}/variance", [c], 0.5, 1.5),
                                          epsilon=1e-3, is_training=False, name=name)[0]

        def separable(h: tf.Tensor, name: str, out: int, stride: int) -> tf.Tensor:
            c = int(h.shape[-1])
            h = tf.nn.depthwise_conv2d(h, weight(f"{name}/depthwise", [3, 3, c, 1]), [1, stride, stride, 1], "SAME")
            h = tf.nn.relu6(batch_norm(h, f"{name}/depthwise_bn"))
            h = tf.nn.conv2d(h, weight(f"{name}/pointwise", [1, 1, c, out]), 1, "SAME")
            return tf.nn.relu6(batch_norm(h, f"{name}/pointwise_bn"))

        x = v1.placeholder(tf.float32, [None, *IMAGE], name="input")
        h = tf.nn.relu6(batch_norm(tf.nn.conv2d(x, weight("conv0", [3, 3, 3, 8]), 2, "SAME"), "conv0_bn"))
        h = separable(h, "block1", 16, 1)
        h = separable(h, "block2", 32, 2)
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.nn.avg_pool2d(h, 8, 1, "VALID")
        h = tf.nn.bias_add(tf.nn.conv2d(h, weight("logits", [1, 1, 32, CLASSES]), 1, "SAME"),
                           weight("logits/bias", [CLASSES]))
        probabilities = tf.nn.softmax(tf.reshape(h, [-1, CLASSES]), name="output")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["output"])
            expected: np.ndarray = session.run(probabilities, {x: images})
    assert {"Conv2D", "DepthwiseConv2dNative", "FusedBatchNormV3", "Relu6", "MaxPool", "AvgPool",
            "Softmax"} <= {node.op for node in frozen.node}
    path.write_bytes(frozen.SerializeToString())
    return expected


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).random((3, *IMAGE), dtype=np.float32)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_an_xgboost_classifier_answers_predict_and_proba_as_the_model_does(stack):
    pytest.importorskip("onnxmltools", reason="the xgboost extra is not installed")
    xgboost = pytest.importorskip("xgboost", reason="the xgboost extra is not installed")
    import pandas as pd

    frame = pd.DataFrame(X, columns=FEATURES)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(frame, Y)
    deployed = await stack.deploy(model, "xgb-iris", sample=frame[:5])
    assert deployed.bindle_id == "xgb-iris/1.0.0" and deployed.curl.startswith(f"curl -s {deployed.url}/predict ")
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        labels = await client.post("/xgb-iris/predict", json={"instances": frame.to_dict(orient="records")})
        assert labels.status_code == 200 and labels.headers["x-model"] == "xgb-iris/1.0.0"
        assert labels.json() == {"predictions": model.predict(frame).tolist()}
        proba = await client.post("/xgb-iris/predict?proba=1", json={"instances": X.tolist()})
        np.testing.assert_allclose(proba.json()["predictions"], model.predict_proba(frame), rtol=1e-5, atol=1e-6)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_a_saved_lightgbm_model_file_deploys_and_answers_as_the_booster_does(stack, tmp_path):
    """A file as `mlcloud deploy FILE` passes it (test_deployment.py runs that verb)."""
    pytest.importorskip("onnxmltools", reason="the lightgbm extra is not installed")
    lightgbm = pytest.importorskip("lightgbm", reason="the lightgbm extra is not installed")

    model = lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1).fit(X[:, :3], X[:, 3])
    model.booster_.save_model(tmp_path / "petal-width.txt")
    deployed = await stack.deploy(tmp_path / "petal-width.txt", "lgb-petal")
    assert deployed.bindle_id == "lgb-petal/1.0.0"
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        reply = await client.post("/lgb-petal/predict", json={"instances": X[:, :3].tolist()})
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.ravel(reply.json()["predictions"]), model.predict(X[:, :3]),
                                   rtol=1e-5, atol=1e-5)


def test_a_lightgbm_classifier_records_classes_features_and_its_converters(tmp_path):
    pytest.importorskip("onnxmltools", reason="the lightgbm extra is not installed")
    lightgbm = pytest.importorskip("lightgbm", reason="the lightgbm extra is not installed")
    import pandas as pd

    frame = pd.DataFrame(X, columns=FEATURES)
    converted = convert.to_onnx(lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame, Y), sample=frame)
    metadata = json.loads((write_bundle(converted, "lgb", "1.0.0", tmp_path) / "metadata.json").read_text())
    assert (metadata["framework"], metadata["classes"], metadata["feature_names"]) == ("lightgbm", [0, 1, 2], FEATURES)
    assert metadata["outputs"] == [{"name": "label", "datatype": "S64", "shape": [-1]},
                                   {"name": "probabilities", "datatype": "F32", "shape": [-1, 3]}]
    assert set(metadata["converters"]) == {"onnxmltools", "lightgbm", "mlcloud"}


def test_a_pipeline_ending_in_an_xgboost_classifier_converts_and_answers_as_the_pipeline():
    pytest.importorskip("onnxmltools", reason="the xgboost extra is not installed")
    xgboost = pytest.importorskip("xgboost", reason="the xgboost extra is not installed")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=10)).fit(X, Y)
    # Refused unless labels and probabilities agree. The sample is float32, as ONNX computes: in
    # float64 the scaler moves two iris rows to the other side of a split (probabilities 0.008 apart).
    converted = convert.to_onnx(pipeline, sample=X.astype(np.float32))
    assert (converted.framework, converted.classes) == ("sklearn", [0, 1, 2])
    assert [o.name for o in converted.model.graph.output] == ["label", "probabilities"]
    assert {"skl2onnx", "onnxmltools", "xgboost"} <= set(converted.converters)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.slow
async def test_a_frozen_tf1_mobilenet_is_converted_by_tf2onnx_and_answers_as_tensorflow(stack, images, tmp_path):
    pytest.importorskip("tf2onnx", reason="the tensorflow extra is not installed")
    graph = tmp_path / "mobilenet.pb"
    expected = await asyncio.to_thread(mobilenet_frozen_graph, graph, images)
    deployed = await stack.deploy(graph, "mobilenet", sample=images[:1])
    assert deployed.bindle_id == "mobilenet/1.0.0" and "/v2/models/mobilenet/infer" in deployed.curl
    body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}]}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        reply = await client.post("/v2/models/mobilenet/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-model"] == "mobilenet/1.0.0"
        [output] = reply.json()["outputs"]
    assert (output["name"], output["shape"]) == ("output", [len(images), CLASSES])
    np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), expected, atol=1e-4)

    # The bindle keeps the .pb beside the ONNX, and the ONNX's metadata names the .pb it came from.
    directory = write_bundle(convert.to_onnx(graph), "mobilenet", "1.0.0", tmp_path / "bundle")
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["source"] == {"name": "mobilenet.pb", "sha256": hashlib.sha256(graph.read_bytes()).hexdigest()}
    assert set(metadata["converters"]) == {"tf2onnx", "tensorflow", "mlcloud"}
    invoice = tomllib.loads((directory / "invoice.toml").read_text())
    assert {p["label"]["name"] for p in invoice["parcel"]} == {"model.onnx", "metadata.json", "mobilenet.pb"}


def test_a_graph_the_built_in_converter_covers_needs_no_tensorflow(tmp_path):
    converted = convert.to_onnx(plus3_graphdef(tmp_path / "plus3.pb", shape=[1, 4]))
    assert set(converted.converters) == {"tensorboard", "mlcloud"}
    assert [v.name for v in converted.model.graph.input] == ["input"]


def test_a_graph_the_built_in_converter_cannot_take_without_tf2onnx_names_the_op_and_the_pip_command(
        tmp_path, monkeypatch):
    monkeypatch.setitem(convert.EXTRAS, "tensorflow", ("tf2onnx", "mlcloud-no-such-package"))
    graph = plus3_graphdef(tmp_path / "conv.pb", extra_op="Conv2D")
    with pytest.raises(MissingExtra, match=r"'Conv2D'.*tf2onnx can: pip install \"mlcloud\[tensorflow\]\""):
        convert.to_onnx(graph)


def test_a_file_that_is_no_saved_xgboost_model_is_refused_naming_it(tmp_path):
    pytest.importorskip("xgboost", reason="the xgboost extra is not installed")
    (tmp_path / "settings.json").write_text('{"not": "a model"}')
    with pytest.raises(ConversionError, match=r"settings.json: xgboost cannot read it as a model"):
        convert.to_onnx(tmp_path / "settings.json")
