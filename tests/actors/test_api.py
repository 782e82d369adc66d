"""The api actor's routes and errors, run against a fake runtime: no NATS, milliseconds a test.

:class:`FakeRuntime` implements the SDK's ``Runtime`` protocol. Every message still goes through
the real wire format (msgpack, camelCase names, ``wire.encode_forwarded`` for a chain's stages)
and is decoded into the request type of the operation it names, so a chain the api builds with a
wrong field would fail here as it would on the lattice. The stages answer as the real
components do, in miniature: preprocess gives a tensor of the asked dimensions, Predict echoes
it, postprocess gives ``top`` matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import msgspec
import pytest

from mlcloud.errors import MLCloudError, ModelLoading
from mlcloud.interfaces import (
    LABELS,
    MODEL_STATUS,
    POSTPROCESS,
    PREDICT,
    PREPROCESS,
    HttpRequest,
    HttpResponse,
    InferenceInput,
    InferenceOutput,
    Match,
    ModelInfo,
    ModelSource,
    ModelState,
    ModelStatusRequest,
    Op,
    PreprocessRequest,
    Ranking,
    Tensor,
    TensorInfo,
    ValueType,
)
from mlcloud.lattice import wire
from mlcloud.lattice.control import LinkDefinition
from mlcloud.lattice.wire import Forward
from mlcloud.sdk import Context, Runtime
from mlcloud.settings import Settings

from .conftest import PROJECT, load_by_path

OPS: dict[str, Op[Any, Any]] = {op.name: op for op in (MODEL_STATUS, PREDICT, PREPROCESS, POSTPROCESS, LABELS)}
IMAGE = {"content-type": "image/jpeg"}
IMAGE_INPUT = TensorInfo(name="input", shape=[-1, 3, 8, 8], datatype="ValueF32")


def over_the_wire(value: Any, type_: Any) -> Any:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=type_)


@dataclass
class Call:
    target: str
    op: str
    message: Any
    forward: Forward | None = None


@dataclass
class FakeRuntime:
    """The lattice as the api actor sees it: a linked mlinference provider and two actors."""

    models: list[ModelInfo] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, MLCloudError] = field(default_factory=dict)  # by operation name
    answered_by: ModelSource | None = None  # the source Predict names; by default the route's bindle
    settings: Settings = field(default_factory=Settings)
    log: logging.Logger = logging.getLogger("test.api")

    def link_for(self, actor_id: str) -> LinkDefinition | None:
        return None

    def own_link(self, contract: str, link_name: str) -> LinkDefinition | None:
        return None  # no split: experiments are tested against the real stack (tests/e2e/test_split.py)

    def jetstream(self) -> Any:
        raise AssertionError("the api actor needs JetStream only for a split route")

    async def publish_event(self, name: str, /, **data: Any) -> None:
        raise AssertionError("the api actor publishes no events")

    async def call_provider(
        self, contract: str, op: str, message: Any, result_type: Any, *,
        link_name: str, timeout: float | None, invocation_id: str | None, idempotent: bool = False,
    ) -> Any:
        self.calls.append(Call(contract, op, message))
        return over_the_wire(self.serve(op, over_the_wire(message, OPS[op].request)), result_type)

    async def call_actor(
        self, actor: str, op: str, message: Any, result_type: Any, *,
        timeout: float | None, invocation_id: str | None, forward: Forward | None = None,
        idempotent: bool = False,
    ) -> Any:
        self.calls.append(Call(actor, op, message, forward))
        result = self.serve(op, over_the_wire(message, OPS[op].request))
        while forward is not None:  # each stage as the RPC server sends it on
            invocation = wire.decode_request(wire.encode_forwarded(forward, result, invocation_id="i", reply_to="r"))
            result = self.serve(invocation.op, invocation.payload(OPS[invocation.op].request))
            forward = invocation.forward
        return over_the_wire(result, result_type)

    def provider_forward(
        self, contract: str, op: str, msg: dict[str, Any], *, field: str, pick: str, link_name: str
    ) -> Forward:
        return Forward(target=f"provider:{contract}", op=op, field=field, msg=msg, pick=pick)

    def actor_forward(self, actor: str, op: str, msg: dict[str, Any], *, field: str, pick: str) -> Forward:
        return Forward(target=f"actor:{actor}", op=op, field=field, msg=msg, pick=pick)

    def serve(self, op: str, request: Any) -> Any:
        if op in self.failures:
            raise self.failures[op]
        handlers: dict[str, Callable[[Any], Any]] = {
            MODEL_STATUS.name: self._status,
            PREPROCESS.name: _preprocess,
            PREDICT.name: lambda r: InferenceOutput(tensor=r.tensor, source=self._source(r.model)),
            POSTPROCESS.name: lambda r: Ranking(
                matches=[Match(label=f"label {i}", probability=0.5 / (i + 1)) for i in range(r.top)], source=r.source),
            LABELS.name: lambda r: [f"label {i}" for i in range(1000)],
        }
        return handlers[op](request)

    def _source(self, route: str) -> ModelSource:
        if self.answered_by is not None:
            return self.answered_by
        bindle_id = next(m.bindle_id for m in self.models if m.name == route)
        return ModelSource(bindle_id=bindle_id, sha256=sha_of(bindle_id))

    def _status(self, request: ModelStatusRequest) -> list[ModelInfo]:
        return [m for m in self.models if not request.model or m.name == request.model]


def sha_of(bindle_id: str) -> str:
    return hashlib.sha256(bindle_id.encode()).hexdigest()


def _preprocess(request: PreprocessRequest) -> Tensor:
    size = request.value_type.dtype.itemsize
    count = 1
    for d in request.dimensions:
        count *= d
    return Tensor(dimensions=request.dimensions, value_types=[request.value_type], data=bytes(count * size))


def model(name: str = "m", state: ModelState = ModelState.READY, **fields: Any) -> ModelInfo:
    defaults: dict[str, Any] = {
        "inputs": [IMAGE_INPUT], "outputs": [TensorInfo(name="out", shape=[-1, 10], datatype="ValueF32")]}
    return ModelInfo(name=name, bindle_id=f"{name}/1.0.0", engine="onnxruntime", state=state,
                     **{**defaults, **fields})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(PROJECT / "actors" / "api"))  # its own modules, as the runner does
    module = load_by_path("_mlcloud_actor_api", PROJECT / "actors" / "api" / "api.py")
    monkeypatch.setattr(module, "catalog", module.Catalog())  # no status cached between tests
    monkeypatch.setattr(module, "experiment", module.Experiments(module.catalog))
    return module


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime(models=[model()])


def test_the_fake_runtime_is_a_runtime() -> None:
    fake: Runtime = FakeRuntime()  # checked by mypy; at run time, that it has every member
    assert all(callable(getattr(fake, name)) for name in
               ("link_for", "publish_event", "call_provider", "call_actor", "provider_forward", "actor_forward"))


async def send(api: ModuleType, runtime: FakeRuntime, method: str, path: str, *, body: bytes = b"",
               query: str = "", header: dict[str, str] | None = None) -> HttpResponse:
    ctx = Context(runtime, invocation_id="t", caller="httpserver")
    request = HttpRequest(method=method, path=path, query_string=query, header=header or {}, body=body)
    response: HttpResponse = await api.handle_request(ctx, request)
    return response


def body(response: HttpResponse) -> Any:
    assert response.header["content-type"] == "application/json"
    return json.loads(response.body)


def error_kind(response: HttpResponse) -> str:
    kind: str = body(response)["error"]["kind"]
    return kind


def oip_error(response: HttpResponse) -> str:
    """The Open Inference Protocol's error body: a string, not mlcloud's object."""
    message = body(response)["error"]
    assert isinstance(message, str)
    return message


def headers(response: HttpResponse) -> dict[str, str]:
    return {k.lower(): v for k, v in response.header.items()}


# -- routes and methods ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/m/matches/extra", "/m/unknown", "/models/m/x"])
async def test_a_path_that_names_no_route_is_404(api: ModuleType, runtime: FakeRuntime, path: str) -> None:
    response = await send(api, runtime, "PUT", path)
    assert response.status_code == 404 and error_kind(response) in ("NotFound", "ContextNotFound")


@pytest.mark.parametrize("path", ["/v2/nothing", "/v2/health", "/v2/models", "/v2/models/m/x",
                                  "/v2/models/m/versions/1.0.0/x", "/v2/repository/models/m"])
async def test_a_protocol_path_that_names_no_route_is_404_with_a_string_error(
    api: ModuleType, runtime: FakeRuntime, path: str
) -> None:
    response = await send(api, runtime, "POST" if "repository" in path else "GET", path)
    assert response.status_code == 404 and "no route" in oip_error(response)


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/m/matches", "PUT, POST"),
    ("DELETE", "/m/preprocess", "PUT, POST"),
    ("GET", "/m", "POST, PUT"),
    ("POST", "/models", "GET, HEAD"),
    ("POST", "/v2/models/m", "GET, HEAD"),
    ("GET", "/v2/models/m/versions/1.0.0/infer", "POST"),
    ("GET", "/v2/repository/index", "POST"),
    ("PUT", "/v2/health/ready", "GET, HEAD"),
])
async def test_a_wrong_method_is_405_naming_the_allowed_ones(
    api: ModuleType, runtime: FakeRuntime, method: str, path: str, allow: str
) -> None:
    response = await send(api, runtime, method, path)
    assert response.status_code == 405
    assert "not allowed" in (oip_error(response) if path.startswith("/v2") else error_kind(response) + " not allowed")
    assert headers(response)["allow"] == allow
    assert runtime.calls == []  # refused before anything is asked of the lattice


# -- tensors ----------------------------------------------------------------------------------

async def test_a_json_tensor_is_predicted_and_answered_as_json(api: ModuleType, runtime: FakeRuntime) -> None:
    tensor = {"dimensions": [1, 2], "valueTypes": ["ValueU8"], "flags": 0, "data": [7, 9]}
    response = await send(api, runtime, "POST", "/m", body=json.dumps(tensor).encode())
    assert response.status_code == 200 and headers(response)["x-model"] == "m/1.0.0"
    assert body(response) == {"result": "Success", "tensor": tensor}
    predict = runtime.calls[-1]
    assert predict.op == PREDICT.name and isinstance(predict.message, InferenceInput)
    assert predict.message.model == "m" and predict.message.tensor.data == b"\x07\x09"


@pytest.mark.parametrize("payload, kind", [
    (b"", "RequestError"),
    (b"{not json", "RequestError"),
    (b"\xff\xfe", "RequestError"),
    (json.dumps({"dimensions": "wide"}).encode(), "CorruptInputTensor"),
    (json.dumps([1, 2, 3]).encode(), "CorruptInputTensor"),
])
async def test_a_body_that_is_no_tensor_is_400(
    api: ModuleType, runtime: FakeRuntime, payload: bytes, kind: str
) -> None:
    response = await send(api, runtime, "POST", "/m", body=payload)
    assert response.status_code == 400 and error_kind(response) == kind
    assert not any(call.op == PREDICT.name for call in runtime.calls)


# -- images -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded"])
async def test_an_image_route_refuses_text_as_415(api: ModuleType, runtime: FakeRuntime, content_type: str) -> None:
    response = await send(api, runtime, "PUT", "/m/matches", body=b"{}", header={"content-type": content_type})
    assert response.status_code == 415 and error_kind(response) == "UnsupportedMediaType"
    assert runtime.calls == []


async def test_matches_is_one_chain_preprocess_predict_postprocess(api: ModuleType, runtime: FakeRuntime) -> None:
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", query="top=3", header=IMAGE)
    assert response.status_code == 200 and headers(response)["x-model"] == "m/1.0.0"
    assert body(response) == [{"label": f"label {i}", "probability": 0.5 / (i + 1)} for i in range(3)]
    status, chain = runtime.calls
    assert status.op == MODEL_STATUS.name
    # One call leaves the api: to preprocess, with the stages after it carried along.
    assert (chain.target, chain.op) == ("preprocess", PREPROCESS.name)
    assert chain.message == PreprocessRequest(image=b"jpeg", dimensions=[1, 3, 8, 8], value_type=ValueType.ValueF32,
                                              model="m")
    predict = chain.forward
    assert predict is not None and predict.then is not None and predict.then.then is None
    assert (predict.target, predict.op, predict.field, predict.pick, predict.msg) == (
        "provider:wasmcloud:mlinference", PREDICT.name, "tensor", "", {"model": "m"})
    top_k = predict.then
    assert (top_k.target, top_k.op, top_k.field, top_k.pick, top_k.msg, top_k.carry) == (
        "actor:postprocess", POSTPROCESS.name, "tensor", "tensor", {"top": 3, "model": "m"}, ("source",))


@pytest.mark.parametrize("method, path, payload, header", [
    ("PUT", "/m/matches", b"jpeg", IMAGE),
    ("PUT", "/m/preprocess", b"jpeg", IMAGE),
    ("POST", "/m", json.dumps({"dimensions": [1], "valueTypes": ["ValueU8"], "data": [1]}).encode(), {}),
    ("POST", "/v2/models/m/infer", json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]}).encode(), {}),
])
async def test_an_answer_names_the_model_the_provider_says_made_it_not_the_catalogs(
    api: ModuleType, runtime: FakeRuntime, method: str, path: str, payload: bytes, header: dict[str, str]
) -> None:
    # The catalog (cached for a second) still says m/1.0.0: the swap to 2.0.0 happened since.
    runtime.answered_by = ModelSource(bindle_id="m/2.0.0", sha256="ab" * 32)
    response = await send(api, runtime, method, path, body=payload, header=header)
    assert response.status_code == 200, response.body
    assert (headers(response)["x-model"], headers(response)["x-model-sha256"]) == ("m/2.0.0", "ab" * 32)


def test_answers_of_two_models_name_both_in_the_same_order(api: ModuleType) -> None:
    old, new = ModelSource(bindle_id="m/1.0.0", sha256="a" * 64), ModelSource(bindle_id="m/2.0.0", sha256="b" * 64)
    assert api.source_header(old, None, new, old) == {
        "x-model": "m/1.0.0, m/2.0.0", "x-model-sha256": f"{'a' * 64}, {'b' * 64}"}
    assert api.source_header(None) == {}


async def test_preprocess_route_answers_predicts_output(api: ModuleType, runtime: FakeRuntime) -> None:
    response = await send(api, runtime, "POST", "/m/preprocess", body=b"png", header=IMAGE)
    assert response.status_code == 200
    answer = body(response)
    assert answer["result"] == "Success" and answer["tensor"]["dimensions"] == [1, 3, 8, 8]
    chain = runtime.calls[-1].forward
    assert chain is not None and chain.op == PREDICT.name and chain.then is None


async def test_a_model_that_takes_pixels_is_sent_8_bit_pixels(api: ModuleType, runtime: FakeRuntime) -> None:
    pixels = msgspec.structs.replace(IMAGE_INPUT, image_datatype=ValueType.ValueU8)
    runtime.models = [model(inputs=[pixels])]
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 200 and len(body(response)) == 5  # top defaults to 5
    assert runtime.calls[-1].message.value_type is ValueType.ValueU8


async def test_a_model_whose_input_no_image_becomes_is_refused(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(inputs=[TensorInfo(name="ids", shape=[1, 4], datatype="<U8")])]
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 503 and error_kind(response) == "InvalidModel"
    assert "<U8" in body(response)["error"]["message"]


@pytest.mark.parametrize("query, top", [("", 5), ("top=1", 1), ("top=2&top=4", 4), ("other=x&top=7", 7)])
async def test_top_is_read_from_the_query(api: ModuleType, runtime: FakeRuntime, query: str, top: int) -> None:
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", query=query, header=IMAGE)
    assert len(body(response)) == top
    chain = runtime.calls[-1].forward
    assert chain is not None and chain.then is not None and chain.then.msg == {"top": top, "model": "m"}


@pytest.mark.parametrize("query", ["top=many", "top=2.5", "top="])
async def test_a_top_that_is_no_whole_number_is_400(api: ModuleType, runtime: FakeRuntime, query: str) -> None:
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", query=query, header=IMAGE)
    if query == "top=":  # an empty value is no value: the default
        assert response.status_code == 200 and len(body(response)) == 5
    else:
        assert response.status_code == 400 and error_kind(response) == "RequestError"


# -- the model's state --------------------------------------------------------------------------

async def test_an_unknown_model_is_404_naming_the_known_ones(api: ModuleType, runtime: FakeRuntime) -> None:
    response = await send(api, runtime, "PUT", "/nope/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 404 and error_kind(response) == "ContextNotFound"
    assert "known: m" in body(response)["error"]["message"]
    assert "x-model" not in headers(response)  # a name the client made up is not vouched for


async def test_an_error_about_a_linked_model_names_its_bindle(api: ModuleType, runtime: FakeRuntime) -> None:
    """The httpserver labels its figures of failed requests with it (mlcloud.metrics.HttpFigures)."""
    runtime.models = [model(state=ModelState.LOADING)]
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 503 and headers(response)["x-model"] == "m/1.0.0"


async def test_a_loading_model_is_503_with_retry_after(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(state=ModelState.LOADING)]
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 503 and error_kind(response) == "ModelLoading"
    assert headers(response)["retry-after"] == "1"
    assert {call.op for call in runtime.calls} == {MODEL_STATUS.name}  # nothing sent to a loading model


async def test_a_model_that_starts_loading_on_the_provider_is_503_with_retry_after(
    api: ModuleType, runtime: FakeRuntime
) -> None:
    runtime.failures[PREDICT.name] = ModelLoading("m is loading again")
    response = await send(api, runtime, "POST", "/m", body=json.dumps(
        {"dimensions": [1], "valueTypes": ["ValueU8"], "data": [1]}).encode())
    assert response.status_code == 503 and headers(response)["retry-after"] == "1"


async def test_a_failed_model_is_503_with_its_reason(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(state=ModelState.FAILED, reason="InvoiceNotFound: no m/1.0.0")]
    response = await send(api, runtime, "PUT", "/m/preprocess", body=b"jpeg", header=IMAGE)
    assert response.status_code == 503 and error_kind(response) == "InvalidModel"
    assert "InvoiceNotFound: no m/1.0.0" in body(response)["error"]["message"]


async def test_a_model_ready_since_the_last_status_is_served_without_waiting(
    api: ModuleType, runtime: FakeRuntime
) -> None:
    runtime.models = [model(state=ModelState.LOADING)]
    assert (await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)).status_code == 503
    runtime.models = [model()]
    # The cached status says LOADING, so the api asks again at once rather than after the TTL.
    assert (await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)).status_code == 200


# -- health and models ----------------------------------------------------------------------------

async def test_live_answers_without_asking_anyone(api: ModuleType, runtime: FakeRuntime) -> None:
    response = await send(api, runtime, "GET", "/v2/health/live")
    assert response.status_code == 200 and body(response) == {"live": True} and runtime.calls == []


async def test_ready_only_when_every_model_is_ready(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model("a"), model("b", state=ModelState.LOADING)]
    response = await send(api, runtime, "GET", "/v2/health/ready")
    assert response.status_code == 503 and headers(response)["retry-after"] == "1"
    assert body(response) == {"ready": False, "models": {"a": "READY", "b": "LOADING"}}
    runtime.models = [model("a"), model("b")]
    response = await send(api, runtime, "GET", "/v2/health/ready")
    assert response.status_code == 200 and body(response) == {"ready": True, "models": {"a": "READY", "b": "READY"}}


async def test_not_ready_without_any_model(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = []
    response = await send(api, runtime, "HEAD", "/v2/health/ready")
    assert response.status_code == 503 and body(response) == {"ready": False, "models": {}}


async def test_models_lists_each_model_in_the_http_apis_json(api: ModuleType, runtime: FakeRuntime) -> None:
    pixels = msgspec.structs.replace(IMAGE_INPUT, image_datatype=ValueType.ValueU8)
    runtime.models = [model("a", inputs=[pixels], sha256="ab" * 32, feature_names=["x", "y"]),
                      model("b", state=ModelState.FAILED, reason="bad", inputs=[])]
    response = await send(api, runtime, "GET", "/models")
    assert response.status_code == 200
    assert body(response) == [
        {"name": "a", "bindle_id": "a/1.0.0", "sha256": "ab" * 32, "engine": "onnxruntime", "state": "READY",
         "reason": "",
         "inputs": [{"name": "input", "shape": [-1, 3, 8, 8], "datatype": "ValueF32", "image_datatype": "ValueU8"}],
         "outputs": [{"name": "out", "shape": [-1, 10], "datatype": "ValueF32"}], "feature_names": ["x", "y"]},
        {"name": "b", "bindle_id": "b/1.0.0", "sha256": "", "engine": "onnxruntime", "state": "FAILED", "reason": "bad",
         "inputs": [], "outputs": [{"name": "out", "shape": [-1, 10], "datatype": "ValueF32"}], "feature_names": []},
    ]


async def test_one_model_and_an_unknown_one(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(inputs=[TensorInfo(name="any", shape=None, datatype="ValueF32")])]
    response = await send(api, runtime, "GET", "/models/m")
    assert response.status_code == 200 and body(response)["inputs"] == [
        {"name": "any", "shape": None, "datatype": "ValueF32"}]
    response = await send(api, runtime, "GET", "/models/other")
    assert response.status_code == 404 and error_kind(response) == "ContextNotFound"


# -- the Open Inference Protocol ------------------------------------------------------------------

async def test_model_metadata_in_the_protocols_shape(api: ModuleType, runtime: FakeRuntime) -> None:
    for path in ("/v2/models/m", "/v2/models/m/versions/1.0.0"):
        response = await send(api, runtime, "GET", path)
        assert response.status_code == 200 and body(response) == {
            "name": "m", "versions": ["1.0.0"], "platform": "onnxruntime",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
            "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 10]}],
            "parameters": {"bindle_id": "m/1.0.0", "state": "READY", "reason": ""}}
    response = await send(api, runtime, "GET", "/v2/models/m/versions/2.0.0")
    assert response.status_code == 404 and "serves m/1.0.0" in oip_error(response)


async def test_another_version_is_served_by_the_route_that_has_it_loaded(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model("m"), ModelInfo(name="m-next", bindle_id="m/2.0.0", engine="onnxruntime",
                                            state=ModelState.READY, inputs=[IMAGE_INPUT])]
    response = await send(api, runtime, "GET", "/v2/models/m/versions/2.0.0")
    assert body(response)["name"] == "m" and body(response)["versions"] == ["2.0.0", "1.0.0"]
    assert (await send(api, runtime, "GET", "/v2/models/m/versions/2.0.0/ready")).status_code == 200
    request = {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]}
    response = await send(api, runtime, "POST", "/v2/models/m/versions/2.0.0/infer", body=json.dumps(request).encode())
    assert response.status_code == 200 and headers(response)["x-model"] == "m/2.0.0"
    assert body(response)["model_name"] == "m" and body(response)["model_version"] == "2.0.0"
    assert [c.message.model for c in runtime.calls if c.op == PREDICT.name] == ["m-next"]


async def test_model_ready_is_200_only_when_ready(api: ModuleType, runtime: FakeRuntime) -> None:
    assert (await send(api, runtime, "GET", "/v2/models/m/ready")).status_code == 200
    assert (await send(api, runtime, "GET", "/v2/models/m/versions/1.0.0/ready")).status_code == 200
    assert (await send(api, runtime, "GET", "/v2/models/m/versions/0.9.0/ready")).status_code == 404
    runtime.models = [model(state=ModelState.LOADING)]
    response = await send(api, runtime, "GET", "/v2/models/m/ready")
    assert response.status_code == 503 and headers(response)["retry-after"] == "1"


async def test_a_protocol_error_keeps_its_status_and_headers(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(state=ModelState.LOADING)]
    request = {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]}
    response = await send(api, runtime, "POST", "/v2/models/m/infer", body=json.dumps(request).encode())
    assert response.status_code == 503 and headers(response)["retry-after"] == "1"
    assert "still loading" in oip_error(response)


async def test_a_json_tensor_is_one_predict_and_a_json_answer(api: ModuleType, runtime: FakeRuntime) -> None:
    runtime.models = [model(inputs=[TensorInfo(name="x", shape=[1, 2], datatype="ValueS64")],
                            outputs=[TensorInfo(name="y", shape=[1, 2], datatype="ValueS64")])]
    request = {"id": "r1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [[-1, 2]]}]}
    response = await send(api, runtime, "POST", "/v2/models/m/infer", body=json.dumps(request).encode())
    assert response.status_code == 200 and headers(response)["x-model"] == "m/1.0.0"
    assert body(response) == {"model_name": "m", "model_version": "1.0.0", "id": "r1", "outputs": [
        {"name": "y", "datatype": "INT64", "shape": [1, 2], "data": [-1, 2]}]}
    [predict] = [c for c in runtime.calls if c.op == PREDICT.name]
    assert predict.message.tensor.value_types == [ValueType.ValueS64]


async def test_images_as_bytes_go_through_preprocess_one_chain_each(api: ModuleType, runtime: FakeRuntime) -> None:
    from mlcloud import oip

    images = [b"jpeg one", b"jpeg two"]
    request = json.dumps({"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES",
                                      "parameters": {"binary_data_size": len(oip.pack_bytes(images))}}],
                          "outputs": [{"name": "out", "parameters": {"classification": 3}}]}).encode()
    response = await send(api, runtime, "POST", "/v2/models/m/infer", body=request + oip.pack_bytes(images),
                          header={oip.HEADER_LENGTH: str(len(request))})
    assert response.status_code == 200, response.body
    [output] = body(response)["outputs"]
    # The fake Predict echoes the zero tensor the fake preprocess made: ties, lowest index first.
    assert output == {"name": "out", "datatype": "BYTES", "shape": [2, 3],
                      "data": ["0.000000:0", "0.000000:1", "0.000000:2"] * 2}
    chains = [c for c in runtime.calls if c.op == PREPROCESS.name]
    assert [c.message.image for c in chains] == images and all(c.forward is not None for c in chains)


async def test_a_lattice_error_becomes_its_status(api: ModuleType, runtime: FakeRuntime) -> None:
    from mlcloud.errors import RpcTimeout

    runtime.failures[POSTPROCESS.name] = RpcTimeout("Postprocess.Matches did not answer")
    response = await send(api, runtime, "PUT", "/m/matches", body=b"jpeg", header=IMAGE)
    assert response.status_code == 504 and error_kind(response) == "RpcTimeout"
