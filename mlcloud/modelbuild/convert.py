"""Any model a notebook holds → one ONNX model plus the metadata a bindle carries about it.

:func:`to_onnx` accepts

* an ONNX file or ``onnx.ModelProto``;
* scikit-learn estimators and pipelines (``skl2onnx``);
* XGBoost and LightGBM models (``onnxmltools``): the scikit-learn API's classifiers and
  regressors, an ``xgboost.Booster`` or ``lightgbm.Booster``, or their saved files (XGBoost's
  ``.json``/``.ubj``, LightGBM's ``.txt``);
* a TF1 frozen GraphDef (``.pb``): converted by the provider's own small converter
  (:mod:`mlcloud.inference.engines.tf1`) when it knows every op the output needs, which needs no
  TensorFlow; else by ``tf2onnx`` (Conv2D, pooling, batch norm: real image models). Either way
  the conversion happens here, once, and the provider serves the ONNX result.

The converters are extras; a missing one is a :class:`MissingExtra` naming the pip command.

``sample`` (a few rows, e.g. ``X[:5]``) fixes the input's feature count and, for converted
models, is run through both the original and the ONNX model: a converted model that answers
differently is refused (:class:`ConversionError`) before anything is pushed. A TF1 graph converted by tf2onnx is
checked against TensorFlow's own answer. Classifiers are converted without ZipMap, so their
outputs are tensors: ``label`` (output 0, what a Predict answers) and ``probabilities``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from mlcloud.modelbuild.errors import ConversionError, MissingExtra

INPUT_NAME = "input"
# How close the converted model's numbers must be to the original's (ONNX runs in float32).
RTOL, ATOL = 1e-3, 1e-4

# extra → the packages it installs; what a MissingExtra tells the user to pip install.
EXTRAS = {
    "sklearn": ("skl2onnx", "scikit-learn"),
    "xgboost": ("onnxmltools", "xgboost"),
    "lightgbm": ("onnxmltools", "lightgbm"),
    "tf": ("tensorboard",),
    "tensorflow": ("tf2onnx", "tensorflow"),
}
# Saved model files by suffix, besides .onnx: which kind of model they hold.
FILE_KINDS = {".onnx": "onnx", ".pb": "tensorflow", ".json": "xgboost", ".ubj": "xgboost", ".txt": "lightgbm"}


@dataclass
class Converted:
    """An ONNX model and what the bindle's metadata says about it besides its tensors."""

    model: Any  # onnx.ModelProto
    framework: str  # onnx | tensorflow | sklearn | xgboost | lightgbm
    converters: dict[str, str] = field(default_factory=dict)  # package → version used
    feature_names: list[str] | None = None
    classes: list[Any] | None = None
    source: tuple[str, bytes] | None = None  # (file name, bytes) of the original, kept beside the ONNX


def pip_hint(extra: str) -> str:
    return f'pip install "mlcloud[{extra}]"  (or: pip install {" ".join(EXTRAS[extra])})'


def _require(extra: str) -> dict[str, str]:
    """The versions of the extra's packages, or a MissingExtra naming the pip command."""
    try:
        return {name: _version(name) for name in EXTRAS[extra]}
    except PackageNotFoundError as exc:
        raise MissingExtra(f"converting this model needs the {extra} extra ({exc.name} is missing): "
                           f"{pip_hint(extra)}") from None


def _version(name: str) -> str:
    """The installed version of ``name``, or of its CPU-only build (xgboost-cpu and tensorflow-cpu
    install the same module; the extras take those, which are a tenth of the size)."""
    try:
        return version(name)
    except PackageNotFoundError:
        try:
            return version(f"{name}-cpu")
        except PackageNotFoundError:
            raise PackageNotFoundError(name) from None


def to_onnx(model: Any, sample: Any = None) -> Converted:
    """``model`` as ONNX (see the module docstring for what is accepted)."""
    kind = _kind(model)
    if kind == "onnx":
        return _onnx(model, sample)
    if kind == "tensorflow":
        return _tf1(Path(model), sample)
    if kind in ("xgboost", "lightgbm"):
        from mlcloud.modelbuild.boosting import convert_boosted

        return convert_boosted(kind, model, sample)
    converted = _sklearn(model, sample)
    if sample is not None:
        check_answers(model, converted, sample)
    return converted


def _kind(model: Any) -> str:
    if isinstance(model, (str, Path)):
        kind = FILE_KINDS.get(Path(model).suffix.lower())
        if not Path(model).is_file():
            raise ConversionError(f"{model}: no such file")
        if kind is None:
            raise ConversionError(f"{model}: expected an .onnx file, a TF1 frozen graph (.pb), an XGBoost model "
                                  "(.json, .ubj) or a LightGBM model (.txt)")
        return kind
    module = type(model).__module__.split(".")[0]
    if module in ("onnx", "xgboost", "lightgbm"):
        return module
    if module == "sklearn" or hasattr(model, "fit") and hasattr(model, "predict"):
        return "sklearn"
    raise ConversionError(f"cannot deploy a {type(model).__module__}.{type(model).__name__}: expected an ONNX "
                          "file or ModelProto, a TF1 .pb, or a scikit-learn, XGBoost or LightGBM model")


def _features(model: Any, sample: Any) -> tuple[int, list[str] | None]:
    """The number of input features, and their names when the model or the sample knows them."""
    names = getattr(model, "feature_names_in_", None)
    if names is None and hasattr(sample, "columns"):
        names = sample.columns
    if sample is not None:
        count = int(np.asarray(sample).reshape(len(sample), -1).shape[1])
    elif getattr(model, "n_features_in_", None) is not None:
        count = int(model.n_features_in_)
    else:
        raise ConversionError("cannot tell the model's number of features: pass sample= (e.g. X[:5])")
    return count, [str(n) for n in names] if names is not None else None


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def _sklearn(model: Any, sample: Any) -> Converted:
    converters = _require("sklearn")
    from skl2onnx import get_latest_tested_opset_version, to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    count, names = _features(model, sample)
    final = _final_estimator(model)
    options = {id(final): {"zipmap": False}} if hasattr(final, "classes_") else None
    target_opset = None
    library = type(final).__module__.split(".")[0]
    if library in ("xgboost", "lightgbm"):  # a pipeline ending in a booster
        from mlcloud.modelbuild.boosting import PIPELINE_ML_OPSET, register_with_skl2onnx

        converters = {**converters, **register_with_skl2onnx(library)}
        target_opset = {"": get_latest_tested_opset_version(), "ai.onnx.ml": PIPELINE_ML_OPSET}
    try:
        proto = skl_to_onnx(model, initial_types=[(INPUT_NAME, FloatTensorType([None, count]))], options=options,
                            target_opset=target_opset)
    except Exception as exc:  # skl2onnx raises bare RuntimeError/NotImplementedError for unsupported models
        raise ConversionError(f"skl2onnx cannot convert {type(model).__name__}: {exc}") from exc
    classes = getattr(final, "classes_", None)
    return Converted(proto, "sklearn", converters, names, classes.tolist() if classes is not None else None)


def _onnx(model: Any, sample: Any) -> Converted:
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"not a valid ONNX model: {exc}") from exc
    if sample is not None:
        _run(proto, sample)  # a sample the model cannot take is refused here, not at the first request
    return Converted(proto, "onnx", {"onnx": version("onnx")})


def _tf1(path: Path, sample: Any) -> Converted:
    """A frozen GraphDef through the provider's own converter, else tf2onnx; the .pb is kept beside the ONNX."""
    from mlcloud.errors import TensorflowError
    from mlcloud.inference.engines.tf1 import UnsupportedOp, graphdef_to_onnx
    from mlcloud.inference.metadata import ModelMetadata

    data = path.read_bytes()
    dims = [-1, *np.asarray(sample).shape[1:]] if sample is not None else None
    metadata = ModelMetadata.parse({"model_name": path.stem, "graph_encoding": "tensorflow",
                                    **({"tensor_type": "F32", "tensor_dimensions_in": dims} if dims else {})})
    converters = {**_require("tf"), "mlcloud": version("mlcloud")}
    try:
        proto = graphdef_to_onnx(data, metadata)
    except UnsupportedOp as exc:
        proto, converters = _tf2onnx(path, data, metadata, exc.message, sample)
    except TensorflowError as exc:
        raise ConversionError(f"{path}: {exc.message}") from exc
    if sample is not None:
        _run(proto, sample)
    return Converted(proto, "tensorflow", converters, source=(path.name, data))


def _tf2onnx(path: Path, data: bytes, metadata: Any, why: str, sample: Any) -> tuple[Any, dict[str, str]]:
    """The graph converted by tf2onnx, with its tensors named as the built-in converter names them
    (node names, without TensorFlow's ``:0``), so a request fits either; checked against TensorFlow
    on the sample."""
    try:
        converters = _require("tensorflow")
    except MissingExtra:
        raise MissingExtra(f"{path}: the built-in TF1 converter cannot convert this graph ({why}); tf2onnx can: "
                           f"{pip_hint('tensorflow')}") from None
    import tensorflow as tf
    import tf2onnx

    from mlcloud.inference.engines.tf1 import OPSET, graph_io

    inputs, outputs = graph_io(data, metadata)
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(data)
    try:
        proto, _ = tf2onnx.convert.from_graph_def(graph, input_names=[f"{n}:0" for n in inputs],
                                                  output_names=[f"{n}:0" for n in outputs], opset=OPSET)
    except Exception as exc:  # tf2onnx raises whatever its handlers or TensorFlow raise
        raise ConversionError(f"{path}: tf2onnx cannot convert it: {exc}") from exc
    renames = {f"{n}:0": n for n in [*inputs, *outputs]}
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    if sample is not None:
        tf_graph = tf.Graph()
        with tf_graph.as_default():
            tf.compat.v1.import_graph_def(graph, name="")
        with tf.compat.v1.Session(graph=tf_graph) as session:
            expected = session.run(f"{outputs[0]}:0", {f"{inputs[0]}:0": np.asarray(sample, dtype=np.float32)})
        got = _run(proto, sample)[0]
        if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            raise ConversionError(f"{path}: tf2onnx's model answers the sample unlike TensorFlow "
                                  f"(largest difference {float(np.abs(got - expected).max()):.3g})")
    return proto, converters


def _run(proto: Any, sample: Any) -> list[np.ndarray]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs: list[np.ndarray] = session.run(None, {name: np.asarray(sample, dtype=np.float32)})
    except Exception as exc:  # onnxruntime's errors have no common base worth naming
        raise ConversionError(f"the ONNX model does not run on the sample: {exc}") from exc
    return outputs


def check_answers(model: Any, converted: Converted, sample: Any) -> None:
    """The ONNX model must answer ``sample`` as ``model`` does: the same labels, close numbers."""
    outputs = _run(converted.model, sample)
    expected = np.asarray(model.predict(sample))
    got = outputs[0].reshape(expected.shape)
    same = (np.array_equal(got, expected) if converted.classes is not None
            else np.allclose(got, expected, rtol=RTOL, atol=ATOL))
    if not same:
        raise ConversionError(f"the converted model answers {got.tolist()[:5]} where the original answers "
                              f"{expected.tolist()[:5]} on the sample")
    if converted.classes is not None and hasattr(model, "predict_proba") and len(outputs) > 1:
        proba = np.asarray(model.predict_proba(sample))
        if not np.allclose(outputs[1], proba, rtol=RTOL, atol=ATOL):
            raise ConversionError("the converted model's probabilities differ from predict_proba's on the sample")
