"""The whole mlcloud system on free loopback ports, for integration tests and benchmarks.

:func:`running_stack` starts the real parts, as ``mlcloud up --app deploy/app.yaml`` does, but
with every port free and every file under one directory (instances' logs too, in ``logs/``, one
file each, unless ``log_dir=None``: :func:`mlcloud.host.runner.instance_log_file`): nats-server,
the Bindle server, the docker-registry, one host, then builds the models (idempotent, into the
project's ``models/build``), pushes them, publishes the components as signed OCI artifacts,
deploys the app manifest and waits until ``/v2/health/ready`` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlcloud.host.host import Host
from mlcloud.lattice.auth import AUTH_DIR, NatsAuth
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.nats_server import NatsServer
from mlcloud.servers import free_port, running_app
from mlcloud.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parents[2]
APP_MANIFEST = PROJECT_DIR / "deploy" / "app.yaml"
MODELS_DIR = PROJECT_DIR / "models"


@dataclass
class Stack:
    settings: Settings
    host: Host
    ctl: CtlClient
    http_url: str
    nats: NatsServer

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async with httpx.AsyncClient(base_url=self.http_url) as client:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/v2/health/ready")).status_code == 200:
                            return
                    await asyncio.sleep(0.1)

    async def deploy(self, *args: Any, **kwargs: Any) -> Any:
        """``mlcloud.deploy`` against this stack, quietly, off the event loop (it blocks)."""
        import mlcloud

        return await asyncio.to_thread(mlcloud.deploy, *args, settings=self.settings,
                                       progress=lambda _: None, **kwargs)


def build_models(models_dir: Path = MODELS_DIR) -> Path:
    """Build the model bundles if they are missing or stale; return the build directory."""
    from mlcloud.modelbuild.bundles import build_all

    out = models_dir / "build"
    build_all(models_dir, out)
    return out


@contextlib.asynccontextmanager
async def running_stack(state_dir: Path, *, manifest: Path = APP_MANIFEST, **overrides: Any) -> AsyncIterator[Stack]:
    from mlcloud.bindle.server import create_app
    from mlcloud.oci import EmbeddedRegistry
    from mlcloud.up import deploy_app

    models_build = await asyncio.to_thread(build_models)
    http_port = free_port()
    settings = Settings.from_env(
        {},
        state_dir=state_dir,
        keys_dir=state_dir / "keys",
        lattice=f"stack-{uuid.uuid4().hex[:8]}",
        registry="127.0.0.1:0",
        http_address=f"127.0.0.1:{http_port}",
        health_interval=1.0,
        restart_backoff=0.2,
        **{"log_dir": state_dir / "logs", **overrides},
    )
    async with contextlib.AsyncExitStack() as stack:
        auth = NatsAuth.load_or_create(state_dir / AUTH_DIR)
        host_creds, ctl_creds = auth.write_creds()
        nats = await stack.enter_async_context(NatsServer(state_dir / "nats", port=0, auth=auth))
        bindle_address = await stack.enter_async_context(running_app(
            create_app(state_dir / "bindle"), "127.0.0.1:0", "the Bindle server", access_log=None))
        settings = settings.replace(nats_url=nats.url, bindle_address=bindle_address)
        registry = await stack.enter_async_context(EmbeddedRegistry.from_settings(settings))
        settings = settings.replace(registry=registry.address)
        host = await stack.enter_async_context(Host(
            settings.replace(nats_creds=host_creds, nats_account_seed=auth.account_seed_path), {"stack": "test"}))
        settings = settings.replace(nats_creds=ctl_creds)
        ctl = await CtlClient.connect(settings)
        stack.push_async_callback(ctl.close)
        await deploy_app(settings, manifest, lambda line: None, models_build, PROJECT_DIR)
        running = Stack(settings, host, ctl, f"http://127.0.0.1:{http_port}", nats)
        await running.wait_ready()
        yield running
