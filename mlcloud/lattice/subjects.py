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


# Calls carry their caller as the subject's last token, so nats-server's publish permissions say
# who may call as whom (mlcloud/lattice/auth.py): ``wasmbus.rpc.{target}.{caller}``. A *target*
# is where calls go, without the caller: ``{lattice}.{actor}`` (by public key or call alias) or
# ``{lattice}.{contract token}.{provider key}.{link name}``. A chain's later stages are called on
# ``wasmbus.fwd.{target}.{forwarding stage}`` with the originator's grant (mlcloud/lattice/grants.py).
RPC = "wasmbus.rpc"
FORWARD = "wasmbus.fwd"


def contract_token(contract: str) -> str:
    """A contract id as one subject token: ``wasmcloud:mlinference`` → ``wasmcloud_mlinference``."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", contract)


def actor_target(lattice: str, actor: str) -> str:
    """Calls to an actor, by public key or call alias; its instances share them (queue group)."""
    return f"{lattice}.{actor}"


def provider_target(lattice: str, contract: str, provider_key: str, link_name: str) -> str:
    return f"{lattice}.{contract_token(contract)}.{provider_key}.{link_name}"


def call(target: str, caller: str) -> str:
    """The subject of a call to ``target`` made by ``caller`` (a component or host key)."""
    return f"{RPC}.{target}.{caller}"


def forwarded(target: str, stage: str) -> str:
    """The subject of a chain's call to ``target``, sent on by the stage ``stage``."""
    return f"{FORWARD}.{target}.{stage}"


def served(target: str) -> tuple[str, str]:
    """What the servers of ``target`` subscribe to: its calls and its forwarded calls."""
    return f"{RPC}.{target}.*", f"{FORWARD}.{target}.*"


def sender(subject: str) -> tuple[str, bool]:
    """(the caller or forwarding stage a call's subject names, whether it is a forwarded call)."""
    return subject.rpartition(".")[2], subject.startswith(FORWARD + ".")


def target_of(subject: str) -> str:
    """The target a call's or forwarded call's subject goes to (without its caller or stage)."""
    for prefix in (RPC + ".", FORWARD + "."):
        if subject.startswith(prefix):
            return subject[len(prefix):].rpartition(".")[0]
    return subject


def events(lattice: str) -> str:
    return f"wasmbus.evt.{lattice}"


def ctl_prefix(lattice: str) -> str:
    return f"wasmbus.ctl.{lattice}"


def ctl_ping_hosts(lattice: str) -> str:
    return f"{ctl_prefix(lattice)}.ping.hosts"


def ctl_inventory(lattice: str, host_id: str) -> str:
    return f"{ctl_prefix(lattice)}.get.{host_id}.inv"


def ctl_models(lattice: str, host_id: str) -> str:
    """The models of the mlinference providers a host runs, which it asks them for as itself."""
    return f"{ctl_prefix(lattice)}.get.{host_id}.models"


def ctl_command(lattice: str, host_id: str, command: str) -> str:
    """Host commands: la/sa/scale (actors), lp/sp (providers), stop (the host)."""
    return f"{ctl_prefix(lattice)}.cmd.{host_id}.{command}"


def ctl_links(lattice: str, verb: str) -> str:
    """``put``, ``del`` or ``get``: answered by one host of the lattice (queue group)."""
    return f"{ctl_prefix(lattice)}.linkdefs.{verb}"


def instance_ready(lattice: str, host_id: str) -> str:
    """A child process tells its host it has subscribed and is ready to serve."""
    return f"wasmbus.hostinternal.{lattice}.{host_id}.ready"


def instance_died(lattice: str) -> str:
    """A host says one of its instances died, naming the targets it served (callers listen)."""
    return f"wasmbus.hostinternal.{lattice}.died"


def host_links(lattice: str, host_id: str) -> str:
    """A board host's link relay: each link change, for its instances (``.get``: every link)."""
    return f"wasmbus.hostinternal.{lattice}.{host_id}.links"


def lattice_bucket(lattice: str) -> str:
    """The JetStream key-value bucket holding the lattice's link definitions."""
    return f"LATTICEDATA_{lattice}"


def metrics(lattice: str) -> str:
    """A scrape: every host and instance answers the requester's inbox with its figures."""
    return f"wasmbus.metrics.{lattice}"


def experiment_bucket(lattice: str) -> str:
    """The JetStream key-value bucket holding the posteriors of experiments (:mod:`mlcloud.experiments`)."""
    return f"EXPERIMENTS_{check_token(lattice, 'lattice')}"


def assignment_bucket(lattice: str) -> str:
    """The JetStream key-value bucket holding which version served a request of an experiment."""
    return f"ASSIGNMENTS_{check_token(lattice, 'lattice')}"


def chunk_bucket(lattice: str) -> str:
    """The JetStream object store bucket holding the lattice's messages too large for one NATS message."""
    return f"CHUNKS_{check_token(lattice, 'lattice')}"
