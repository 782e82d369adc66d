"""What an instance's NATS connection may do: the permissions of the user JWT its host mints.

From the instance's signed claims and nothing else (nats-server enforces them, see
:mod:`mlcloud.lattice.auth`):

* publish calls as itself only (the caller is a call subject's last token): to any actor, and to
  the providers of the contracts its claims name; the provider checks the link;
* publish a chain's forwarded calls as itself (their receivers check the originator's grant),
  answers to any inbox (a chain's last stage answers the originator), its events, and its
  ready report to its host;
* subscribe to its own calls, its own inbox and scrapes (``wasmbus.metrics``, answered with its
  own figures) only; read the lattice's link bucket, or where its host has no JetStream (a
  board's leaf node) ask its host for the links and follow its host's link
  relay (:class:`mlcloud.lattice.links.LinkRelay`: link definitions, nothing else);
* make the lattice's chunk bucket and put, read and delete its objects
  (:mod:`mlcloud.lattice.chunks`: messages larger than max_payload);
* an actor whose claims name ``wasmcloud:mlinference`` (the api actor) may also use the
  experiments' two key-value buckets (:func:`mlcloud.experiments.grants`);
* an httpserver provider may also send scrapes (its ``GET /metrics``), no other component;
* no control interface (``wasmbus.ctl``), no events to follow, no other JetStream.
"""

from __future__ import annotations

from mlcloud.component import ComponentKind
from mlcloud.experiments import grants as experiment_grants
from mlcloud.host.spec import InstanceSpec
from mlcloud.interfaces import HTTPSERVER, MLINFERENCE
from mlcloud.lattice import chunks, subjects
from mlcloud.lattice.auth import INBOX, Permissions, inbox_prefix


def served_targets(lattice: str, spec: InstanceSpec) -> list[str]:
    """The targets an instance serves: its provider link, or the actor's key and call alias."""
    if spec.kind is ComponentKind.PROVIDER:
        return [subjects.provider_target(lattice, spec.contract, spec.key, spec.link_name)]
    return [subjects.actor_target(lattice, spec.key), subjects.actor_target(lattice, spec.name)]


def instance_permissions(lattice: str, spec: InstanceSpec, user_key: str) -> Permissions:
    key = spec.key
    calls = [subjects.call(subjects.actor_target(lattice, "*"), key)]
    calls += [subjects.call(subjects.provider_target(lattice, c, "*", "*"), key) for c in spec.capabilities]
    forwards = [subjects.forwarded(subjects.actor_target(lattice, "*"), key),
                subjects.forwarded(f"{lattice}.*.*.*", key)]
    targets = served_targets(lattice, spec)
    bucket = f"KV_{subjects.lattice_bucket(lattice)}"
    links = ("$JS.API.INFO", f"$JS.API.STREAM.INFO.{bucket}", f"$JS.API.CONSUMER.CREATE.{bucket}",
             f"$JS.API.CONSUMER.CREATE.{bucket}.>", f"$JS.API.CONSUMER.INFO.{bucket}.>",
             f"$JS.API.CONSUMER.DELETE.{bucket}.>")
    relay = subjects.host_links(lattice, spec.host_id)
    serves_http = spec.kind is ComponentKind.PROVIDER and spec.contract == HTTPSERVER
    scrapes = (subjects.metrics(lattice),) if serves_http else ()
    runs_experiments = spec.kind is ComponentKind.ACTOR and MLINFERENCE in spec.capabilities
    experiments = experiment_grants(lattice) if runs_experiments else ()
    return Permissions(
        pub=(*calls, *forwards, f"{INBOX}.>", subjects.events(lattice),
             subjects.instance_ready(lattice, spec.host_id), *links, *chunks.grants(lattice), f"{relay}.get",
             *scrapes, *experiments),
        sub=(*[s for t in targets for s in subjects.served(t)], f"{inbox_prefix(user_key)}.>", relay,
             subjects.instance_died(lattice), subjects.metrics(lattice)),
        responses=True,
    )
