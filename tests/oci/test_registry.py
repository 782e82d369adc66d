"""The embedded registry: our own loopback config, a clear error for a taken port, clean stops."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlcloud.errors import PortInUse
from mlcloud.oci import registry as registry_mod
from mlcloud.oci.errors import RegistryNotInstalled
from mlcloud.oci.registry import EmbeddedRegistry, RegistryState

from .conftest import free_port


def _get_v2(url: str) -> int:
    with urllib.request.urlopen(f"{url}/v2/", timeout=2) as r:
        return r.status


def test_registry_starts_on_loopback_with_our_config_and_stops(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "registry", f"127.0.0.1:{free_port()}")
    with reg:
        assert reg.state is RegistryState.RUNNING
        assert _get_v2(reg.url) == 200
        config = yaml.safe_load(reg.config_path.read_text())
        assert config["http"]["addr"] == reg.address
        assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry" / "storage")
        assert config["storage"]["delete"]["enabled"] is True
        assert "auth" not in config
        proc = reg._proc
    assert reg.state is RegistryState.STOPPED
    assert proc is not None and proc.returncode is not None
    with pytest.raises(OSError):
        _get_v2(reg.url)


def test_taken_port_is_named_in_the_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            EmbeddedRegistry(tmp_path, f"127.0.0.1:{port}").start()


async def test_async_context_manager_starts_and_stops(tmp_path: Path) -> None:
    async with EmbeddedRegistry(tmp_path, f"127.0.0.1:{free_port()}") as reg:
        assert reg.state is RegistryState.RUNNING
    assert reg.state is RegistryState.STOPPED


def test_missing_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(registry_mod, "_FALLBACK_PATHS", ())
    with pytest.raises(RegistryNotInstalled, match="apt-get install -y docker-registry"):
        registry_mod.find_registry_binary()
