"""Experiments between versions of a route: a fixed-weight split, or Thompson sampling on rewards.

Where each fact lives, and why:

* **The split** is a link value of the api actor's mlinference link, ``split.{route}`` → JSON
  (``{"policy": "fixed", "weights": {"1.0.0": 0.9, "2.0.0": 0.1}}``), beside one *arm route* per
  version, ``{route}@{version}`` → ``{bindle}/{version}``, so the provider keeps every arm loaded
  through its one load-then-swap path and the split changes live, durably, with the control
  rights the CLI already has (:func:`mlcloud.deployment.split_async` writes them).
* **The arm** is chosen by the api actor per request (:func:`choose`) and the request goes to the
  arm route, so every answer names the bindle that made it (``X-Model``) and says the arm
  (``X-Split-Arm``). With ``X-Split-Key`` the choice is a hash of the key: the same key gets the
  same arm (under Thompson sampling, for as long as the posteriors stay as they are).
* **Who served which request** is kept in the JetStream key-value bucket ``ASSIGNMENTS_{lattice}``
  (key: a hash of the request id, ``X-Request-Id``), bounded by age (:data:`ASSIGNMENT_TTL`) and
  size (:data:`ASSIGNMENT_BYTES`), shared by every api instance. The request id is the client's
  own or the httpserver's, fixed before the api actor runs, so the arm cannot ride in it; and a
  map lets feedback be taken once only (the entry is deleted at its revision).
* **Posteriors** (Beta-Bernoulli; a reward in 0..1 is a fractional success) live in the bucket
  ``EXPERIMENTS_{lattice}``, one key per arm, on file storage: they survive restarts and every
  instance reads the same. Concurrent feedback updates them by compare-and-set on the key's
  revision (:meth:`ExperimentStore.reward`).

The hosts make both buckets (:func:`make_buckets`; as many copies as the links bucket on a NATS
cluster); the api actor may put and read their keys (its claims name ``wasmcloud:mlinference``,
see :func:`grants`); the CLI and washboard read experiments through the api's ``GET /experiments``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from mlcloud.errors import LatticeUnavailable, NotFound, RequestError
from mlcloud.lattice import subjects
from mlcloud.lattice.natserrors import nats_errors

SPLIT_PREFIX = "split."  # the link value of a route's split: split.{route}
ARM_SEPARATOR = "@"  # an arm route: {route}@{version}
KEY_HEADER = "x-split-key"
ARM_HEADER = "x-split-arm"
ASSIGNMENT_TTL = 3600.0  # seconds feedback for a request is taken
ASSIGNMENT_BYTES = 64 * 1024 * 1024  # the bucket drops its oldest assignments past this
CAS_ATTEMPTS = 64  # compare-and-set rounds a reward tries before it gives up (heavy contention)
CREDIBLE = 0.95
STREAM_NAME_IN_USE = 10058  # JetStream's err_codes: another process made the bucket first; the
NO_SUITABLE_PEERS = 10005  # cluster cannot place that many replicas now
_VERSION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # a key-value key's token(s)


class Policy(enum.StrEnum):
    FIXED = "fixed"
    THOMPSON = "thompson"


# ---------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Split:
    """A route's experiment: its policy and its arms (version → weight, summing to 1)."""

    route: str
    policy: Policy
    weights: dict[str, float]

    @classmethod
    def make(cls, route: str, arms: Mapping[str, float] | Iterable[str], policy: Policy | str) -> Split:
        """Checked and normalised; ``arms`` as versions only gives them equal weights."""
        try:
            policy = Policy(policy)
        except ValueError:
            raise RequestError(f"unknown policy {policy!r}; expected {' or '.join(Policy)}") from None
        weights = dict(arms) if isinstance(arms, Mapping) else dict.fromkeys(arms, 1.0)
        if len(weights) < 2:
            raise RequestError(f"a split needs two versions or more, got {', '.join(weights) or 'none'}")
        for version, weight in weights.items():
            if not _VERSION.match(version):
                raise RequestError(f"{version!r} is not a version a split can name (letters, digits, '.', '_', '-')")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise RequestError(f"the weight of {version} must be a number >= 0, got {weight!r}")
        total = sum(weights.values())
        if total <= 0:
            raise RequestError("at least one weight must be above 0")
        return cls(route, policy, {v: w / total for v, w in weights.items()})

    @classmethod
    def from_value(cls, route: str, raw: str) -> Split:
        parsed = json.loads(raw)
        return cls.make(route, parsed["weights"], parsed["policy"])

    def to_value(self) -> str:
        return json.dumps({"policy": str(self.policy), "weights": self.weights}, sort_keys=True)

    def arm_route(self, version: str) -> str:
        return arm_route(self.route, version)


def arm_route(route: str, version: str) -> str:
    return f"{route}{ARM_SEPARATOR}{version}"


def splits_of(values: Mapping[str, str]) -> dict[str, Split]:
    """The splits among a link's values, by route (a malformed one is no split)."""
    found = {}
    for key, raw in values.items():
        if key.startswith(SPLIT_PREFIX):
            route = key.removeprefix(SPLIT_PREFIX)
            try:
                found[route] = Split.from_value(route, raw)
            except (ValueError, KeyError, TypeError, RequestError):
                continue
    return found


# ---------------------------------------------------------------------------- posteriors


@dataclass(frozen=True)
class Posterior:
    """Beta(1 + successes, 1 + failures): a uniform prior and the rewards taken so far."""

    successes: float = 0.0
    failures: float = 0.0
    rewards: int = 0

    @property
    def alpha(self) -> float:
        return 1.0 + self.successes

    @property
    def beta(self) -> float:
        return 1.0 + self.failures

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = CREDIBLE) -> tuple[float, float]:
        """The equal-tailed credible interval."""
        tail = (1 - level) / 2
        return beta_quantile(tail, self.alpha, self.beta), beta_quantile(1 - tail, self.alpha, self.beta)

    def rewarded(self, reward: float) -> Posterior:
        return Posterior(self.successes + reward, self.failures + 1 - reward, self.rewards + 1)

    def encode(self) -> bytes:
        return json.dumps({"successes": self.successes, "failures": self.failures, "rewards": self.rewards}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Posterior:
        return cls(**json.loads(data)) if data else cls()


def check_reward(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RequestError(f"reward must be a number from 0 to 1, got {value!r}")
    return float(value)


def choose(split: Split, posteriors: Mapping[str, Posterior], key: str | None = None,
           rng: random.Random | None = None) -> str:
    """The version that serves one request: by weight, or the best of one draw from each posterior.

    With ``key``, the randomness is a hash of the route and the key, so a key keeps its arm.
    """
    if key is not None:
        digest = hashlib.blake2b(f"{split.route}\0{key}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
    rng = rng or _rng
    if split.policy is Policy.THOMPSON:
        draws = {v: rng.betavariate((p := posteriors.get(v, Posterior())).alpha, p.beta) for v in split.weights}
        return max(draws, key=draws.__getitem__)
    point, total = rng.random(), 0.0
    for version, weight in split.weights.items():
        total += weight
        if point < total:
            return version
    return next(reversed(split.weights))  # rounding left the point just past the last weight


_rng = random.Random()


def report(split: Split, posteriors: Mapping[str, Posterior], requests: Mapping[str, int]) -> dict[str, Any]:
    """A split as ``GET /experiments`` shows it: per arm its weight, its share of the last minute's
    requests (``requests``: by version), and its reward mean with the 95 % credible interval."""
    served = sum(requests.values())
    arms = []
    for version, weight in split.weights.items():
        posterior = posteriors.get(version, Posterior())
        low, high = posterior.interval()
        count = requests.get(version, 0)
        arms.append({"version": version, "route": split.arm_route(version), "weight": weight, "requests": count,
                     "share": count / served if served else None, "rewards": posterior.rewards,
                     "alpha": posterior.alpha, "beta": posterior.beta, "mean": posterior.mean,
                     "low": low, "high": high})
    return {"route": split.route, "policy": str(split.policy), "arms": arms}


# ---------------------------------------------------------------------------- Beta quantiles


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Numerical
    Recipes' ``betai``: Lentz's method, on the side of x where it converges fast)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _continued_fraction(a, b, x) / a
    return 1 - front * _continued_fraction(b, a, 1 - x) / b


def _continued_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300

    def guard(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1 / guard(1 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 / guard(1 + numerator * d)
            c = guard(1 + numerator / c)
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def beta_quantile(p: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = p, by bisection (I is increasing in x): to 1e-12, in 40 steps."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if betainc(a, b, middle) < p else (low, middle)
    return (low + high) / 2


# ---------------------------------------------------------------------------- the store


def grants(lattice: str) -> tuple[str, ...]:
    """What the api actor must be allowed to publish to use the two buckets (mlcloud/host/permissions.py):
    their keys, and direct reads of a key. Nothing more: a user JWT travels in the CONNECT line,
    which nats-server caps at 4 KiB (its ``max_control_line``), so the hosts make the buckets."""
    return tuple(grant for bucket in _buckets(lattice).values()
                 for grant in (f"$KV.{bucket.bucket}.>", f"$JS.API.DIRECT.GET.KV_{bucket.bucket}.>"))


def _buckets(lattice: str, replicas: int = 1) -> dict[str, KeyValueConfig]:
    return {
        "experiments": KeyValueConfig(bucket=subjects.experiment_bucket(lattice), history=1, direct=True,
                                      storage=StorageType.FILE, replicas=replicas,
                                      description="mlcloud experiments: posteriors per route and version"),
        "assignments": KeyValueConfig(bucket=subjects.assignment_bucket(lattice), history=1, direct=True,
                                      storage=StorageType.FILE, ttl=ASSIGNMENT_TTL, max_bytes=ASSIGNMENT_BYTES,
                                      replicas=replicas,
                                      description="mlcloud experiments: which version served a request"),
    }


async def make_buckets(js: JetStreamContext, lattice: str, replicas: int) -> None:
    """Make the two buckets if they are missing (a host does, at start: instances may not), with
    ``replicas`` copies, or one where the cluster cannot place them now."""
    for config in _buckets(lattice, replicas).values():
        with nats_errors("making an experiments bucket", config.bucket):
            try:
                await js.key_value(config.bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    await js.create_key_value(config)
                except nats.js.errors.APIError as exc:
                    if exc.err_code == NO_SUITABLE_PEERS and config.replicas != 1:
                        await js.create_key_value(dataclasses.replace(config, replicas=1))
                    elif exc.err_code != STREAM_NAME_IN_USE:  # another host made it first
                        raise


class ExperimentStore:
    """The lattice's posteriors and request assignments (see the module docstring)."""

    def __init__(self, js: JetStreamContext, lattice: str) -> None:
        self._configs = _buckets(lattice)
        # Opened without asking for the stream's info (not granted): the hosts made them, direct reads on.
        self._buckets = {name: KeyValue(name=c.bucket, stream=f"KV_{c.bucket}", pre=f"$KV.{c.bucket}.", js=js,
                                        direct=True) for name, c in self._configs.items()}

    async def posteriors(self, route: str, versions: Iterable[str]) -> dict[str, Posterior]:
        kv = self._buckets["experiments"]
        found = {}
        with nats_errors(f"reading the posteriors of {route}", self._configs["experiments"].bucket):
            for version in versions:
                try:
                    found[version] = Posterior.decode((await kv.get(_posterior_key(route, version))).value)
                except nats.js.errors.KeyNotFoundError:
                    found[version] = Posterior()
        return found

    async def assign(self, route: str, request_id: str, version: str) -> None:
        kv = self._buckets["assignments"]
        bucket = self._configs["assignments"].bucket
        with nats_errors(f"recording which version of {route} served {request_id}", bucket):
            await kv.put(_assignment_key(request_id), json.dumps({"route": route, "version": version}).encode())

    async def reward(self, route: str, request_id: str, reward: float) -> tuple[str, Posterior]:
        """Take the request's assignment (once: a second feedback finds none) and add the reward
        to its arm's posterior; the arm and its new posterior."""
        assignments = self._buckets["assignments"]
        key = _assignment_key(request_id)
        missing = NotFound(f"no request {request_id!r} of {route!r} awaits feedback: unknown, rewarded already, "
                           f"or older than {ASSIGNMENT_TTL:g} s")
        with nats_errors(f"taking the assignment of {request_id}", self._configs["assignments"].bucket):
            try:
                entry = await assignments.get(key)
                assigned = json.loads(entry.value or b"{}")
                if assigned.get("route") != route:
                    raise missing
                await assignments.delete(key, last=entry.revision)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
                raise missing from None
        version = str(assigned["version"])
        return version, await self._add(route, version, reward)

    async def _add(self, route: str, version: str, reward: float) -> Posterior:
        kv = self._buckets["experiments"]
        key = _posterior_key(route, version)
        with nats_errors(f"updating the posterior of {route} {version}", self._configs["experiments"].bucket):
            for _ in range(CAS_ATTEMPTS):
                try:
                    entry = await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    entry = None
                posterior = Posterior.decode(entry.value if entry else None).rewarded(reward)
                try:
                    if entry is None:
                        await kv.create(key, posterior.encode())
                    else:
                        await kv.update(key, posterior.encode(), last=entry.revision)
                    return posterior
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue  # another instance's reward came first: read it and add ours again
        raise LatticeUnavailable(f"the posterior of {route} {version} changed {CAS_ATTEMPTS} times while "
                                 "this reward was being added; send it again")


def _posterior_key(route: str, version: str) -> str:
    return f"posterior.{route}.{version}"


def _assignment_key(request_id: str) -> str:
    """Request ids may hold characters keys may not (``:``, ``+``, ``@``): a hash of it."""
    return "request." + hashlib.sha256(request_id.encode()).hexdigest()[:40]


class PosteriorCache:
    """The api instance's view of the posteriors, read again once older than ``ttl`` seconds (and
    updated at once by the rewards this instance takes): a choice needs no read per request."""

    def __init__(self, ttl: float = 0.25) -> None:
        self.ttl = ttl
        self._known: dict[str, tuple[float, dict[str, Posterior]]] = {}

    async def get(self, store: ExperimentStore, split: Split) -> dict[str, Posterior]:
        fetched, posteriors = self._known.get(split.route, (0.0, {}))
        if time.monotonic() - fetched > self.ttl or set(posteriors) != set(split.weights):
            posteriors = await store.posteriors(split.route, split.weights)
            self._known[split.route] = (time.monotonic(), posteriors)
        return posteriors

    def update(self, route: str, version: str, posterior: Posterior) -> None:
        if route in self._known:
            self._known[route][1][version] = posterior
