"""From a fitted model to a live route in one call: ``mlcloud.deploy``, ``models``, ``undeploy``.

``deploy`` converts the model to ONNX (:mod:`mlcloud.modelbuild.convert`), writes a bindle as
``mlcloud models build`` does (model parcel, ``metadata.json`` with the input and output schema,
feature names, classes and converter versions; each parcel's sha256 in the invoice,
:mod:`mlcloud.modelbuild.bundles`), pushes it signed as creator with the account key (what the
mlinference provider requires), sets the route in the link values of every link to the
mlinference provider (durable: a restarted provider loads it again), and waits until the model is
READY through the model repository's ``load``, which answers once the provider's load-then-swap
is done. A new version of a deployed name is the update: the old version serves until the new one
is READY; a model that fails to load is unlinked again, so the route keeps what it served. Routes
are link values, so ``undeploy`` takes the value out and the route answers 404.

``split`` runs an experiment between versions of a route (:mod:`mlcloud.experiments`): it links
one arm route per version, waits until each is READY, and only then sets the split, so no request
goes to an arm that cannot answer; ``unsplit`` (or ``split(name, None)``) takes them out again.
``experiments`` reads what the api actor reports of every split (``GET /experiments``).

The functions are synchronous so a notebook can call them; inside a running event loop (Jupyter)
the async implementation runs in a thread with its own loop. The CLI verbs (``mlcloud deploy``,
``mlcloud undeploy``, ``mlcloud models list``, ``mlcloud split``) call the async functions directly.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import mlcloud
from mlcloud.digests import sha256_file
from mlcloud.errors import ContextNotFound, LatticeUnavailable, MLCloudError, ModelLoading, RequestError
from mlcloud.settings import Settings

if TYPE_CHECKING:
    from mlcloud.bindle import AsyncClient
    from mlcloud.experiments import Split
    from mlcloud.lattice.control import LinkDefinition, RepositoryOp
    from mlcloud.lattice.ctl_client import CtlClient
    from mlcloud.modelbuild.convert import Converted

T = TypeVar("T")
Progress = Callable[[str], None]

DEFAULT_TIMEOUT = 120.0  # seconds deploy waits for READY (and undeploy for the route to go)
FIRST_VERSION = "1.0.0"
MODEL_FILE = "model.onnx"
# A route is one path segment and a bindle name; the api's own first segments and the link's
# reserved keys (mlcloud.inference.config) cannot be routes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = {"v2", "models", "metrics", "experiments", "engine", "batch_max_size", "batch_max_wait_ms"}
# Seconds between taking a split out and unlinking its arms: every api instance's link watch has
# stopped choosing them, and the requests they were serving have ended, before they go.
UNSPLIT_GRACE = 1.0


@dataclass(frozen=True)
class Deployment:
    """A deployed model version: where it answers and how to call it."""

    name: str
    bindle_id: str
    url: str  # the route: POST a JSON tensor here
    infer_url: str  # the Open Inference Protocol's infer endpoint of the route
    sha256: str  # of the model parcel
    curl: str  # a ready-to-paste request

    def __str__(self) -> str:
        return f"{self.name} serves {self.bindle_id} at {self.url}\n{self.curl}"


@dataclass(frozen=True)
class DeployedModel:
    """A route of the lattice, as ``models()`` lists it."""

    name: str
    bindle_id: str
    state: str  # READY, LOADING, FAILED or UNAVAILABLE
    reason: str
    url: str


# ---------------------------------------------------------------------------- sync API


def deploy(model: Any, name: str, version: str | None = None, sample: Any = None, *,
           settings: Settings | None = None, timeout: float = DEFAULT_TIMEOUT,
           progress: Progress = print) -> Deployment:
    """Deploy ``model`` as route ``name`` (see the module docstring); returns once it is READY.

    ``version`` defaults to the next patch version after the newest bindle named ``name`` (or
    1.0.0); ``sample`` (e.g. ``X[:5]``) fixes the input's feature count and checks the converted
    model answers it as the original does.
    """
    return run_blocking(lambda: deploy_async(model, name, version, sample, settings=settings, timeout=timeout,
                                     progress=progress))


def models(*, settings: Settings | None = None) -> list[DeployedModel]:
    """Every route the lattice serves, with its bindle and state."""
    return run_blocking(lambda: models_async(settings=settings))


def undeploy(name: str, *, settings: Settings | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Take the route ``name`` out of service (its bindles stay in Bindle)."""
    run_blocking(lambda: undeploy_async(name, settings=settings, timeout=timeout))


def split(name: str, arms: Mapping[str, float] | Iterable[str] | None = None, *, policy: str | None = None,
          settings: Settings | None = None, timeout: float = DEFAULT_TIMEOUT,
          progress: Progress = print) -> Split | None:
    """Split route ``name``'s traffic between versions of its bindle.

    ``split(name, {"1.0.0": 0.9, "2.0.0": 0.1})`` by fixed weights; ``split(name, policy="thompson")``
    by Thompson sampling on the rewards of ``POST /{name}/feedback``, between the versions given,
    else those of the split in place, else every version of the bindle; ``split(name, None)``
    ends the split (as ``unsplit``). Returns the split set, or None.
    """
    return run_blocking(lambda: split_async(name, arms, policy=policy, settings=settings, timeout=timeout,
                                    progress=progress))


def unsplit(name: str, *, settings: Settings | None = None, progress: Progress = print) -> None:
    """End route ``name``'s experiment: every request goes to the route's own version again."""
    run_blocking(lambda: split_async(name, None, settings=settings, progress=progress))


def experiments(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every split, as the api reports it: per arm its weight, share of the last minute's requests,
    rewards, reward mean and 95 % credible interval (``low``, ``high``)."""
    return run_blocking(lambda: experiments_async(settings=settings))


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` returns to the end, also from inside a running loop (Jupyter's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1, thread_name_prefix="mlcloud-deploy") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


# ---------------------------------------------------------------------------- async API


async def deploy_async(model: Any, name: str, version: str | None = None, sample: Any = None, *,
                       settings: Settings | None = None, timeout: float = DEFAULT_TIMEOUT,
                       progress: Progress = print) -> Deployment:
    from mlcloud.bindle import AsyncClient
    from mlcloud.modelbuild.convert import to_onnx
    from mlcloud.oci.keys import load_account

    check_name(name)
    settings = settings or Settings.from_env()
    started = time.monotonic()
    converted = await asyncio.to_thread(to_onnx, model, sample)
    if converted.framework == "onnx":
        progress("checked the ONNX model" + (" on the sample" if sample is not None else ""))
    else:
        progress(f"converted the {converted.framework} model to ONNX"
                 + (" (it answers the sample as the original does)" if sample is not None else ""))
    async with AsyncClient(settings.effective_bindle_url) as client:
        version = version or await next_version(client, name)
        with tempfile.TemporaryDirectory(prefix="mlcloud-deploy-") as tmp:
            directory = await asyncio.to_thread(write_bundle, converted, name, version, Path(tmp))
            result = await client.push_dir(directory, creator=load_account(settings.keys_dir))
            sha256 = sha256_file(directory / MODEL_FILE)
    bindle_id = result.bindle_id
    progress(f"pushed {bindle_id} (model sha256 {sha256[:12]}…)")
    async with await _connect(settings) as ctl:
        links = await mlinference_links(ctl)
        for link in links:
            await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name,
                               {**link.values, name: bindle_id})
        progress(f"route {name} → {bindle_id}; waiting until it is READY …")
        deadline = started + timeout
        try:
            for link in links:
                await _load(ctl, link, name, bindle_id, deadline)
        except MLCloudError:
            # A model that cannot load must not stay linked: the route goes back to what it served.
            for link in links:
                await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name, link.values)
            raise
    url = f"{base_url(settings)}/{name}"
    deployment = Deployment(name, bindle_id, url, f"{base_url(settings)}/v2/models/{name}/infer", sha256,
                            curl_example(settings, name, converted, sample))
    progress(f"{name} is READY ({bindle_id}) after {time.monotonic() - started:.1f} s: {url}")
    return deployment


async def models_async(*, settings: Settings | None = None) -> list[DeployedModel]:
    from mlcloud.inference.config import parse_link_values
    from mlcloud.lattice.control import RepositoryOp

    settings = settings or Settings.from_env()
    found: dict[str, DeployedModel] = {}
    async with await _connect(settings) as ctl:
        for link in await mlinference_links(ctl):
            # The index also lists bindles no route serves, by their own name: match the bindle too.
            index = {(m.name, m.bindle_id): m for m in await _repository(ctl, link, RepositoryOp.INDEX)}
            for route, bindle_id in parse_link_values(link.values).routes.items():
                entry = index.get((route, bindle_id))
                state = str(entry.state) if entry is not None and entry.state is not None else "UNAVAILABLE"
                found.setdefault(route, DeployedModel(route, bindle_id, state, entry.reason if entry else "",
                                                      f"{base_url(settings)}/{route}"))
    return sorted(found.values(), key=lambda m: m.name)


async def undeploy_async(name: str, *, settings: Settings | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    from mlcloud.experiments import ARM_SEPARATOR, SPLIT_PREFIX
    from mlcloud.lattice.control import RepositoryOp

    settings = settings or Settings.from_env()
    async with await _connect(settings) as ctl:
        links = [link for link in await mlinference_links(ctl) if name in link.values]
        if not links:
            raise ContextNotFound(f"no route {name!r} is deployed")
        for link in links:  # its experiment goes with it (mlcloud.experiments)
            values = {k: v for k, v in link.values.items()
                      if k not in (name, SPLIT_PREFIX + name) and not k.startswith(name + ARM_SEPARATOR)}
            await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name, values)
        # The provider applies a link change in the background: wait until the route is gone.
        async with asyncio.timeout(timeout):
            for link in links:
                while any(m.name == name and m.state is not None
                          for m in await _repository(ctl, link, RepositoryOp.INDEX)):
                    await asyncio.sleep(0.1)


async def split_async(name: str, arms: Mapping[str, float] | Iterable[str] | None = None, *,
                      policy: str | None = None, settings: Settings | None = None,
                      timeout: float = DEFAULT_TIMEOUT, progress: Progress = print) -> Split | None:
    from mlcloud.bindle import AsyncClient
    from mlcloud.experiments import ARM_SEPARATOR, SPLIT_PREFIX, Policy, Split, splits_of

    settings = settings or Settings.from_env()
    started = time.monotonic()
    async with await _connect(settings) as ctl:
        links = [link for link in await mlinference_links(ctl) if name in link.values]
        if not links:
            raise ContextNotFound(f"no route {name!r} is deployed")

        def without_split(values: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in values.items() if k != SPLIT_PREFIX + name}

        def without_arms(values: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in values.items() if not k.startswith(name + ARM_SEPARATOR)}

        if arms is None and policy is None:
            # The api stops choosing arms first, then the arms go.
            for link in links:
                await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name,
                                   without_split(link.values))
            await asyncio.sleep(UNSPLIT_GRACE)
            for link in links:
                await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name,
                                   without_arms(without_split(link.values)))
            progress(f"{name} serves {links[0].values[name]} alone")
            return None
        bindle = links[0].values[name].rpartition("/")[0]
        if arms is None:
            current = splits_of(links[0].values).get(name)
            if current is not None:
                arms = list(current.weights)
            else:
                async with AsyncClient(settings.effective_bindle_url) as client:
                    arms = await bindle_versions(client, bindle)
        chosen = Split.make(name, arms, policy or Policy.FIXED)
        arm_routes = {chosen.arm_route(v): f"{bindle}/{v}" for v in chosen.weights}
        for link in links:
            await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name,
                               {**without_arms(link.values), **arm_routes})
        progress(f"arms of {name}: {', '.join(arm_routes.values())}; waiting until they are READY …")
        try:
            for link in links:
                for route, bindle_id in arm_routes.items():
                    await _load(ctl, link, route, bindle_id, started + timeout)
        except MLCloudError:
            for link in links:  # an arm that cannot load: the route goes back to what it was
                await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name, link.values)
            raise
        for link in links:
            await ctl.put_link(link.actor_id, link.provider_id, link.contract_id, link.link_name,
                               {**without_arms(link.values), **arm_routes, SPLIT_PREFIX + name: chosen.to_value()})
    shares = ", ".join(f"{v} {w:.0%}" for v, w in chosen.weights.items())
    progress(f"{name} is split by {chosen.policy}: " + (shares if chosen.policy is Policy.FIXED else
                                                         ", ".join(chosen.weights)))
    return chosen


async def experiments_async(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    import httpx

    settings = settings or Settings.from_env()
    try:
        async with httpx.AsyncClient(base_url=base_url(settings), timeout=settings.ctl_timeout) as client:
            reply = await client.get("/experiments")
    except httpx.HTTPError as exc:
        raise LatticeUnavailable(f"the HTTP API at {base_url(settings)} did not answer: {exc}") from exc
    if reply.status_code != 200:
        raise LatticeUnavailable(f"GET /experiments answered {reply.status_code}: {reply.text[:200]}")
    found: list[dict[str, Any]] = reply.json()
    return found


# ---------------------------------------------------------------------------- pieces


def check_name(name: str) -> None:
    if not _NAME.match(name) or name in _RESERVED:
        raise RequestError(f"{name!r} cannot be a route: use letters, digits, '_', '-' or '.', not one of "
                           f"{', '.join(sorted(_RESERVED))}")


async def next_version(client: AsyncClient, name: str) -> str:
    """The next patch version after the newest bindle named ``name``, or 1.0.0."""
    import semver

    versions = await bindle_versions(client, name)
    if not versions:
        return FIRST_VERSION
    return str(max(semver.Version.parse(v) for v in versions).bump_patch())


async def bindle_versions(client: AsyncClient, name: str) -> list[str]:
    """Every version of the bindles named ``name``, oldest first."""
    import semver

    versions: list[str] = []
    seen = 0
    while True:
        page = await client.query(name, strict=True, offset=seen)
        seen += len(page.invoices)
        versions += [inv.bindle.version for inv in page.invoices if inv.bindle.name == name]
        if not page.more or not page.invoices:
            break
    return sorted(versions, key=semver.Version.parse)


def write_bundle(converted: Converted, name: str, version: str, out: Path) -> Path:
    """The bindle of ``converted`` in ``out/{name}-{version}/``, as ``mlcloud models build`` writes one."""
    from mlcloud.modelbuild.bundles import BINDLE_VERSION, INVOICE, dump_invoice, render_invoice, validate_invoice
    from mlcloud.modelbuild.errors import ModelBuildError

    directory = out / f"{name}-{version}"
    directory.mkdir(parents=True)
    (directory / MODEL_FILE).write_bytes(converted.model.SerializeToString())
    parcels = [_parcel(MODEL_FILE, "application/onnx", "model"),
               _parcel("metadata.json", "application/json", "metadata")]
    groups = [{"name": "model", "required": True, "satisfiedBy": "allOf"},
              {"name": "metadata", "required": True, "satisfiedBy": "allOf"}]
    metadata = model_metadata(converted, name)
    if converted.source is not None:
        source_name, data = converted.source
        (directory / source_name).write_bytes(data)
        parcels.append(_parcel(source_name, "application/octet-stream", "source"))
        groups.append({"name": "source", "required": False, "satisfiedBy": "allOf"})
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    template = {"bindleVersion": BINDLE_VERSION,
                "bindle": {"name": name, "version": version, "authors": ["mlcloud"],
                           "description": f"{converted.framework} model deployed with mlcloud.deploy"},
                "parcel": parcels, "group": groups}
    invoice = render_invoice(template, directory)
    problems = validate_invoice(invoice)
    if problems:
        raise ModelBuildError(f"{name}/{version}: the invoice is invalid: {'; '.join(problems)}")
    (directory / INVOICE).write_text(dump_invoice(invoice), encoding="utf-8")
    return directory


def _parcel(file: str, media_type: str, group: str) -> dict[str, Any]:
    return {"label": {"name": file, "mediaType": media_type}, "conditions": {"memberOf": [group]}}


def model_metadata(converted: Converted, name: str) -> dict[str, Any]:
    """The metadata parcel: DESIGN §5's fields for the first input and output, then every tensor's
    schema, the feature names and classes the model knows, and what converted it."""
    inputs, outputs = (_schema(v) for v in (converted.model.graph.input, converted.model.graph.output))
    metadata: dict[str, Any] = {
        "model_name": name, "graph_encoding": "onnx", "execution_target": "cpu",
        "tensor_type": inputs[0]["datatype"], "tensor_dimensions_in": inputs[0]["shape"],
        "tensor_dimensions_out": outputs[0]["shape"],
        "input_name": inputs[0]["name"], "output_name": outputs[0]["name"],
        "inputs": inputs, "outputs": outputs, "framework": converted.framework,
        "converters": {**converted.converters, "mlcloud": mlcloud.__version__},
    }
    if converted.feature_names is not None:
        metadata["feature_names"] = converted.feature_names
    if converted.classes is not None:
        metadata["classes"] = converted.classes
    if converted.source is not None:
        import hashlib

        metadata["source"] = {"name": converted.source[0], "sha256": hashlib.sha256(converted.source[1]).hexdigest()}
    return metadata


def _schema(values: Any) -> list[dict[str, Any]]:
    """Name, datatype (metadata spelling: F32, S64, …) and shape (-1: any size) of graph values."""
    from onnx.helper import tensor_dtype_to_np_dtype

    from mlcloud.interfaces import ValueType

    schema = []
    for value in values:
        tensor = value.type.tensor_type
        datatype = ValueType.from_dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).value.removeprefix("Value")
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        schema.append({"name": value.name, "datatype": datatype, "shape": shape})
    return schema


def base_url(settings: Settings) -> str:
    host, _, port = settings.http_address.rpartition(":")
    return f"http://{'localhost' if host in ('', '0.0.0.0', '[::]') else host}:{port}"


def curl_example(settings: Settings, name: str, converted: Converted, sample: Any) -> str:
    """A request for one row (the sample's first, else zeros): ``/predict`` for a model taking rows
    of features, the Open Inference Protocol's infer for any other input."""
    import numpy as np

    from mlcloud.interfaces import ValueType
    from mlcloud.oip import DATATYPES

    [first] = _schema(converted.model.graph.input[:1])
    shape = [1, *[d if d > 0 else 1 for d in first["shape"][1:]]]
    row = (np.asarray(sample, dtype=np.float64)[:1].reshape(-1).tolist() if sample is not None
           else [0] * int(np.prod(shape)))
    body: dict[str, Any]
    if len(shape) == 2:
        url, body = f"{base_url(settings)}/{name}/predict", {"instances": [row]}
    else:
        url = f"{base_url(settings)}/v2/models/{name}/infer"
        body = {"inputs": [{"name": first["name"], "shape": shape,
                            "datatype": DATATYPES[ValueType("Value" + first["datatype"])], "data": row}]}
    return f"curl -s {url} -H 'content-type: application/json' -d '{json.dumps(body)}'"


async def _connect(settings: Settings) -> CtlClient:
    from mlcloud.lattice.ctl_client import CtlClient

    return await CtlClient.connect(settings)


async def mlinference_links(ctl: CtlClient) -> list[LinkDefinition]:
    from mlcloud.interfaces import MLINFERENCE

    links = [link for link in await ctl.get_links() if link.contract_id == MLINFERENCE]
    if not links:
        raise ContextNotFound("no actor is linked to an mlinference provider; is the app deployed?")
    return links


async def _repository(ctl: CtlClient, link: LinkDefinition, op: RepositoryOp, model: str = "",
                      bindle_id: str = "") -> list[Any]:
    """A model repository operation on ``link``, asked of the host that runs its provider."""
    from mlcloud.lattice.control import RepositoryCommand

    hosts = [inv.host_id for inv in await ctl.get_inventories()
             if any(p.id == link.provider_id for p in inv.providers)]
    if not hosts:
        raise ContextNotFound(f"the mlinference provider {link.provider_id[:8]} runs on no host")
    command = RepositoryCommand(op=op, actor_id=link.actor_id, provider_id=link.provider_id,
                                link_name=link.link_name, model=model, bindle_id=bindle_id)
    return await ctl.model_repository(hosts[0], command)


async def _load(ctl: CtlClient, link: LinkDefinition, name: str, bindle_id: str, deadline: float) -> None:
    """Until READY: the provider's load answers ModelLoading while a big model still loads."""
    from mlcloud.lattice.control import RepositoryOp

    while True:
        try:
            await _repository(ctl, link, RepositoryOp.LOAD, name, bindle_id)
            return
        except ModelLoading:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


__all__ = ["DeployedModel", "Deployment", "deploy", "deploy_async", "experiments", "experiments_async", "models",
           "models_async", "split", "split_async", "undeploy", "undeploy_async", "unsplit"]
