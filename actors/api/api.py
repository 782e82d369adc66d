"""The api actor: the HTTP API of DESIGN §4 and the Open Inference Protocol, composed from the other components.

    PUT  /{model}/matches      image → top-k labels      (preprocess → mlinference → postprocess, chained)
    PUT  /{model}/preprocess   image → raw model output  (preprocess → mlinference)
    POST /{model}/predict      rows of features → {"predictions": […]} (KServe v1, mlcloud.tabular)
    POST /{model}              JSON tensor → InferenceOutput JSON
    GET  /models[/{model}]     name, bindle id, engine, state, inputs and outputs
    POST /{model}/feedback     {"request_id", "reward": 0..1} for a split route (splitting.py)
    GET  /experiments          every split: arms, traffic shares, reward posteriors (splitting.py)

    The Open Inference Protocol (KServe v2; bodies read and written by mlcloud.oip):
    GET  /v2                                       server metadata
    GET  /v2/health/live                           200 while the actor answers
    GET  /v2/health/ready                          200 only when every linked model is READY (else 503)
    GET  /v2/models/{m}[/versions/{v}]             model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready       200 when the model is READY (else 503)
    POST /v2/models/{m}[/versions/{v}]/infer       JSON or binary tensors; BYTES images; classification
    POST /v2/repository/index                      every bindle the mlinference provider can serve
    POST /v2/repository/models/{m}/load|unload     through the provider's load-then-swap path

mlcloud's routes answer errors as ``{"error": {"kind", "message"}}``, protocol routes as
``{"error": "message"}``, each with the status its class names. Every inference answer names the
model that made it as the mlinference provider said when it answered (so it is right during a
swap): ``X-Model``, its bindle id, and ``X-Model-Sha256``, the sha256 of its model parcel, which
``mlcloud verify`` checks against the bindle's signed invoice; other answers about a route name
its bindle in ``X-Model`` as last known. A version is the bindle's version: a version other than the
one served is a 404, unless another route serves that version of the same bindle (it answers
then). The shape of a model's input (for the preprocess actor) comes from the mlinference
provider's status, cached briefly. Tested without NATS against a fake runtime
(tests/actors/test_api.py) and with tritonclient against the real stack (tests/e2e/test_oip.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeVar
from urllib.parse import parse_qs

import msgspec
from splitting import Experiments

import mlcloud
from mlcloud import oip, tabular
from mlcloud.errors import (
    RETRY_AFTER_SECONDS,
    ContextNotFound,
    InferenceRuntimeError,
    InvalidModel,
    MethodNotAllowed,
    MLCloudError,
    ModelLoading,
    NotFound,
    RequestError,
    UnsupportedMediaType,
)
from mlcloud.interfaces import (
    HANDLE_REQUEST,
    LABELS,
    LOAD_MODEL,
    MLINFERENCE,
    MODEL_STATUS,
    POSTPROCESS,
    PREDICT,
    PREPROCESS,
    REPOSITORY_INDEX,
    UNLOAD_MODEL,
    HttpRequest,
    HttpResponse,
    InferenceInput,
    InferenceOutput,
    LabelsRequest,
    ModelInfo,
    ModelSource,
    ModelState,
    ModelStatusRequest,
    PreprocessRequest,
    RepositoryModel,
    RepositoryRequest,
    Tensor,
    TensorInfo,
    ValueType,
)
from mlcloud.metrics import route_of
from mlcloud.sdk import Actor, Chain, Context

T = TypeVar("T")
component = Actor()

CATALOG_TTL = 1.0  # seconds a model's status is reused between requests
IMAGE_METHODS = ("PUT", "POST")
JSON = {"content-type": "application/json"}


def json_response(body: object, status: int = 200, header: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status_code=status, header={**JSON, **(header or {})}, body=json.dumps(body).encode())


def error_response(err: MLCloudError, path: str) -> HttpResponse:
    status, header, body = oip.error_reply(err) if oip.is_oip_path(path) else err.to_http()
    return json_response(body, status, header)


class Catalog:
    """The models the mlinference provider serves for this actor, cached for ``CATALOG_TTL``.

    Once something is cached, a stale catalog is refreshed in the background (one Status call at
    a time) while requests go on with what is known: no request waits for it, and a burst of
    concurrent requests does not become a burst of Status calls. ``fresh`` (and an empty cache)
    waits for the answer; concurrent waiters share one call.
    """

    def __init__(self) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._fetched = 0.0
        self._inflight: asyncio.Task[dict[str, ModelInfo]] | None = None

    async def all(self, ctx: Context, *, fresh: bool = False) -> dict[str, ModelInfo]:
        stale = time.monotonic() - self._fetched > CATALOG_TTL
        if fresh or not self._fetched:
            return await self._refresh(ctx)
        if stale and self._inflight is None:
            self._refresh(ctx)  # in the background; errors show on the next fresh lookup
        return self._models

    def _refresh(self, ctx: Context) -> asyncio.Task[dict[str, ModelInfo]]:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch(ctx))
            self._inflight.add_done_callback(_consume_error)
        return self._inflight

    async def _fetch(self, ctx: Context) -> dict[str, ModelInfo]:
        try:
            infos = await ctx.call(MLINFERENCE, MODEL_STATUS, ModelStatusRequest())
            self._models = {info.name: info for info in infos}
            self._fetched = time.monotonic()
            return self._models
        finally:
            self._inflight = None

    def forget(self) -> None:
        """The next lookup asks the provider (after a load or unload)."""
        self._fetched = 0.0

    async def ready(self, ctx: Context, model: str) -> ModelInfo:
        """The model's info when it can serve; the error that says why not otherwise."""
        info = (await self.all(ctx)).get(model)
        if info is None or info.state is not ModelState.READY:
            info = (await self.all(ctx, fresh=True)).get(model)
        if info is None:
            raise ContextNotFound(f"no model {model!r} is linked; known: {', '.join(sorted(self._models)) or 'none'}")
        if info.state is ModelState.LOADING:
            raise ModelLoading(f"model {model!r} ({info.bindle_id}) is still loading")
        if info.state is ModelState.FAILED:
            raise InvalidModel(f"model {model!r} ({info.bindle_id}) failed to load: {info.reason}")
        return info

    def known(self, model: str) -> ModelInfo | None:
        """The model's info as last fetched, without asking."""
        return self._models.get(model)


def _consume_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a background refresh's failure is not worth a "never retrieved" warning


catalog = Catalog()
experiment = Experiments(catalog)


@component.operation(HANDLE_REQUEST)
async def handle_request(ctx: Context, request: HttpRequest) -> HttpResponse:
    try:
        response = await experiment.serve(ctx, request, route)
    except MLCloudError as err:
        response = error_response(err, request.path)
    return name_model(response, request.path)


def name_model(response: HttpResponse, path: str) -> HttpResponse:
    """Every answer about a linked model, an error too, names its bindle in ``X-Model``: the
    httpserver labels its figures with it (mlcloud.metrics.HttpFigures). An inference answer
    names it already, from the provider's answer (:func:`source_header`)."""
    info = catalog.known(route_of(path)[1])
    if info is not None and "x-model" not in response.header:
        response.header["x-model"] = info.bindle_id
    return response


async def route(ctx: Context, request: HttpRequest) -> HttpResponse:
    parts = [p for p in request.path.split("/") if p]
    method = request.method.upper()
    if parts[:1] == [oip.PREFIX]:
        return await route_v2(ctx, method, parts[1:], request)
    if parts[:1] == ["models"] and len(parts) <= 2:
        require(method, ("GET", "HEAD"))
        return await describe(ctx, parts[1:])
    if len(parts) == 2 and parts[1] in ("matches", "preprocess"):
        require(method, IMAGE_METHODS)
        model, action = parts
        top = parse_top(request.query_string)
        if action == "matches":
            return await classify(ctx, model, request, top)
        return await infer_image(ctx, model, request)
    if len(parts) == 2 and parts[1] == "predict":
        require(method, ("POST",))
        return await predict_rows(ctx, parts[0], request)
    if len(parts) == 1:
        require(method, ("POST", "PUT"))
        return await infer_tensor(ctx, parts[0], request)
    raise NotFound(f"no route {method} {request.path}")


SOURCE_HEADERS = ("x-model", "x-model-sha256")


def source_header(*sources: ModelSource | None) -> dict[str, str]:
    """``X-Model`` and ``X-Model-Sha256`` of the models that made an answer: one, or during a swap
    the old and the new, listed in the same order in both headers."""
    found = list(dict.fromkeys((s.bindle_id, s.sha256) for s in sources if s is not None))
    if not found:
        return {}
    return {name: ", ".join(values) for name, values in zip(SOURCE_HEADERS, zip(*found, strict=True), strict=True)}


def require(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {' or '.join(allowed)}", allow=", ".join(allowed))


def parse_top(query_string: str) -> int:
    values = parse_qs(query_string).get("top")
    if not values:
        return 5
    try:
        return int(values[-1])
    except ValueError:
        raise RequestError(f"top must be a whole number, got {values[-1]!r}") from None


async def describe(ctx: Context, names: list[str]) -> HttpResponse:
    """mlcloud's own view of the models (engine, state, tensors as the engine names their types)."""
    models = await catalog.all(ctx, fresh=True)
    if not names:
        return json_response([model_json(i) for i in models.values()])
    info = models.get(names[0])
    if info is None:
        raise ContextNotFound(f"no model {names[0]!r} is linked")
    return json_response(model_json(info))


def model_json(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "bindle_id": info.bindle_id, "sha256": info.sha256, "engine": info.engine,
            "state": str(info.state), "reason": info.reason, "inputs": msgspec.to_builtins(info.inputs),
            "outputs": msgspec.to_builtins(info.outputs), "feature_names": info.feature_names}


async def route_v2(ctx: Context, method: str, parts: list[str], request: HttpRequest) -> HttpResponse:
    if parts == []:
        require(method, ("GET", "HEAD"))
        return json_response({"name": "mlcloud", "version": mlcloud.__version__, "extensions": oip.EXTENSIONS})
    if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        require(method, ("GET", "HEAD"))
        if parts[1] == "live":
            return json_response({"live": True})
        models = await catalog.all(ctx, fresh=True)
        ready = bool(models) and all(info.state is ModelState.READY for info in models.values())
        body = {"ready": ready, "models": {n: str(i.state) for n, i in models.items()}}
        return json_response(body, 200 if ready else 503, {} if ready else NOT_READY)
    if parts[0] == "repository":
        require(method, ("POST",))
        return await repository(ctx, parts[1:], request)
    if parts[0] == "models" and len(parts) >= 2:
        model, rest, version = parts[1], parts[2:], ""
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        if rest == []:
            require(method, ("GET", "HEAD"))
            models = await catalog.all(ctx, fresh=True)
            return json_response(model_metadata(model, served(model, version, models), models))
        if rest == ["ready"]:
            require(method, ("GET", "HEAD"))
            info = served(model, version, await catalog.all(ctx, fresh=True))
            ready = info.state is ModelState.READY
            return json_response({"name": model, "ready": ready}, 200 if ready else 503, {} if ready else NOT_READY)
        if rest == ["infer"]:
            require(method, ("POST",))
            return await infer_v2(ctx, model, version, request)
    raise NotFound(f"no route /v2/{'/'.join(parts)}")


NOT_READY = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def served(model: str, version: str, models: dict[str, ModelInfo]) -> ModelInfo:
    """The route that serves ``model`` at ``version``: its own (any version, when empty), or
    another route that serves that version of the same bindle (a loaded version is served)."""
    info = models.get(model)
    if info is None:
        raise ContextNotFound(f"no model {model!r} is linked; known: {', '.join(sorted(models)) or 'none'}")
    if not version or version == oip.version_of(info.bindle_id):
        return info
    wanted = f"{bindle_name(info)}/{version}"
    for other in models.values():
        if other.bindle_id == wanted:
            return other
    raise NotFound(f"model {model!r} has no version {version!r} loaded; it serves {info.bindle_id}")


def bindle_name(info: ModelInfo) -> str:
    return info.bindle_id.rpartition("/")[0]


def model_metadata(model: str, info: ModelInfo, models: dict[str, ModelInfo]) -> dict[str, Any]:
    """The protocol's model metadata; mlcloud's own facts in ``parameters``. The versions are every
    version of the model's bindle that a route serves, the one asked for first."""
    def tensors(infos: list[TensorInfo]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": oip.datatype(t.datatype), "shape": t.shape or []} for t in infos]

    versions = [oip.version_of(info.bindle_id)]
    versions += sorted({oip.version_of(i.bindle_id) for i in models.values() if bindle_name(i) == bindle_name(info)}
                       - set(versions))
    return {"name": model, "versions": versions, "platform": info.engine,
            "inputs": tensors(info.inputs), "outputs": tensors(info.outputs),
            "parameters": {"bindle_id": info.bindle_id, "state": str(info.state), "reason": info.reason}}


async def repository(ctx: Context, parts: list[str], request: HttpRequest) -> HttpResponse:
    """The model repository extension, on the mlinference provider's repository operations."""
    fields = parse_json_object(request.body)
    if parts == ["index"]:
        index = await ctx.call(MLINFERENCE, REPOSITORY_INDEX, RepositoryRequest())
        if fields.get("ready"):
            index = [m for m in index if m.state is ModelState.READY]
        return json_response([repository_entry(m) for m in index])
    if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
        parameters = fields.get("parameters") or {}
        bindle_id = str(parameters.get("bindle_id", "")) if isinstance(parameters, dict) else ""
        op = LOAD_MODEL if parts[2] == "load" else UNLOAD_MODEL
        try:
            done = await ctx.call(MLINFERENCE, op, RepositoryRequest(model=parts[1], bindle_id=bindle_id))
        finally:
            catalog.forget()
        return json_response(repository_entry(done))
    raise NotFound(f"no route /v2/repository/{'/'.join(parts)}")


def repository_entry(model: RepositoryModel) -> dict[str, Any]:
    state = "UNAVAILABLE" if model.state in (None, ModelState.FAILED) else str(model.state)
    return {"name": model.name, "version": oip.version_of(model.bindle_id), "state": state,
            "reason": model.reason, "bindle_id": model.bindle_id}


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise RequestError("body must be a JSON object")
    return parsed


async def infer_v2(ctx: Context, model: str, version: str, request: HttpRequest) -> HttpResponse:
    """One inference: the input as a tensor (Predict) or as images (preprocess → Predict), each
    asked-for output by its index, then the protocol's answer (binary and classification too)."""
    infer, inputs = oip.parse_infer_request(request.body, request.header.get(oip.HEADER_LENGTH))
    info = await catalog.ready(ctx, model)
    if version:
        route = served(model, version, await catalog.all(ctx)).name
        info = info if route == model else await catalog.ready(ctx, route)
    names = [t.name for t in info.inputs]
    if len(inputs) != 1 or (names and inputs[0].name != names[0]):
        given = ", ".join(repr(i.name) for i in inputs)
        raise RequestError(f"model {model!r} takes one input, {names[0] if names else 'unnamed'!r}; got {given}")
    outputs = [t.name for t in info.outputs] or ["output"]
    wanted = infer.outputs or [oip.RequestOutput(name=name) for name in outputs]
    unknown = [o.name for o in wanted if o.name not in outputs]
    if unknown:
        raise RequestError(f"model {model!r} has no output {unknown[0]!r}; its outputs: {', '.join(outputs)}")
    results = await asyncio.gather(*(run(ctx, info, inputs[0], outputs.index(o.name)) for o in wanted))
    answers = []
    for output, (tensor, _) in zip(wanted, results, strict=True):
        binary = infer.binary_output(output if infer.outputs else None)
        if output.classification:
            shape, classes = oip.classify(tensor, output.classification, await class_labels(ctx))
            answers.append(oip.bytes_output(output.name, shape, classes, binary))
        else:
            answers.append(oip.tensor_output(output.name, tensor, binary))
    body, header = oip.encode_response(model, oip.version_of(info.bindle_id), infer.id, answers)
    sources = [source for _, answered in results for source in answered]
    return HttpResponse(status_code=200, header={**header, **source_header(*sources)}, body=body)


async def run(ctx: Context, info: ModelInfo, given: oip.Input, index: int) -> tuple[Tensor, list[ModelSource | None]]:
    """Output ``index`` of the route's model on the input (a tensor as it is, BYTES as one image
    each), with the models that answered."""
    model = info.name
    if given.tensor is not None:
        answer = await ctx.call(MLINFERENCE, PREDICT, InferenceInput(model=model, tensor=given.tensor, index=index))
        return output_tensor(answer), [answer.source]
    images = given.elements or []
    if not images:
        raise RequestError(f"input {given.name!r} holds no image")
    answers = await asyncio.gather(*(image_chain(ctx, model, image, info, predict(ctx, model, index))
                                     for image in images))
    return oip.concat([output_tensor(a) for a in answers]), [a.source for a in answers]


def output_tensor(answer: InferenceOutput) -> Tensor:
    if answer.tensor is None:
        raise InferenceRuntimeError(f"the model answered {answer.result} without a tensor")
    return answer.tensor


_labels: list[str] = []


async def class_labels(ctx: Context) -> list[str]:
    """The postprocess actor's labels, asked for once (they are signed into its artifact)."""
    if not _labels:
        labels: list[str] = await ctx.call_actor("postprocess", LABELS, LabelsRequest())
        _labels.extend(labels)
    return _labels


def check_image_body(request: HttpRequest) -> bytes:
    content_type = request.header.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("text/") or content_type in ("application/json", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(f"expected image bytes (JPEG, PNG, GIF, BMP, WebP), got {content_type}")
    return request.body


def image_input(model: str, info: ModelInfo) -> tuple[list[int], ValueType]:
    """The dimensions and value type the model's first input wants from an image."""
    wanted = info.inputs[0] if info.inputs else TensorInfo(name="", shape=None, datatype=ValueType.ValueF32)
    dims = [d if d > 0 else 1 for d in wanted.shape or [1, 3, 224, 224]]
    if wanted.image_datatype is not None:
        # A model that takes 8-bit pixels (and normalises them itself) gets a quarter of the bytes.
        return dims, wanted.image_datatype
    try:
        return dims, ValueType(wanted.datatype)
    except ValueError:
        raise InvalidModel(f"model {model!r} wants {wanted.datatype} input, which no image converts to") from None


def predict(ctx: Context, model: str, index: int = 0) -> Chain[InferenceOutput]:
    """The model's Predict (of output ``index``), as the stage after the preprocess actor."""
    return ctx.forward_to(MLINFERENCE, PREDICT, {"model": model, **({"index": index} if index else {})}, into="tensor")


async def image_chain(ctx: Context, model: str, image: bytes, info: ModelInfo, then: Chain[T]) -> T:
    """Preprocess → ``then`` (Predict → …) on an image, as one chain: each stage's result goes
    straight to the next (the input tensor never travels through this actor) and the last
    stage's answer comes back here."""
    dims, value_type = image_input(model, info)
    wanted = PreprocessRequest(image=image, dimensions=dims, value_type=value_type, model=model)
    return await ctx.call_actor("preprocess", PREPROCESS, wanted, then=then)


async def classify(ctx: Context, model: str, request: HttpRequest, top: int) -> HttpResponse:
    image = check_image_body(request)
    info = await catalog.ready(ctx, model)
    top_k = ctx.forward_to_actor("postprocess", POSTPROCESS, {"top": top, "model": model}, into="tensor",
                                 pick="tensor", carry=("source",))
    found = await image_chain(ctx, model, image, info, predict(ctx, model).followed_by(top_k))
    body = [{"label": m.label, "probability": m.probability} for m in found.matches]
    return json_response(body, header=source_header(found.source))


async def infer_image(ctx: Context, model: str, request: HttpRequest) -> HttpResponse:
    image = check_image_body(request)
    info = await catalog.ready(ctx, model)
    output = await image_chain(ctx, model, image, info, predict(ctx, model))
    return json_response(output.to_json(), header=source_header(output.source))


async def infer_tensor(ctx: Context, model: str, request: HttpRequest) -> HttpResponse:
    if not request.body:
        raise RequestError(
            'expected a JSON tensor body: {"dimensions": [...], "valueTypes": [...], "data": [...]}'
        )
    try:
        parsed = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc
    tensor = Tensor.from_json(parsed)
    await catalog.ready(ctx, model)
    output = await ctx.call(MLINFERENCE, PREDICT, InferenceInput(model=model, tensor=tensor))
    return json_response(output.to_json(), header=source_header(output.source))


async def predict_rows(ctx: Context, model: str, request: HttpRequest) -> HttpResponse:
    """KServe v1's tabular predict: the model's first output per row, or its probabilities."""
    info = await catalog.ready(ctx, model)
    index = tabular.output_index(info, tabular.wants_probabilities(request.query_string))
    tensor = tabular.instances_tensor(parse_json_object(request.body), info)
    output = await ctx.call(MLINFERENCE, PREDICT, InferenceInput(model=model, tensor=tensor, index=index))
    return json_response({"predictions": tabular.predictions(output_tensor(output))},
                         header=source_header(output.source))
