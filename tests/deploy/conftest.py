"""Helpers of the deployment tests: `mlcloud host` subprocesses, clean environments, free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from mlcloud.settings import ENV_PREFIX, Settings

from ..conftest import PROJECT

MLCLOUD = PROJECT / ".venv" / "bin" / "mlcloud"
RUN_SH = PROJECT / "deploy" / "run.sh"


def clean_environ() -> dict[str, str]:
    """os.environ without MLCLOUD_* (a developer's settings must not leak into a test)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def mlcloud_bin() -> str:
    return str(MLCLOUD) if MLCLOUD.exists() else "mlcloud"


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the leader, wait, then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def host_process(settings: Settings, labels: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """One `mlcloud host` joining the settings' lattice, in its own process group, logging to ``log``."""
    args = [mlcloud_bin(), "host"]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    env = {**clean_environ(), **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=PROJECT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
