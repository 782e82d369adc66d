"""Chains are checked against the operations' types when they are built (mlcloud/sdk/chain.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mlcloud.errors import MLCloudError
from mlcloud.interfaces import (
    MODEL_STATUS,
    POSTPROCESS,
    PREDICT,
    PREPROCESS,
    InferenceOutput,
    ModelSource,
    Op,
    PostprocessRequest,
    PreprocessRequest,
    Tensor,
    ValueType,
)
from mlcloud.lattice import wire
from mlcloud.lattice.wire import Forward
from mlcloud.sdk import Chain, Context, Runtime


def stage(op: Op[Any, Any], fields: dict[str, Any], *, into: str, pick: str = "",
          carry: tuple[str, ...] = ()) -> Chain[Any]:
    def route(name: str, msg: dict[str, Any], wire_field: str, pick: str) -> Forward:
        return Forward(target=f"to.{name}", op=name, field=wire_field, msg=msg, pick=pick)

    return Chain.build(op, fields, into=into, pick=pick, route=route, carry=carry)


def test_a_well_typed_chain_becomes_the_nested_forward_of_the_wire() -> None:
    chain = stage(PREDICT, {"model": "m"}, into="tensor").followed_by(
        stage(POSTPROCESS, {"top": 3}, into="tensor", pick="tensor")).after(PREPROCESS)
    assert chain.reply == POSTPROCESS.reply
    assert chain.to_wire() == Forward(
        target="to.MlInference.Predict", op="MlInference.Predict", field="tensor", msg={"model": "m"},
        then=Forward(target="to.Postprocess.Matches", op="Postprocess.Matches", field="tensor",
                     msg={"top": 3}, pick="tensor"))


def test_fields_are_named_in_python_and_travel_by_their_wire_names() -> None:
    op = Op("Test.Image", PreprocessRequest, Tensor)
    chain = stage(op, {"value_type": ValueType.ValueU8, "dimensions": [1, 3, 2, 2]}, into="image")
    forward = chain.to_wire()
    assert forward.msg == {"valueType": ValueType.ValueU8, "dimensions": [1, 3, 2, 2]} and forward.field == "image"
    # The next stage decodes it into its request type, as an RPC server would send it on.
    sent = wire.decode_request(wire.encode_forwarded(forward, b"png", invocation_id="i", reply_to="r"))
    assert sent.payload(PreprocessRequest) == PreprocessRequest(
        image=b"png", dimensions=[1, 3, 2, 2], value_type=ValueType.ValueU8)


@pytest.mark.parametrize("fields, into, message", [
    ({"model": "m"}, "tensors", "has no field 'tensors' to take the previous result; it has model, tensor, index"),
    ({"modell": "m"}, "tensor", "'modell' is not a field to give"),
    ({"model": "m", "tensor": None}, "tensor", "'tensor' is not a field to give"),
    ({}, "tensor", "InferenceInput needs model"),
    ({"model": 7}, "tensor", "field 'model' of InferenceInput: Expected `str`, got `int`"),
    ({"model": "m", "index": "first"}, "tensor", "field 'index' of InferenceInput: Expected `int`, got `str`"),
])
def test_a_stage_that_does_not_fit_its_request_type_is_refused_when_built(
    fields: dict[str, Any], into: str, message: str
) -> None:
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace("`", ".")):
        stage(PREDICT, fields, into=into)


def test_picking_a_field_the_previous_reply_does_not_have_is_refused() -> None:
    predict = stage(PREDICT, {"model": "m"}, into="tensor")
    with pytest.raises(TypeError, match="picks 'tensors' of MlInference.Predict's reply InferenceOutput, "
                                        "which has result, tensor"):
        predict.followed_by(stage(POSTPROCESS, {"top": 1}, into="tensor", pick="tensors"))


def test_picking_from_a_reply_that_is_no_struct_is_refused() -> None:
    with pytest.raises(TypeError, match=r"MlInference.Status's reply list\[.*ModelInfo\] is .*not a struct"):
        stage(PREDICT, {"model": "m"}, into="tensor", pick="tensor").after(MODEL_STATUS)


def test_a_reply_that_does_not_fit_the_next_field_is_refused() -> None:
    # Predict answers an InferenceOutput, not the Tensor postprocess takes: the pick is missing.
    predict = stage(PREDICT, {"model": "m"}, into="tensor")
    with pytest.raises(TypeError, match=r"MlInference.Predict's reply InferenceOutput does not fit "
                                        r"Postprocess.Matches's PostprocessRequest.tensor \(Tensor\)"):
        predict.followed_by(stage(POSTPROCESS, {"top": 1}, into="tensor"))
    with pytest.raises(TypeError, match="Preprocess.Convert's reply Tensor does not fit"):
        stage(PREDICT, {"tensor": Tensor(dimensions=[1], value_types=[ValueType.ValueU8])}, into="model").after(
            PREPROCESS)


def test_a_picked_field_must_fit_and_an_optional_one_fits_without_its_none() -> None:
    with pytest.raises(TypeError, match=r"Preprocess.Convert's reply Tensor.data \(bytes\) does not fit "
                                        r"MlInference.Predict's InferenceInput.tensor \(Tensor\)"):
        stage(PREDICT, {"model": "m"}, into="tensor", pick="data").after(PREPROCESS)
    # InferenceOutput.tensor is ``Tensor | None``: a stage whose result has none fails at run time.
    chain = stage(POSTPROCESS, {}, into="tensor", pick="tensor").after(PREDICT)
    assert chain.to_wire().pick == "tensor"
    with pytest.raises(MLCloudError, match="needs the 'tensor' of the previous stage's result, which has none"):
        wire.encode_forwarded(chain.to_wire(), InferenceOutput(tensor=None), invocation_id="i", reply_to="r")


def test_a_carried_field_goes_on_beside_the_picked_one_when_it_is_set() -> None:
    chain = stage(POSTPROCESS, {"top": 1}, into="tensor", pick="tensor", carry=("source",)).after(PREDICT)
    tensor = Tensor(dimensions=[1], value_types=[ValueType.ValueF32], data=bytes(4))
    source = ModelSource(bindle_id="m/1.0.0", sha256="ab" * 32)
    for given in (source, None):
        sent = wire.decode_request(wire.encode_forwarded(
            chain.to_wire(), InferenceOutput(tensor=tensor, source=given), invocation_id="i", reply_to="r"))
        assert sent.payload(PostprocessRequest) == PostprocessRequest(tensor=tensor, top=1, source=given)


def test_a_carried_field_must_be_in_both_the_reply_and_the_next_request() -> None:
    with pytest.raises(TypeError, match="cannot take 'result' carried over"):
        stage(POSTPROCESS, {}, into="tensor", pick="tensor", carry=("result",))
    with pytest.raises(TypeError, match="carries 'source' over from Preprocess.Convert's reply Tensor"):
        stage(POSTPROCESS, {}, into="tensor", carry=("source",)).after(PREPROCESS)


async def test_a_call_is_checked_before_it_leaves() -> None:
    # Both mistakes are found before the runtime is asked for anything (it has nothing here).
    ctx = Context(cast(Runtime, object()), invocation_id="i", caller="test")
    with pytest.raises(TypeError, match="MlInference.Predict takes a InferenceInput, not a dict"):
        await ctx.call("wasmcloud:mlinference", PREDICT, {"model": "m"})  # type: ignore[misc]  # the mistake mypy finds too
    top_k = stage(POSTPROCESS, {"top": 1}, into="tensor", pick="tensor")  # fits after Predict only
    with pytest.raises(TypeError, match="picks 'tensor' of Preprocess.Convert's reply Tensor, which has dimensions"):
        await ctx.call_actor("preprocess", PREPROCESS, PreprocessRequest(image=b""), then=top_k)
