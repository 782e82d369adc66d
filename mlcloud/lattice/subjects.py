"""Every NATS subject mlcloud uses, built in one place (wasmCloud 0.x naming)."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def check_token(value: str, what: str) -> str:
    """Subject tokens must not contain dots, spaces or wildcards."""
    if not _TOKEN.match(value):
        from mlcloud.errors import ConfigError

        raise ConfigError(f"{what} {value!r} may only hold letters, digits, '_' and '-'")
    return value


def actor_rpc(lattice: str, actor: str) -> str:
    """Calls to an actor, by public key or call alias; queue group = that name."""
    return f"wasmbus.rpc.{lattice}.{actor}"


def provider_rpc(lattice: str, provider_key: str, link_name: str) -> str:
    return f"wasmbus.rpc.{lattice}.{provider_key}.{link_name}"


def provider_health(lattice: str, provider_key: str, link_name: str) -> str:
    return f"wasmbus.rpc.{lattice}.{provider_key}.{link_name}.health"


def events(lattice: str) -> str:
    return f"wasmbus.evt.{lattice}"


def ctl_prefix(lattice: str) -> str:
    return f"wasmbus.ctl.{lattice}"


def ctl_ping_hosts(lattice: str) -> str:
    return f"{ctl_prefix(lattice)}.ping.hosts"


def ctl_inventory(lattice: str, host_id: str) -> str:
    return f"{ctl_prefix(lattice)}.get.{host_id}.inv"


def ctl_command(lattice: str, host_id: str, command: str) -> str:
    """Host commands: la/sa/scale (actors), lp/sp (providers), stop (the host)."""
    return f"{ctl_prefix(lattice)}.cmd.{host_id}.{command}"


def ctl_links(lattice: str, verb: str) -> str:
    """``put``, ``del`` or ``get``: answered by one host of the lattice (queue group)."""
    return f"{ctl_prefix(lattice)}.linkdefs.{verb}"


def instance_ready(lattice: str, host_id: str) -> str:
    """A child process tells its host it has subscribed and is ready to serve."""
    return f"wasmbus.hostinternal.{lattice}.{host_id}.ready"


def lattice_bucket(lattice: str) -> str:
    """The JetStream key-value bucket holding the lattice's link definitions."""
    return f"LATTICEDATA_{lattice}"
