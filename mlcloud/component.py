"""A component folder's manifest (``component.toml``): what an actor or provider is.

Every folder under ``actors/`` and ``providers/`` holds one::

    [component]
    name = "preprocess"            # also the actor's call alias on the lattice
    kind = "actor"                 # "actor" or "provider"
    version = "0.1.0"              # SemVer
    revision = 1
    module = "preprocess"          # Python module (file or package) in the folder
    capabilities = []              # actors: contracts they may call ("wasmcloud:mlinference", …)
    contract = ""                  # providers: the contract they implement

The module exposes ``component``: an :class:`mlcloud.sdk.Actor` or :class:`mlcloud.sdk.Provider`.
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import semver

from mlcloud.errors import ConfigError
from mlcloud.identity import KeyKind

MANIFEST_NAME = "component.toml"


class ComponentKind(enum.StrEnum):
    ACTOR = "actor"
    PROVIDER = "provider"

    @property
    def key_kind(self) -> KeyKind:
        return KeyKind.ACTOR if self is ComponentKind.ACTOR else KeyKind.PROVIDER


@dataclass(frozen=True)
class ComponentManifest:
    name: str
    kind: ComponentKind
    version: str
    module: str
    revision: int = 0
    capabilities: tuple[str, ...] = field(default_factory=tuple)
    contract: str = ""

    @classmethod
    def load(cls, folder: Path) -> ComponentManifest:
        path = Path(folder) / MANIFEST_NAME
        try:
            data = tomllib.loads(path.read_text())["component"]
        except FileNotFoundError as exc:
            raise ConfigError(f"{path} not found: a component folder needs a {MANIFEST_NAME}") from exc
        except (tomllib.TOMLDecodeError, KeyError) as exc:
            raise ConfigError(f"{path}: invalid manifest ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> ComponentManifest:
        try:
            manifest = cls(
                name=str(data["name"]),
                kind=ComponentKind(data["kind"]),
                version=str(data["version"]),
                module=str(data.get("module") or data["name"]),
                revision=int(data.get("revision", 0)),
                capabilities=tuple(data.get("capabilities", ())),
                contract=str(data.get("contract", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: invalid component manifest ({exc!r})") from exc
        if not semver.Version.is_valid(manifest.version):
            raise ConfigError(f"{source}: version {manifest.version!r} is not SemVer")
        if manifest.kind is ComponentKind.PROVIDER and not manifest.contract:
            raise ConfigError(f"{source}: a provider must name the contract it implements")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "version": self.version,
            "revision": self.revision,
            "module": self.module,
            "capabilities": list(self.capabilities),
            "contract": self.contract,
        }

    def key_path(self, keys_dir: Path) -> Path:
        """Where this component's subject key (its identity on the lattice) is kept."""
        suffix = "module" if self.kind is ComponentKind.ACTOR else "service"
        return keys_dir / f"{self.name}_{suffix}.nk"
