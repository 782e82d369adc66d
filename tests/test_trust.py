"""Trust on by default: which signers a host runs, the trust file, and the development flag.

Against a real docker-registry and a real nats-server: an artifact signed by another account is
refused (``component_refused`` on the lattice) until ``mlcloud trust add`` trusts its signer; an
unsigned local folder starts only on a host started with the development flag, which the host
reports and the washboard shows.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from click.testing import CliRunner
from nats.aio.msg import Msg

from mlcloud import trust
from mlcloud.cli import main
from mlcloud.errors import ConfigError, RequestError
from mlcloud.host.artifacts import UnsignedComponent
from mlcloud.host.host import Host
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.lattice import subjects
from mlcloud.lattice.control import ComponentRefused, EventName
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.lattice.events import decode_event
from mlcloud.oci.build import build
from mlcloud.oci.errors import UntrustedIssuer
from mlcloud.oci.keys import load_account
from mlcloud.oci.push import push
from mlcloud.oci.registry import EmbeddedRegistry
from mlcloud.servers import free_port, running_app
from mlcloud.settings import Settings
from mlcloud.washboard.app import create_washboard
from tests.conftest import COMPONENTS

CALLER = COMPONENTS / "caller"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(tmp_path_factory.mktemp("registry"), f"127.0.0.1:{free_port()}", stop_grace=3.0) as reg:
        yield reg


@pytest.fixture
def keys(tmp_path: Path) -> Settings:
    """Settings whose only purpose is their own keys dir (nothing on the lattice)."""
    return Settings.from_env({}, state_dir=tmp_path / "state", keys_dir=tmp_path / "keys")


class RefusalWatch:
    """The ``component_refused`` events of one lattice, as a subscriber on it sees them."""

    def __init__(self) -> None:
        self.refused: list[ComponentRefused] = []
        self.arrived = asyncio.Event()

    async def on_event(self, msg: Msg) -> None:
        event = decode_event(msg.data)
        if event.name == EventName.COMPONENT_REFUSED:
            assert isinstance(event.data, ComponentRefused)
            self.refused.append(event.data)
            self.arrived.set()

    async def next(self) -> ComponentRefused:
        async with asyncio.timeout(10):
            await self.arrived.wait()
        self.arrived.clear()
        return self.refused[-1]


@pytest.fixture
async def ctl(settings: Settings) -> AsyncIterator[CtlClient]:
    async with await CtlClient.connect(settings) as client:
        yield client


@pytest.fixture
async def refusals(ctl: CtlClient, settings: Settings) -> AsyncIterator[RefusalWatch]:
    watch = RefusalWatch()
    sub = await ctl.nc.subscribe(subjects.events(settings.lattice), cb=watch.on_event)
    yield watch
    await sub.unsubscribe()


async def joined(ctl: CtlClient, host: Host) -> None:
    """Wait until the host answers on the lattice (its subscriptions reached the server)."""
    async with asyncio.timeout(10):
        while host.id not in [h.id for h in await ctl.get_hosts()]:
            await asyncio.sleep(0.1)


# ---- which keys are trusted -------------------------------------------------------------------


def test_nothing_is_trusted_before_the_first_build_then_the_local_account_is(keys: Settings) -> None:
    assert trust.trusted_issuers(keys) == frozenset()
    assert not keys.keys_dir.exists()  # asking does not create a key
    account = load_account(keys.keys_dir).public_key  # what `mlcloud build` does first
    assert trust.trusted_issuers(keys) == {account}


def test_the_trust_file_and_the_setting_add_to_the_local_account(keys: Settings) -> None:
    account = load_account(keys.keys_dir).public_key
    ci, partner = (KeyPair.generate(KeyKind.ACCOUNT).public_key for _ in range(2))
    assert trust.add(keys, ci) and not trust.add(keys, f"  {ci}\n")
    with_setting = keys.replace(trusted_issuers=f" {partner} ,")
    assert trust.trusted_issuers(with_setting) == {account, ci, partner}
    assert trust.remove(keys, ci) and not trust.remove(keys, ci)
    assert trust.trusted_issuers(with_setting) == {account, partner}


def test_the_trust_file_is_private_and_refuses_what_is_not_an_account_key(keys: Settings) -> None:
    key = KeyPair.generate(KeyKind.ACCOUNT).public_key
    trust.add(keys, key)
    path = trust.trust_file(keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    seed = KeyPair.generate(KeyKind.ACCOUNT).seed
    with pytest.raises(RequestError, match="seed") as refused:
        trust.add(keys, seed)
    assert seed[:4] not in refused.value.message  # a secret pasted by mistake is not echoed
    for wrong in (KeyPair.generate(KeyKind.ACTOR).public_key, "AOTHERACCOUNT", key[:-1]):
        with pytest.raises(RequestError):
            trust.add(keys, wrong)
    assert trust.added_keys(keys) == [key]
    # A hand-edited line that is no key fails every pull loudly rather than trusting less or more.
    path.write_text(f"{key}\nnot-a-key  # typo\n")
    with pytest.raises(ConfigError, match="line 2"):
        trust.trusted_issuers(keys)
    with pytest.raises(ConfigError, match="MLCLOUD_TRUSTED_ISSUERS"):
        trust.configured_keys(keys.replace(trusted_issuers="MXYZ"))


def test_trust_commands_add_list_and_remove(keys: Settings) -> None:
    runner = CliRunner()
    env = {"MLCLOUD_KEYS_DIR": str(keys.keys_dir), "MLCLOUD_TRUSTED_ISSUERS": ""}
    account = load_account(keys.keys_dir).public_key
    partner = KeyPair.generate(KeyKind.ACCOUNT).public_key
    added = runner.invoke(main, ["trust", "add", partner], env=env)
    assert added.exit_code == 0 and "trusted" in added.output, added.output
    listed = runner.invoke(main, ["trust", "list", "--json"], env=env)
    assert msgspec.json.decode(listed.output) == [
        {"key": account, "source": "local account"},
        {"key": partner, "source": f"trust file {trust.trust_file(keys)}"},
    ]
    own = runner.invoke(main, ["trust", "remove", account], env=env)
    assert own.exit_code == 1 and "always trusted" in own.output
    wrong = runner.invoke(main, ["trust", "add", "MNOTANACCOUNT"], env=env)
    assert wrong.exit_code == 1 and "RequestError" in wrong.output and "Traceback" not in wrong.output
    assert runner.invoke(main, ["trust", "remove", partner], env=env).exit_code == 0
    assert partner not in runner.invoke(main, ["trust", "list"], env=env).output


# ---- a host refuses what it does not trust --------------------------------------------------------


async def test_an_artifact_of_an_untrusted_signer_is_refused_until_trust_add(
    settings: Settings, registry: EmbeddedRegistry, ctl: CtlClient, refusals: RefusalWatch, tmp_path: Path
) -> None:
    # Someone else's machine: its own account signs the caller actor.
    stranger_keys = tmp_path / "stranger-keys"
    settings = settings.replace(registry=registry.address, dev=False)
    built = await asyncio.to_thread(build, CALLER, stranger_keys, tmp_path / "build")
    ref = (await asyncio.to_thread(push, built, settings, "mlcloud/caller:stranger")).pinned
    load_account(settings.keys_dir)  # this machine's own account exists, as after `make run`

    async with Host(settings) as host:
        await joined(ctl, host)
        with pytest.raises(UntrustedIssuer, match="does not trust"):
            await ctl.start_actor(host.id, ref)
        event = await refusals.next()
        assert (event.host_id, event.image_ref, event.kind) == (host.id, ref, "UntrustedIssuer")
        assert event.issuer == built.issuer_key and f"mlcloud trust add {built.issuer_key}" in event.reason
        assert (await ctl.get_inventory(host.id)).actors == []

        # The user trusts that signer, with the CLI, while the host runs: the next start runs it.
        env = {**os.environ, "MLCLOUD_KEYS_DIR": str(settings.keys_dir), "MLCLOUD_TRUSTED_ISSUERS": ""}
        added = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "mlcloud.cli", "trust", "add", built.issuer_key],
            env=env, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        reply = await ctl.start_actor(host.id, ref)
        assert reply.instances == 1 and reply.actor_id == built.subject_key
        assert [a.name for a in (await ctl.get_inventory(host.id)).actors] == ["caller"]


async def test_a_local_folder_is_refused_without_the_dev_flag_and_starts_with_it(
    settings: Settings, ctl: CtlClient, refusals: RefusalWatch
) -> None:
    async with Host(settings.replace(dev=False), labels={"role": "prod"}) as prod:
        await joined(ctl, prod)
        with pytest.raises(UnsignedComponent, match="development flag"):
            await ctl.start_actor(prod.id, str(CALLER))
        event = await refusals.next()
        assert (event.host_id, event.image_ref, event.kind) == (prod.id, str(CALLER), "UnsignedComponent")
        assert event.issuer == ""  # no one signed it
        assert (await ctl.get_inventory(prod.id)).actors == []
        assert [h.dev for h in await ctl.get_hosts()] == [False]

    async with Host(settings, labels={"role": "dev"}) as dev:  # the suite's settings: dev=True
        await joined(ctl, dev)
        assert (await ctl.start_actor(dev.id, str(CALLER))).instances == 1
        assert [h.dev for h in await ctl.get_hosts()] == [True]
        assert (await ctl.get_inventory(dev.id)).dev


async def test_the_washboard_shows_which_hosts_run_in_development_mode(settings: Settings) -> None:
    app = create_washboard(settings, token="unused", poll_interval=0.3)
    async with (
        Host(settings, labels={"role": "dev"}) as dev,
        Host(settings.replace(dev=False), labels={"role": "prod"}) as prod,
        running_app(app, "127.0.0.1:0", "the washboard", access_log=None) as address,
        aiohttp.ClientSession() as http,
    ):
        flags: dict[str, bool] = {}
        async with asyncio.timeout(15):
            while len(flags) < 2:
                async with http.get(f"http://{address}/api/hosts") as response:
                    assert response.status == 200
                    flags = {h["id"]: h["dev"] for h in await response.json()}
                await asyncio.sleep(0.2)
    assert flags == {dev.id: True, prod.id: False}
