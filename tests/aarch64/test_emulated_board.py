"""`make test-aarch64`: an emulated arm64 Debian 12 board joins this machine's x86_64 lattice.

The board is a bookworm root for arm64 (tests/aarch64/emulated-root.sh: debootstrap and
qemu-user-static, Debian 12's own) entered with chroot, its binaries run by qemu through
binfmt_misc. It shares this machine's network, so the board reaches the development machine's
servers on 127.0.0.1 as a real board reaches them on the LAN.

1. deploy/coral/install.sh runs in it as on a board: onnxruntime, ai-edge-litert and the rest come
   as aarch64 wheels through pip as this machine has it set up (its index and certificates, carried
   into the root). It writes /etc/mlcloud (host.env, the leaf node's nats.conf) and the board's NATS
   secrets, as `mlcloud nats-creds` made them on the development machine.
2. For each way a board joins (directly on the hub, or through its own NATS leaf node, the
   aarch64 nats-server of the board's venv), the board's `mlcloud host` runs with host.env's
   settings and deploy/coral/app.yaml puts mlinference on it (arch=aarch64). The routes answer
   through the x86_64 side: plus3 on LiteRT, identity on onnxruntime, the cat through /matches.
3. The offline bundle (deploy/coral/bundle.sh) installs into a second prefix with --no-index, as
   on a board without internet whose Python is too old (a stand-in for Mendel's 3.7 makes
   python.sh unpack the bundle's CPython).

Opt-in (never part of `make test`): set MLCLOUD_AARCH64_ROOT to the root; `make test-aarch64`
does. Needs root (chroot, mount). Under emulation it takes minutes (docs/deploy.md has the time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlcloud.bindle.server import create_app
from mlcloud.lattice.auth import NatsAuth
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.oci import EmbeddedRegistry, load_account
from mlcloud.servers import free_port, running_app
from mlcloud.settings import Settings
from mlcloud.testing.stack import PROJECT_DIR, build_models
from mlcloud.up import deploy_app
from tests.deploy.conftest import host_process, stop_process_group
from tests.deploy.test_aarch64_deps import standin_python_archive
from tests.deploy.test_leaf_node import nats_creds, start, wait_log

ROOT = Path(os.environ["MLCLOUD_AARCH64_ROOT"]) if os.environ.get("MLCLOUD_AARCH64_ROOT") else None
EMULATED = 1800.0  # seconds: installs and first model loads under qemu on a busy 2-core machine
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ROOT is None, reason="opt-in: `make test-aarch64` (MLCLOUD_AARCH64_ROOT, an emulated board)"),
    pytest.mark.timeout(3 * EMULATED),  # the install fixture runs in the first test's setup
]

SRC = "/srv/mlcloud"  # the copy of the checkout on the board
PREFIX = "/opt/mlcloud"
AUTH = "/root/board-nats-auth"  # where the folder `mlcloud nats-creds` wrote lands on the board
CORAL_APP = PROJECT_DIR / "deploy" / "coral" / "app.yaml"
CAT = PROJECT_DIR / "images" / "cat.jpg"
CAT_LABELS = {"n02124075 Egyptian cat", "n02123045 tabby, tabby cat", "n02123159 tiger cat"}
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


def in_root(root: Path, env: dict[str, str], *args: str) -> list[str]:
    """A command run on the board: chroot with only ``env`` (nothing of this machine's leaks in)."""
    return ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in {**BASE_ENV, **env}.items()), *args]


def run_in_root(root: Path, env: dict[str, str], *args: str, timeout: float = EMULATED) -> str:
    result = subprocess.run(in_root(root, env, *args), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return result.stdout + result.stderr


def pip_environment(root: Path) -> dict[str, str]:
    """pip's settings on this machine (`pip config list`: pip.conf files and PIP_* variables) as
    PIP_* variables for the board's pip, less what names this machine's own disk (its x86_64 wheel
    folders, constraints); the CA bundle pip trusts is copied in."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    env = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        name, value = key.rpartition(".")[2], value.strip().strip("'\"")
        if name == "cert":
            shutil.copy(value, root / "etc" / "ssl" / "certs" / "dev-machine-ca.crt")
            value = "/etc/ssl/certs/dev-machine-ca.crt"
        else:
            parts = [p for p in value.split() if not p.startswith(("/", "file:"))]
            if not parts or name == "constraint":
                continue
            value = " ".join(parts)
        env["PIP_" + name.upper().replace("-", "_")] = value
    env |= {k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    return env


@pytest.fixture(scope="module")
def board_root() -> Iterator[Path]:
    """The root with /proc and /dev mounted and this checkout's tracked files in SRC.

    Not /sys: this machine's is x86_64's, and onnxruntime's cpuinfo, reading it under qemu,
    crashes the process (SIGSEGV at import); without it onnxruntime warns and runs."""
    assert ROOT is not None
    mounted = []
    for name, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--rbind", "/dev"])):
        target = ROOT / name
        if not os.path.ismount(target):
            subprocess.run(["mount", *args, str(target)], check=True)
            mounted.append(target)
    try:
        shutil.copy("/etc/resolv.conf", ROOT / "etc" / "resolv.conf")
        src = ROOT / SRC.lstrip("/")
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True).stdout
        for name in filter(None, files.decode().split("\0")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_DIR / name, src / name)
        yield ROOT
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


@dataclass
class Board:
    root: Path
    dev_state: Path  # the development machine's state dir: its NATS operator and accounts
    account: str  # the account that signs the development machine's components
    install_seconds: float


@pytest.fixture(scope="module")
def board(board_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Board:
    """install.sh on the board, as docs/deploy.md says: --nats leaf with the folder `mlcloud
    nats-creds` wrote, --trust with the development machine's account."""
    dev_state = tmp_path_factory.mktemp("dev")
    NatsAuth.load_or_create(dev_state / "nats-auth").write_creds()
    auth = board_root / AUTH.lstrip("/")
    shutil.rmtree(auth, ignore_errors=True)
    nats_creds("emulated", auth, dev_state)
    settings = Settings.from_env({})
    account = load_account(settings.keys_dir).public_key
    for stale in ("etc/mlcloud", "var/lib/mlcloud"):  # a fresh board each run; the venv is upgraded
        shutil.rmtree(board_root / stale, ignore_errors=True)
    started = time.monotonic()
    out = run_in_root(board_root, pip_environment(board_root), "bash", f"{SRC}/deploy/coral/install.sh",
                      "--dev", "127.0.0.1", "--nats", "leaf", "--nats-auth", AUTH, "--trust", account,
                      "--coral", "auto", "--prefix", PREFIX, "--no-systemd")
    seconds = time.monotonic() - started
    print(f"\ninstall.sh on the emulated board: {seconds:.0f} s")
    assert "LiteRT (ai-edge-litert) installed" in out, out[-3000:]
    assert "wrote /etc/mlcloud/nats.conf (leaf)" in out and "--label coral=false" in out
    return Board(board_root, dev_state, account, seconds)


def board_settings(root: Path) -> dict[str, str]:
    """/etc/mlcloud/host.env as systemd's EnvironmentFile reads it."""
    env = {}
    for line in (root / "etc" / "mlcloud" / "host.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def test_install_sh_made_an_aarch64_venv_and_the_board_settings(board: Board) -> None:
    out = run_in_root(board.root, {}, f"{PREFIX}/venv/bin/python", "-c",
                      "import platform, onnxruntime, ai_edge_litert, mlcloud; print(platform.machine())")
    assert "aarch64" in out.splitlines(), out  # (onnxruntime warns that cpuinfo finds no /sys)
    env = board_settings(board.root)
    assert env["MLCLOUD_TRUSTED_ISSUERS"] == board.account
    assert env["MLCLOUD_NATS_URL"] == "nats://127.0.0.1:4222" and env["MLCLOUD_REGISTRY"] == "127.0.0.1:5000"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (board.root / "var/lib/mlcloud/nats-auth").iterdir()}
    assert modes == dict.fromkeys(["host.creds", "account.nk", "leaf.creds", "server.conf"], 0o600)


@contextlib.asynccontextmanager
async def dev_machine(tmp_path: Path, board: Board, leaf_listen: int) -> AsyncIterator[tuple[Settings, str]]:
    """The development machine as deploy/run.sh runs it for boards: the hub NATS (operator mode,
    JetStream, leaf-node port), Bindle, the registry and the x86_64 host."""
    auth = NatsAuth.load_or_create(board.dev_state / "nats-auth")
    hub_port = free_port()
    hub = start(tmp_path / "hub.conf", f'server_name: "hub"\nlisten: "127.0.0.1:{hub_port}"\n'
                f'max_payload: 67108864\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                f'leafnodes {{ listen: "127.0.0.1:{leaf_listen}" }}\n' + auth.server_config())
    try:
        await wait_log(tmp_path / "hub.log", "Server is ready")
        settings = Settings.from_env(
            {}, state_dir=tmp_path / "dev-state", nats_url=f"nats://127.0.0.1:{hub_port}",
            nats_creds=auth.directory / "host.creds", nats_account_seed=auth.account_seed_path,
            lattice=f"emulated-{uuid.uuid4().hex[:8]}", registry="127.0.0.1:0",
            # A provider start answers once the instance is ready: minutes under qemu.
            http_address=f"127.0.0.1:{free_port()}", rpc_timeout=60.0, ctl_timeout=EMULATED / 2, health_interval=1.0,
            heartbeat_interval=1.0, restart_backoff=0.2, stop_grace=3.0)
        async with contextlib.AsyncExitStack() as stack:
            bindle = await stack.enter_async_context(running_app(
                create_app(tmp_path / "bindle"), "127.0.0.1:0", "the Bindle server", access_log=None))
            registry = await stack.enter_async_context(EmbeddedRegistry.from_settings(settings))
            settings = settings.replace(bindle_address=bindle, registry=registry.address)
            dev = stack.enter_context(host_process(settings, {"arch": "x86_64"}, tmp_path / "dev-host.log"))
            yield settings, f"nats://127.0.0.1:{hub_port}"
            assert dev.poll() is None, (tmp_path / "dev-host.log").read_text()[-3000:]
    finally:
        stop_process_group(hub, grace=5)


@contextlib.contextmanager
def board_process(root: Path, env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(in_root(root, env, *args), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc, grace=20)


def f32_tensor(values: list[float], dims: list[int]) -> dict:
    return {"dimensions": dims, "valueTypes": ["ValueF32"], "flags": 0,
            "data": list(struct.pack(f"<{len(values)}f", *values))}


async def answer(http: httpx.AsyncClient, method: str, path: str, timeout: float, **kwargs: object) -> httpx.Response:
    """The first final answer: 503 (model loading) and 504 (the board slow to start) are retried."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
            if response.status_code not in (503, 504) or time.monotonic() > deadline:
                return response
        assert time.monotonic() < deadline, f"{path}: no answer in {timeout:.0f} s"
        await asyncio.sleep(1)


@pytest.mark.parametrize("join", ["direct", "leaf"])
async def test_models_on_the_emulated_board_answer_through_the_x86_lattice(
    board: Board, join: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    leaf_listen = free_port()
    models = await asyncio.to_thread(build_models)
    async with dev_machine(tmp_path, board, leaf_listen) as (settings, hub_url):
        with contextlib.ExitStack() as stack:
            nats_url = hub_url
            if join == "leaf":
                # The nats.conf install.sh wrote, on this test's ports (4222 and 7422 may be taken here).
                port = free_port()
                conf = (board.root / "etc/mlcloud/nats.conf").read_text()
                conf = conf.replace('"127.0.0.1:4222"', f'"127.0.0.1:{port}"').replace(":7422", f":{leaf_listen}")
                (board.root / "etc/mlcloud/nats-test.conf").write_text(conf)
                leaf_log = tmp_path / "leaf.log"
                stack.enter_context(board_process(board.root, {}, leaf_log, f"{PREFIX}/venv/bin/nats-server",
                                                  "-c", "/etc/mlcloud/nats-test.conf"))
                await wait_log(leaf_log, "Leafnode connection created", timeout=120)
                nats_url = f"nats://127.0.0.1:{port}"
            env = board_settings(board.root) | {
                "MLCLOUD_LATTICE": settings.lattice, "MLCLOUD_NATS_URL": nats_url,
                "MLCLOUD_BINDLE_URL": settings.effective_bindle_url, "MLCLOUD_REGISTRY": str(settings.registry),
                "MLCLOUD_STATE_DIR": f"/var/lib/mlcloud-{join}", "MLCLOUD_RPC_TIMEOUT": "60",
                "MLCLOUD_READY_TIMEOUT": "900", "MLCLOUD_HEARTBEAT_INTERVAL": "2",
                # The secrets install.sh put in /var/lib/mlcloud/nats-auth.
                "MLCLOUD_NATS_CREDS": "/var/lib/mlcloud/nats-auth/host.creds",
                "MLCLOUD_NATS_ACCOUNT_SEED": "/var/lib/mlcloud/nats-auth/account.nk",
            }
            board_log = tmp_path / "board-host.log"
            host = stack.enter_context(board_process(board.root, env, board_log, f"{PREFIX}/venv/bin/mlcloud", "host",
                                                     "--label", "arch=aarch64", "--label", "coral=false"))
            async with await CtlClient.connect(settings) as ctl:
                async with asyncio.timeout(EMULATED):
                    while len(await ctl.get_hosts()) < 2:
                        assert host.poll() is None, board_log.read_text()[-3000:]
                        await asyncio.sleep(1)
                await deploy_app(settings, CORAL_APP, lambda line: None, models, PROJECT_DIR)
                inventories = {inv.labels["arch"]: inv for inv in await ctl.get_inventories()}
                assert sorted(p.name for p in inventories["aarch64"].providers) == ["mlinference"]
                assert sorted(p.name for p in inventories["x86_64"].providers) == ["httpserver"]

            async with httpx.AsyncClient(base_url=f"http://{settings.http_address}", timeout=120) as http:
                plus3 = await answer(http, "POST", "/plus3", EMULATED, json=f32_tensor([1, 2, 3, 4], [1, 4]))
                assert plus3.status_code == 200, plus3.text
                assert list(np.frombuffer(bytes(plus3.json()["tensor"]["data"]), "<f4")) == [4, 5, 6, 7]
                tensor = f32_tensor([1, 2, 3, 4], [1, 4])
                identity = await answer(http, "POST", "/identity", EMULATED, json=tensor)
                assert identity.status_code == 200, identity.text
                assert identity.json()["tensor"]["data"] == tensor["data"]
                matches = await answer(http, "PUT", "/mobilenetv27/matches", EMULATED, content=CAT.read_bytes())
                assert matches.status_code == 200, matches.text
                assert matches.json()[0]["label"] in CAT_LABELS, matches.json()
            log = board_log.read_text()
            # No Edge TPU here: LiteRT's CPU kernels ran plus3, and the log says so.
            assert "libedgetpu.so.1 is not available" in log and "plus3-tflite on CPU" in log, log[-3000:]
            assert "Traceback" not in log, log[-6000:]
    print(f"\n{join}: the board joined and answered in {time.monotonic() - started:.0f} s")


def test_the_offline_bundle_installs_on_a_board_without_index_or_new_python(board: Board, tmp_path: Path) -> None:
    """bundle.sh's wheels with --no-index into a second prefix; the board's Python is a stand-in
    for Mendel's 3.7, so python.sh unpacks the bundle's CPython. No aarch64 python-build-standalone
    can be fetched here: the bundle's archive is a stand-in of its layout running the root's
    /usr/bin/python3.11 (a real one is unverified here, docs/deploy.md says so)."""
    bundle = board.root / "srv" / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    archive = standin_python_archive(tmp_path / "cpython-3.11-aarch64-unknown-linux-gnu-install_only.tar.gz",
                                     target="/usr/bin/python3.11")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(PROJECT_DIR / "deploy/coral/bundle.sh"), str(bundle), "--python-archive", str(archive)],
                   check=True, capture_output=True, env=env, timeout=900)
    mendel = board.root / "usr" / "local" / "bin" / "python3.7"
    mendel.write_text('#!/bin/sh\ncase "$1" in\n    -c) exec /usr/bin/python3 -c "import sys, platform\n'
                      "sys.version_info = (3, 7, 3, 'final', 0)\nplatform.python_version = lambda: '3.7.3'\n"
                      '$2" ;;\nesac\nexit 1\n')
    mendel.chmod(0o755)
    prefix = "/opt/mlcloud-offline"
    shutil.rmtree(board.root / prefix.lstrip("/"), ignore_errors=True)
    # No index at all: pip may only read the bundle (PIP_NO_INDEX also stops its own look-ups).
    out = run_in_root(board.root, {"PYTHON": "/usr/local/bin/python3.7", "PIP_NO_INDEX": "1"}, "bash", "-c",
                      f"cd /srv/bundle && mlcloud/deploy/coral/install.sh --bundle . --dev 127.0.0.1 "
                      f"--trust {board.account} --prefix {prefix} --no-systemd")
    assert "is 3.7.3, older than 3.11: unpacking the bundle's cpython-3.11-aarch64" in out, out[-3000:]
    assert f"Python {prefix}/python/bin/python3 (3.11." in out
    check = run_in_root(board.root, {}, f"{prefix}/venv/bin/python", "-c",
                        "import ai_edge_litert.interpreter, onnxruntime, mlcloud, platform; print(platform.machine())")
    assert "aarch64" in check.splitlines(), check
