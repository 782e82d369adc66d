"""wadm-style application manifests, reconciled onto the lattice.

A manifest (YAML, ``core.oam.dev/v1beta1`` ``Application``) lists components: actors
(``type: actor``) and providers (``type: capability``), each with an ``image`` (an OCI reference
or a component folder relative to the manifest), a ``spreadscaler`` trait (replicas and label
requirements that choose hosts) and ``linkdef`` traits on actors (target provider + values).
``${VAR}`` and ``${VAR:-default}`` in strings are taken from the environment.

:func:`deploy` compares the manifest with what the hosts report and changes only what differs,
so deploying twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcloud.component import ComponentKind
from mlcloud.errors import ConfigError
from mlcloud.host.artifacts import ResolvedComponent, is_local_ref, resolve
from mlcloud.lattice.control import DEFAULT_LINK_NAME, ComponentInfo, HostInventory
from mlcloud.lattice.ctl_client import CtlClient
from mlcloud.settings import Settings

log = logging.getLogger(__name__)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LinkSpec:
    target: str
    values: dict[str, str]
    link_name: str = DEFAULT_LINK_NAME


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    kind: ComponentKind
    image: str
    replicas: int = 1
    requirements: dict[str, str] = field(default_factory=dict)
    contract: str = ""
    link_name: str = DEFAULT_LINK_NAME
    config: dict[str, Any] = field(default_factory=dict)
    links: tuple[LinkSpec, ...] = ()

    def placeable_on(self, host: HostInventory) -> bool:
        return all(str(host.labels.get(k)) == str(v) for k, v in self.requirements.items())


@dataclass(frozen=True)
class AppManifest:
    name: str
    version: str
    components: tuple[ComponentSpec, ...]

    @classmethod
    def load(cls, path: Path, environ: dict[str, str] | None = None) -> AppManifest:
        path = Path(path)
        try:
            raw = yaml.safe_load(_substitute(path.read_text(), environ or dict(os.environ)))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read app manifest {path}: {exc}") from exc
        return cls.parse(raw, base_dir=path.parent, source=str(path))

    @classmethod
    def parse(cls, raw: Any, *, base_dir: Path, source: str = "manifest") -> AppManifest:
        if not isinstance(raw, dict) or raw.get("kind") != "Application":
            raise ConfigError(f"{source}: not an Application manifest (kind: Application)")
        meta = raw.get("metadata") or {}
        components = []
        for item in (raw.get("spec") or {}).get("components") or []:
            components.append(_parse_component(item, base_dir, source))
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: component names must be unique")
        for component in components:
            for link in component.links:
                target = next((c for c in components if c.name == link.target), None)
                if target is None or target.kind is not ComponentKind.PROVIDER:
                    raise ConfigError(
                        f"{source}: {component.name} links to {link.target!r}, which is not a provider here"
                    )
        return cls(
            name=str(meta.get("name") or "app"),
            version=str((meta.get("annotations") or {}).get("version", "")),
            components=tuple(components),
        )


def _substitute(text: str, environ: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"manifest uses ${{{name}}}, which is not set")

    return _VAR.sub(value, text)


def _parse_component(item: dict[str, Any], base_dir: Path, source: str) -> ComponentSpec:
    try:
        name = str(item["name"])
        kind = {"actor": ComponentKind.ACTOR, "capability": ComponentKind.PROVIDER}[item["type"]]
        props = item.get("properties") or {}
        image = str(props["image"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{source}: component needs name, type (actor|capability) and properties.image ({exc})"
        ) from exc
    local = base_dir / image
    if not image.startswith(("/", "~")) and local.is_dir():
        image = str(local.resolve())
    try:
        replicas, requirements, links = _parse_traits(name, item.get("traits") or [], source)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{source}: invalid traits on {name}: {exc!r}") from exc
    return ComponentSpec(
        name=name, kind=kind, image=image, replicas=replicas, requirements=requirements,
        contract=str(props.get("contract", "")), link_name=str(props.get("link_name", DEFAULT_LINK_NAME)),
        config=dict(props.get("config") or {}), links=tuple(links),
    )


def _label(value: Any) -> str:
    """A label value as hosts report it: YAML reads ``coral: true`` as a bool, hosts say "true"."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse_traits(name: str, traits: list[Any], source: str) -> tuple[int, dict[str, str], list[LinkSpec]]:
    """Replicas and label requirements (``spreadscaler``) and links (``linkdef``) of a component."""
    replicas, requirements, links = 1, {}, []
    for trait in traits:
        tprops = trait.get("properties") or {}
        if trait.get("type") == "spreadscaler":
            replicas = int(tprops.get("replicas", 1))
            for spread in tprops.get("spread") or []:
                requirements.update({str(k): _label(v) for k, v in (spread.get("requirements") or {}).items()})
        elif trait.get("type") == "linkdef":
            values = {str(k): str(v) for k, v in (tprops.get("values") or {}).items()}
            links.append(LinkSpec(str(tprops["target"]), values, str(tprops.get("link_name", DEFAULT_LINK_NAME))))
        else:
            raise ConfigError(f"{source}: unknown trait {trait.get('type')!r} on {name}")
    return replicas, requirements, links


async def deploy(
    manifest: AppManifest, ctl: CtlClient, settings: Settings, *, report: Callable[[str], None] = log.info
) -> list[str]:
    """Reconcile the lattice to ``manifest``; return the changes made (empty when none)."""
    changes: list[str] = []
    inventories = await ctl.get_inventories()
    if not inventories:
        raise ConfigError("no host answers on this lattice: start one with `mlcloud up` or `mlcloud host`")
    resolved: dict[str, ResolvedComponent] = {}
    for spec in manifest.components:
        # Only to learn keys and contracts: the host that starts it decides whether an unsigned folder runs.
        component = resolved[spec.name] = await resolve(spec.image, settings, allow_unsigned=True)
        if component.kind is not spec.kind:
            raise ConfigError(f"{spec.name}: {spec.image} is a {component.kind}, not a {spec.kind}")
        hosts = [inv for inv in inventories if spec.placeable_on(inv)]
        if not hosts:
            raise ConfigError(f"{spec.name}: no host has labels {spec.requirements}")
        if spec.kind is ComponentKind.PROVIDER:
            changes += await _place_provider(spec, component, hosts, ctl, report)
        else:
            changes += await _place_actor(spec, component, hosts, ctl, report)
    for spec in manifest.components:
        for link in spec.links:
            target = next(c for c in manifest.components if c.name == link.target)
            contract = target.contract or resolved[target.name].manifest.contract
            reply = await ctl.put_link(resolved[spec.name].key, resolved[target.name].key, contract,
                                       link.link_name, link.values)
            if reply.changed:
                changes.append(f"link {spec.name} → {target.name} ({link.link_name})")
                report(changes[-1])
    return changes


def _outdated(running: ComponentInfo, component: ResolvedComponent) -> bool:
    """True when a running component is another build of the code the manifest names now."""
    return bool(component.digest) and running.digest != component.digest


async def _place_provider(
    spec: ComponentSpec, component: ResolvedComponent, hosts: list[HostInventory], ctl: CtlClient,
    report: Callable[[str], None],
) -> list[str]:
    changes = []
    running = []
    for host in hosts:
        short = host.host_id[:8]
        for provider in host.providers:
            if provider.id != component.key or provider.link_name != spec.link_name:
                continue
            if _outdated(provider, component) or provider.config != spec.config:
                report(f"replacing provider {spec.name} on host {short} (new code or config)…")
                await ctl.stop_provider(host.host_id, component.key, spec.link_name)
                changes.append(f"provider {spec.name} stopped on {short} to be replaced")
            else:
                running.append(host)
    for host in [h for h in hosts if h not in running][: max(spec.replicas - len(running), 0)]:
        report(f"starting provider {spec.name} on host {host.host_id[:8]}…")
        await ctl.start_provider(host.host_id, spec.image, spec.link_name, spec.config)
        changes.append(f"provider {spec.name} started on {host.host_id[:8]}")
    return changes


async def _place_actor(
    spec: ComponentSpec, component: ResolvedComponent, hosts: list[HostInventory], ctl: CtlClient,
    report: Callable[[str], None],
) -> list[str]:
    """Spread ``replicas`` evenly over the matching hosts; replace instances of older code."""
    changes = []
    key = component.key
    for index, host in enumerate(hosts):
        short = host.host_id[:8]
        want = spec.replicas // len(hosts) + (1 if index < spec.replicas % len(hosts) else 0)
        running = [a for a in host.actors if a.id == key]
        if any(_outdated(actor, component) for actor in running):
            report(f"replacing actor {spec.name} on host {short} (new code)…")
            await ctl.stop_actor(host.host_id, key)
            changes.append(f"actor {spec.name} stopped on {short} to be replaced")
            running = []
        have = sum(len(a.instances) for a in running)
        if want != have:
            report(f"scaling actor {spec.name} on host {short}: {have} → {want}…")
            await ctl.scale_actor(host.host_id, key, want, actor_ref=spec.image)
            changes.append(f"actor {spec.name} on {short}: {have} → {want} instances")
    return changes


__all__ = ["AppManifest", "ComponentSpec", "LinkSpec", "deploy", "is_local_ref"]
