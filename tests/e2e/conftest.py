"""Each end-to-end module runs against its own whole stack (mlcloud.testing.stack), started once
per module; a module that needs the stack or the client set up otherwise defines its own."""

from __future__ import annotations

import httpx
import pytest_asyncio

from mlcloud.testing.stack import running_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        yield client
