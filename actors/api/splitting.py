"""The api actor's side of experiments between versions (:mod:`mlcloud.experiments` has the design).

A request for a route with a split (its link value ``split.{route}``) goes to the arm route of the
version :func:`~mlcloud.experiments.choose` picks, and the answer says which (``X-Split-Arm``);
the assignment is recorded, while the model computes, for ``POST /{route}/feedback``. Every other
request passes through untouched.

    POST /{model}/feedback   {"request_id": "<the answer's X-Request-Id>", "reward": 0..1}
    GET  /experiments        every split: arms, weights, the last minute's traffic shares,
                             reward means and 95 % credible intervals
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from mlcloud.errors import ContextNotFound, MethodNotAllowed, MLCloudError, NotFound, RequestError
from mlcloud.experiments import (
    ARM_HEADER,
    KEY_HEADER,
    ExperimentStore,
    Policy,
    Posterior,
    PosteriorCache,
    Split,
    check_reward,
    choose,
    report,
    splits_of,
)
from mlcloud.interfaces import MLINFERENCE, HttpRequest, HttpResponse, ModelInfo
from mlcloud.lattice.control import LinkDefinition
from mlcloud.sdk import Context

Route = Callable[[Context, HttpRequest], Awaitable[HttpResponse]]
IMAGE_ACTIONS = ("matches", "preprocess", "predict")
OWN_FIRST_SEGMENTS = ("models", "v2", "experiments")


class Catalog(Protocol):
    async def all(self, ctx: Context, *, fresh: bool = False) -> dict[str, ModelInfo]: ...

    def known(self, model: str) -> ModelInfo | None: ...


class Experiments:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.posteriors = PosteriorCache()
        self._store: ExperimentStore | None = None
        self._link: LinkDefinition | None = None
        self._splits: dict[str, Split] = {}

    async def serve(self, ctx: Context, request: HttpRequest, route: Route) -> HttpResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["experiments"]:
            _require(request.method, "GET")
            return _json(await self.reports(ctx))
        if len(parts) == 2 and parts[1] == "feedback":
            _require(request.method, "POST")
            return _json(await self.feedback(ctx, parts[0], request.body))
        at = _model_segment(parts)
        split = self.splits(ctx).get(parts[at]) if at is not None else None
        if split is None or at is None:
            return await route(ctx, request)
        posteriors: dict[str, Posterior] = {}
        if split.policy is Policy.THOMPSON:
            try:
                posteriors = await self.posteriors.get(self.store(ctx), split)
            except MLCloudError as err:  # JetStream away: draw from the priors, serve on
                ctx.log.warning("the posteriors of %s are unreadable: %s", split.route, err.message)
        version = choose(split, posteriors, request.header.get(KEY_HEADER))
        parts[at] = split.arm_route(version)
        arm = msgspec.structs.replace(request, path="/" + "/".join(parts))
        recorded = asyncio.ensure_future(self.store(ctx).assign(split.route, ctx.request_id, version))
        try:
            response = await route(ctx, arm)
        finally:
            try:
                await recorded
            except MLCloudError as err:  # the answer stands; only its feedback will not be taken
                ctx.log.warning("the assignment of %s to %s is not recorded: %s", ctx.request_id, version, err.message)
        response.header[ARM_HEADER] = version
        return response

    def splits(self, ctx: Context) -> dict[str, Split]:
        """The splits of this actor's mlinference link, parsed once per link change."""
        link = ctx.own_link(MLINFERENCE)
        if link is not self._link:
            self._link, self._splits = link, splits_of(link.values) if link is not None else {}
        return self._splits

    def store(self, ctx: Context) -> ExperimentStore:
        if self._store is None:
            self._store = ExperimentStore(ctx.jetstream(), ctx.settings.lattice)
        return self._store

    async def feedback(self, ctx: Context, model: str, body: bytes) -> dict[str, Any]:
        fields = _object(body)
        request_id, reward = fields.get("request_id"), check_reward(fields.get("reward"))
        if not isinstance(request_id, str) or not request_id:
            raise RequestError('request_id must be the X-Request-Id of an answer, e.g. {"request_id": "…", '
                               '"reward": 1}')
        split = self.splits(ctx).get(model)
        if split is None:
            if self.catalog.known(model) is None and model not in await self.catalog.all(ctx, fresh=True):
                raise ContextNotFound(f"no model {model!r} is linked")
            raise NotFound(f"model {model!r} runs no experiment: split it first (mlcloud split)")
        version, posterior = await self.store(ctx).reward(model, request_id, reward)
        self.posteriors.update(model, version, posterior)
        return {"request_id": request_id, "model": model, "version": version, "reward": reward,
                "rewards": posterior.rewards, "mean": posterior.mean}

    async def reports(self, ctx: Context) -> list[dict[str, Any]]:
        splits = self.splits(ctx)
        if not splits:
            return []
        models = await self.catalog.all(ctx, fresh=True)
        found = []
        for name, split in sorted(splits.items()):
            posteriors = await self.store(ctx).posteriors(name, split.weights)
            requests = {v: models[r].requests for v in split.weights if (r := split.arm_route(v)) in models}
            found.append(report(split, posteriors, requests))
        return found


def _model_segment(parts: list[str]) -> int | None:
    """Where an inference path names its model: ``/{m}``, ``/{m}/matches|preprocess|predict`` and the
    protocol's ``/v2/models/{m}/infer`` (a path naming a version asks for that version, no split)."""
    if len(parts) == 1 and parts[0] not in OWN_FIRST_SEGMENTS:
        return 0
    if len(parts) == 2 and parts[1] in IMAGE_ACTIONS:
        return 0
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer":
        return 2
    return None


def _require(method: str, allowed: str) -> None:
    if method.upper() != allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {allowed}", allow=allowed)


def _object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise RequestError('body must be a JSON object: {"request_id": "…", "reward": 0..1}')
    return parsed


def _json(body: object) -> HttpResponse:
    return HttpResponse(status_code=200, header={"content-type": "application/json"}, body=json.dumps(body).encode())
