"""Fixtures for the artifact tests: tiny component folders and a real docker-registry per module."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlcloud.oci.registry import EmbeddedRegistry
from mlcloud.settings import Settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_component(
    folder: Path,
    name: str = "echo",
    kind: str = "actor",
    version: str = "0.1.0",
    capabilities: tuple[str, ...] = ("wasmcloud:mlinference",),
    contract: str = "",
) -> Path:
    """A small but not flat component: manifest, module, a sub-package, data, caches to skip."""
    folder.mkdir(parents=True, exist_ok=True)
    caps = ", ".join(f'"{c}"' for c in capabilities)
    (folder / "component.toml").write_text(
        "[component]\n"
        f'name = "{name}"\nkind = "{kind}"\nversion = "{version}"\nrevision = 3\n'
        f'module = "{name}"\ncapabilities = [{caps}]\ncontract = "{contract}"\n'
    )
    (folder / f"{name}.py").write_text("from .helpers.util import double\n\ncomponent = None\n")
    (folder / "helpers").mkdir(exist_ok=True)
    (folder / "helpers" / "__init__.py").write_text("")
    (folder / "helpers" / "util.py").write_text("def double(x):\n    return 2 * x\n")
    (folder / "labels.txt").write_bytes(bytes(range(256)))
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / f"{name}.cpython-311.pyc").write_bytes(b"cache")
    (folder / "helpers" / "util.pyc").write_bytes(b"cache")
    return folder


@pytest.fixture
def component(tmp_path: Path) -> Path:
    return write_component(tmp_path / "src" / "echo")


@pytest.fixture
def make_component(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "echo", **kwargs: object) -> Path:
        return write_component(tmp_path / "src" / name, name=name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRegistry]:
    root = tmp_path_factory.mktemp("registry")
    with EmbeddedRegistry(root, f"127.0.0.1:{free_port()}", stop_grace=3.0) as reg:
        yield reg


@pytest.fixture
def settings(tmp_path: Path, registry: EmbeddedRegistry) -> Settings:
    return Settings(state_dir=tmp_path / "state", keys_dir=tmp_path / "state" / "keys", registry=registry.address)
