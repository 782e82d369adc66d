"""The api actor: the HTTP API of DESIGN §4, composed from the other components.

    PUT  /{model}/matches      image → top-k labels      (preprocess → mlinference → postprocess, chained)
    PUT  /{model}/preprocess   image → raw model output  (preprocess → mlinference)
    POST /{model}              JSON tensor → InferenceOutput JSON
    GET  /v2/health/live       200 while the actor answers
    GET  /v2/health/ready      200 only when every linked model is READY
    GET  /v2/models[/{model}]  name, bindle id, engine, state, inputs and outputs

Every error is a JSON body ``{"error": {"kind", "message"}}`` with the status its class names;
the response header ``X-Model`` says which bindle served the route. The shape of a model's input
(for the preprocess actor) comes from the mlinference provider's status, cached briefly.
Tested without NATS against a fake runtime (tests/actors/test_api.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeVar
from urllib.parse import parse_qs

import msgspec

from mlcloud.errors import (
    RETRY_AFTER_SECONDS,
    ContextNotFound,
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
    MLINFERENCE,
    MODEL_STATUS,
    POSTPROCESS,
    PREDICT,
    PREPROCESS,
    HttpRequest,
    HttpResponse,
    InferenceInput,
    InferenceOutput,
    ModelInfo,
    ModelState,
    ModelStatusRequest,
    PreprocessRequest,
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


def error_response(err: MLCloudError) -> HttpResponse:
    status, header, body = err.to_http()
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


@component.operation(HANDLE_REQUEST)
async def handle_request(ctx: Context, request: HttpRequest) -> HttpResponse:
    try:
        response = await route(ctx, request)
    except MLCloudError as err:
        response = error_response(err)
    return name_model(response, request.path)


def name_model(response: HttpResponse, path: str) -> HttpResponse:
    """Every answer about a linked model, an error too, names its bindle in ``X-Model``: the
    httpserver labels its figures with it (mlcloud.metrics.HttpFigures)."""
    info = catalog.known(route_of(path)[1])
    if info is not None and "x-model" not in response.header:
        response.header["x-model"] = info.bindle_id
    return response


async def route(ctx: Context, request: HttpRequest) -> HttpResponse:
    parts = [p for p in request.path.split("/") if p]
    method = request.method.upper()
    if parts[:1] == ["v2"]:
        return await route_v2(ctx, method, parts[1:])
    if len(parts) == 2 and parts[1] in ("matches", "preprocess"):
        require(method, IMAGE_METHODS)
        model, action = parts
        top = parse_top(request.query_string)
        if action == "matches":
            return await classify(ctx, model, request, top)
        return await infer_image(ctx, model, request)
    if len(parts) == 1:
        require(method, ("POST", "PUT"))
        return await infer_tensor(ctx, parts[0], request)
    raise NotFound(f"no route {method} {request.path}")


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


async def route_v2(ctx: Context, method: str, parts: list[str]) -> HttpResponse:
    require(method, ("GET", "HEAD"))
    if parts == ["health", "live"]:
        return json_response({"live": True})
    if parts == ["health", "ready"]:
        models = await catalog.all(ctx, fresh=True)
        ready = bool(models) and all(info.state is ModelState.READY for info in models.values())
        body = {"ready": ready, "models": {n: str(i.state) for n, i in models.items()}}
        not_ready = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return json_response(body, 200 if ready else 503, {} if ready else not_ready)
    if parts == ["models"]:
        return json_response([model_json(i) for i in (await catalog.all(ctx, fresh=True)).values()])
    if len(parts) == 2 and parts[0] == "models":
        info = (await catalog.all(ctx, fresh=True)).get(parts[1])
        if info is None:
            raise ContextNotFound(f"no model {parts[1]!r} is linked")
        return json_response(model_json(info))
    raise NotFound(f"no route /v2/{'/'.join(parts)}")


def model_json(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "bindle_id": info.bindle_id, "engine": info.engine, "state": str(info.state),
            "reason": info.reason, "inputs": msgspec.to_builtins(info.inputs),
            "outputs": msgspec.to_builtins(info.outputs)}


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


def predict(ctx: Context, model: str) -> Chain[InferenceOutput]:
    """The model's Predict, as the stage after the preprocess actor."""
    return ctx.forward_to(MLINFERENCE, PREDICT, {"model": model}, into="tensor")


async def image_chain(ctx: Context, model: str, request: HttpRequest, then: Chain[T]) -> tuple[T, ModelInfo]:
    """Preprocess → ``then`` (Predict → …) on the request's image, as one chain: each stage's
    result goes straight to the next (the input tensor never travels through this actor) and the
    last stage's answer comes back here."""
    image = check_image_body(request)
    info = await catalog.ready(ctx, model)
    dims, value_type = image_input(model, info)
    wanted = PreprocessRequest(image=image, dimensions=dims, value_type=value_type, model=model)
    answer = await ctx.call_actor("preprocess", PREPROCESS, wanted, then=then)
    return answer, info


async def classify(ctx: Context, model: str, request: HttpRequest, top: int) -> HttpResponse:
    top_k = ctx.forward_to_actor("postprocess", POSTPROCESS, {"top": top, "model": model}, into="tensor",
                                 pick="tensor")
    found, info = await image_chain(ctx, model, request, predict(ctx, model).followed_by(top_k))
    body = [{"label": m.label, "probability": m.probability} for m in found]
    return json_response(body, header={"x-model": info.bindle_id})


async def infer_image(ctx: Context, model: str, request: HttpRequest) -> HttpResponse:
    output, info = await image_chain(ctx, model, request, predict(ctx, model))
    return json_response(output.to_json(), header={"x-model": info.bindle_id})


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
    info = await catalog.ready(ctx, model)
    output = await ctx.call(MLINFERENCE, PREDICT, InferenceInput(model=model, tensor=tensor))
    return json_response(output.to_json(), header={"x-model": info.bindle_id})
