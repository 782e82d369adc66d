"""XGBoost and LightGBM models → ONNX with onnxmltools (the ``xgboost`` and ``lightgbm`` extras).

Accepted: the scikit-learn API's models (``XGBClassifier``, ``XGBRegressor``, ``LGBMClassifier``,
``LGBMRegressor``), a ``Booster`` of either library, or a saved model file (XGBoost's ``.json`` or
``.ubj``, LightGBM's ``.txt``, what ``save_model`` writes). An XGBoost booster is read back into
the scikit-learn API model its objective names, so it is checked against its own ``predict`` and
``predict_proba``; a LightGBM booster has no such model and answers through :class:`_Booster`.

A scikit-learn pipeline ending in one of these goes through skl2onnx, which
:func:`register_with_skl2onnx` teaches onnxmltools' converters.

Classifiers answer ``label`` and ``probabilities`` (no ZipMap), as scikit-learn ones converted by
:mod:`mlcloud.modelbuild.convert` do, so ``/{model}/predict?proba=1`` works the same; regressors
answer ``variable``, one column per row.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from mlcloud.modelbuild.convert import INPUT_NAME, Converted, _features, _require, check_answers
from mlcloud.modelbuild.errors import ConversionError

# LightGBM objectives (and aliases) whose models answer class probabilities.
_LIGHTGBM_CLASSIFIERS = {"binary", "multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"}
# The newest ai.onnx.ml opset skl2onnx accepts in a pipeline; onnxmltools' tree converters would write 5.
PIPELINE_ML_OPSET = 3


def convert_boosted(kind: str, model: Any, sample: Any) -> Converted:
    """``model`` (an XGBoost one for ``kind`` "xgboost", else a LightGBM one) as ONNX."""
    converters = _require(kind)
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = _xgboost(model) if kind == "xgboost" else _lightgbm(model)
    count, names = _features(model, sample)
    initial_types = [(INPUT_NAME, FloatTensorType([None, count]))]
    try:
        if kind == "xgboost":
            proto = onnxmltools.convert_xgboost(_unnamed(model), initial_types=initial_types)
        else:
            booster = model.booster if isinstance(model, _Booster) else model
            proto = onnxmltools.convert_lightgbm(booster, initial_types=initial_types, zipmap=False)
    except Exception as exc:  # onnxmltools raises bare RuntimeError/NotImplementedError/ValueError
        raise ConversionError(f"onnxmltools cannot convert {type(model).__name__}: {exc}") from exc
    for output in proto.graph.output:
        # One answer per row: onnxmltools declares LightGBM's label as shape [1].
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    classes = getattr(model, "classes_", None)
    converted = Converted(proto, kind, converters, names,
                          np.asarray(classes).tolist() if classes is not None else None)
    if sample is not None:
        check_answers(model, converted, sample)
    return converted


def register_with_skl2onnx(kind: str) -> dict[str, str]:
    """Let skl2onnx convert the ``kind`` library's scikit-learn API models inside a pipeline (with
    ``target_opset={"ai.onnx.ml": PIPELINE_ML_OPSET}``); the versions of the converters it needs."""
    converters = _require(kind)
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    if kind == "xgboost":
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as convert

        classifier, regressor = xgboost.XGBClassifier, xgboost.XGBRegressor
    else:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as convert

        classifier, regressor = lightgbm.LGBMClassifier, lightgbm.LGBMRegressor
    update_registered_converter(classifier, f"{kind}{classifier.__name__}", calculate_linear_classifier_output_shapes,
                                convert, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(regressor, f"{kind}{regressor.__name__}", calculate_linear_regressor_output_shapes,
                                convert)
    return converters


def _xgboost(model: Any) -> Any:
    """The scikit-learn API model of a file or Booster (by its objective); others as they are."""
    import xgboost

    if isinstance(model, (str, Path)):
        model = _read(xgboost.Booster, model)
    if not isinstance(model, xgboost.Booster):
        return model
    objective = json.loads(model.save_config())["learner"]["objective"]["name"]
    wrapper = xgboost.XGBClassifier() if objective.startswith(("binary:", "multi:")) else xgboost.XGBRegressor()
    wrapper.load_model(bytearray(model.save_raw("ubj")))
    return wrapper


def _unnamed(model: Any) -> Any:
    """A copy without feature names: onnxmltools reads only XGBoost's own ``f0, f1, …``."""
    if not model.get_booster().feature_names:
        return model
    unnamed = copy.deepcopy(model)
    unnamed.get_booster().feature_names = None
    return unnamed


def _lightgbm(model: Any) -> Any:
    import lightgbm

    if isinstance(model, (str, Path)):
        model = _read(lightgbm.Booster, model)
    return _Booster(model) if isinstance(model, lightgbm.Booster) else model


def _read(booster: Any, path: str | Path) -> Any:
    """``booster`` (the library's Booster class) read from its saved file ``path``."""
    try:
        return booster(model_file=str(path))
    except Exception as exc:  # XGBoostError, LightGBMError: each library's own, on a file it cannot read
        raise ConversionError(f"{path}: {booster.__module__.split('.')[0]} cannot read it as a model: {exc}") from exc


class _Booster:
    """A ``lightgbm.Booster`` answering as LGBMClassifier/LGBMRegressor do, for the checks."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.n_features_in_ = booster.num_feature()
        names = booster.feature_name()
        # LightGBM names unnamed columns Column_0, Column_1, …: those are no names a client knows.
        if names != [f"Column_{i}" for i in range(len(names))]:
            self.feature_names_in_ = names
        objective = str(booster.params.get("objective", "regression")).split(" ")[0]
        if objective in _LIGHTGBM_CLASSIFIERS:
            self.classes_ = list(range(max(2, booster.num_model_per_iteration())))

    def predict_proba(self, rows: Any) -> np.ndarray:
        answer = np.asarray(self.booster.predict(rows))
        return np.column_stack([1 - answer, answer]) if answer.ndim == 1 else answer

    def predict(self, rows: Any) -> np.ndarray:
        if hasattr(self, "classes_"):
            labels: np.ndarray = self.predict_proba(rows).argmax(axis=1)
            return labels
        return np.asarray(self.booster.predict(rows))
