"""deploy/run.sh on this machine: all → status → stop, every port free and the state in tmp."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from mlcloud.servers import free_port

from .conftest import PROJECT, RUN_SH, clean_environ


def run_sh(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(RUN_SH), *args], env=env, cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def pids(state: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((state / "run").glob("*.pid")) if p.read_text().strip()]


def kill_groups(group_ids: list[int]) -> None:
    for pgid in group_ids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        "MLCLOUD_STATE_DIR": str(tmp_path / "state"),
        "MLCLOUD_LATTICE": f"runsh-{uuid.uuid4().hex[:8]}",
        "MLCLOUD_NATS_PORT": str(free_port()),
        "MLCLOUD_BINDLE_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_REGISTRY": f"127.0.0.1:{free_port()}",
        "MLCLOUD_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_WASHBOARD_ADDRESS": f"127.0.0.1:{free_port()}",
        "MLCLOUD_START_TIMEOUT": "150",
        "MLCLOUD_STOP_TIMEOUT": "15",
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_all_then_status_then_stop(env: dict[str, str]) -> None:
    state = Path(env["MLCLOUD_STATE_DIR"])
    started: list[int] = []
    try:
        result = run_sh(env, "all", timeout=240)
        started = pids(state)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "up and healthy" in result.stdout
        assert len(started) == 2  # the NATS hub and `mlcloud up`, each leading its process group

        result = run_sh(env, "status")
        assert result.returncode == 0, result.stdout + result.stderr
        for part in ("nats", "mlcloud", "bindle", "registry", "washboard", "http", "models"):
            assert any(line.split()[:2] == [part, "ok"] for line in result.stdout.splitlines()), result.stdout
        assert "mlinference" in result.stdout and "healthy" in result.stdout

        http = f"http://{env['MLCLOUD_HTTP_ADDRESS']}"
        assert httpx.get(f"{http}/v2/health/ready", timeout=10).status_code == 200

        result = run_sh(env, "stop")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stopped" in result.stdout
        assert not any(group_alive(pgid) for pgid in started), "processes left after stop"
        assert not list((state / "run").glob("*.pid"))

        result = run_sh(env, "status")
        assert result.returncode == 3 and "not running" in result.stdout
    finally:
        # Whatever happened, nothing this test started outlives it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            run_sh(env, "stop", timeout=40)
        kill_groups(started or (pids(state) if (state / "run").is_dir() else []))


def test_help_and_unknown_command(env: dict[str, str]) -> None:
    result = run_sh(env, "help")
    assert result.returncode == 0
    for command in ("all", "start", "stop", "status", "logs", "push", "bindle-create", "link", "clean"):
        assert f"\n  {command}" in result.stdout
    assert f"MLCLOUD_STATE_DIR={env['MLCLOUD_STATE_DIR']}" in result.stdout  # env overrides deploy/env
    result = run_sh(env, "frobnicate")
    assert result.returncode == 2 and "usage: deploy/run.sh" in result.stderr


def test_status_and_stop_when_nothing_runs(env: dict[str, str]) -> None:
    assert run_sh(env, "status").returncode == 3
    result = run_sh(env, "stop")
    assert result.returncode == 0 and "nothing was running" in result.stdout


def test_clean_refuses_the_project_directory(env: dict[str, str]) -> None:
    result = run_sh({**env, "MLCLOUD_STATE_DIR": str(PROJECT)}, "clean")
    assert result.returncode != 0 and "refusing" in result.stderr
    assert (PROJECT / "deploy" / "run.sh").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_scripts_are_shellcheck_clean() -> None:
    scripts = ["deploy/run.sh", "deploy/env", "deploy/coral/install.sh", "deploy/coral/dev.env",
               "deploy/coral/python.sh", "deploy/coral/bundle.sh", "tests/aarch64/emulated-root.sh"]
    result = subprocess.run(["shellcheck", "-x", *scripts], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
