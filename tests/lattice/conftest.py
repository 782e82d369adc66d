"""Two connections to the test's NATS server (a module may override ``nats_server``, e.g. with a small max_payload)."""

from __future__ import annotations

import pytest

from mlcloud.lattice.connect import connect


@pytest.fixture
async def nc(nats_server, host_creds):
    client = await connect(nats_server.url, name="test", credentials=host_creds)
    yield client
    await client.close()


@pytest.fixture
async def stage_nc(nats_server, host_creds):
    """A second connection, for a chain's stages: in a lattice they are not the caller's process
    (NATS tells only the requesting connection that nobody serves a subject)."""
    client = await connect(nats_server.url, name="stage", credentials=host_creds)
    yield client
    await client.close()
