"""The `mlcloud` command as users run it: `up` in the foreground, `ctl` and `app deploy` beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlcloud.servers import free_port
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

MLCLOUD = [sys.executable, "-m", "mlcloud.cli"]
ECHO_APP = FIXTURES / "apps" / "echo.yaml"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    nats_port = free_port()
    return {
        **os.environ,
        "MLCLOUD_STATE_DIR": str(tmp_path / "state"),
        "MLCLOUD_NATS_PORT": str(nats_port),
        "MLCLOUD_NATS_URL": "",
        "MLCLOUD_BINDLE_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_REGISTRY": f"127.0.0.1:{free_port()}",
        "MLCLOUD_WASHBOARD_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_LATTICE": "clitest",
    }


def mlcloud(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    nats = f"nats://127.0.0.1:{env['MLCLOUD_NATS_PORT']}"
    result = subprocess.run([*MLCLOUD, *args], env={**env, "MLCLOUD_NATS_URL": nats}, capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"mlcloud {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def up(env: dict[str, str]):
    """`mlcloud up --no-washboard --dev` in the foreground of its own process group (the echo app is local folders)."""
    process, lines = start_up(["--no-washboard", "--dev", "--label", "zone=test"], env, timeout=60)
    yield process, lines
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_up(args: list[str], env: dict[str, str], *, timeout: float, cwd: Path | None = None,
             ) -> tuple[subprocess.Popen[str], list[str]]:
    """`mlcloud up ARGS` in its own process group, once it says it is up; (process, lines so far)."""
    process = subprocess.Popen([*MLCLOUD, "up", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "mlcloud is up" in line:
            break
        if not line and process.poll() is not None:
            raise AssertionError("mlcloud up exited:\n" + "".join(lines))
    return process, lines


def test_up_then_inventory_shows_the_host_and_what_runs(env, up):
    process, lines = up
    output = "".join(lines)
    for name in ("NATS (JetStream)", "Bindle", "OCI registry", "host"):
        assert name in output
    deployed = mlcloud(env, "app", "deploy", str(ECHO_APP))
    assert "link caller → echo" in deployed.stdout
    again = mlcloud(env, "app", "deploy", str(ECHO_APP))
    assert "up to date" in again.stdout  # deploying twice changes nothing

    inventory = json.loads(mlcloud(env, "ctl", "get", "inventory", "--json").stdout)
    assert len(inventory) == 1 and inventory[0]["labels"]["zone"] == "test"
    actors = {a["name"]: a for a in inventory[0]["actors"]}
    assert len(actors["caller"]["instances"]) == 2
    assert [p["name"] for p in inventory[0]["providers"]] == ["echo"]
    table = mlcloud(env, "ctl", "get", "inventory").stdout
    assert "caller" in table and "echo (default)" in table and "healthy" in table

    links = json.loads(mlcloud(env, "ctl", "get", "links", "--json").stdout)
    assert links[0]["values"] == {"greeting": "hello"}
    # Secrets in link values are masked in every ctl output, tables and --json alike.
    mlcloud(env, "ctl", "link", "put", "caller", "echo", "test:echo", "greeting=hello", "api_keys=k-cli-secret")
    links = json.loads(mlcloud(env, "ctl", "get", "links", "--json").stdout)
    assert links[0]["values"] == {"greeting": "hello", "api_keys": "••••••"}
    assert "k-cli-secret" not in mlcloud(env, "ctl", "get", "links").stdout
    mlcloud(env, "ctl", "scale", "actor", "caller", "1")
    inventory = json.loads(mlcloud(env, "ctl", "get", "inventory", "--json").stdout)
    assert len(inventory[0]["actors"][0]["instances"]) == 1

    children = psutil.Process(process.pid).children(recursive=True)
    assert children
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole group
    assert process.wait(timeout=30) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_errors_are_one_clear_line(env, up):
    result = mlcloud(env, "ctl", "stop", "actor", "nosuch", check=False)
    assert result.returncode == 1
    assert "no actor 'nosuch' runs on the lattice" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_clash_names_the_port(env, up):
    result = subprocess.run([*MLCLOUD, "up", "--no-washboard"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {env['MLCLOUD_NATS_PORT']}" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctl_without_a_lattice_says_so(env):
    result = mlcloud(env, "ctl", "get", "hosts", check=False)
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr
