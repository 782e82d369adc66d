"""One frozen settings object per process: every port, URL, timeout and limit lives here.

Values come from, in order of precedence: explicit overrides (CLI flags), ``MLCLOUD_*``
environment variables, then the ``DEFAULT_*`` constants below. Child processes started by a host
inherit the environment, so one ``Settings.from_env()`` call gives every process the same view.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlcloud.errors import ConfigError

ENV_PREFIX = "MLCLOUD_"

DEFAULT_LATTICE = "default"
DEFAULT_NATS_PORT = 4222
# The embedded nats-server's: the most NATS advises (its default is 1 MB), so a photo rides in one
# message; larger ones go through the lattice's object store (mlcloud.lattice.chunks), rather than
# a 50 MB message holding up every small call that shares its connection.
DEFAULT_NATS_MAX_PAYLOAD = 8 * 1024 * 1024
DEFAULT_RPC_TIMEOUT = 8.0
DEFAULT_FORWARD_ACK_TIMEOUT = 2.0
DEFAULT_CTL_TIMEOUT = 2.0
DEFAULT_HEARTBEAT_INTERVAL = 15.0
DEFAULT_HEALTH_INTERVAL = 5.0
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_BINDLE_ADDRESS = "127.0.0.1:8080"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_HTTP_ADDRESS = "0.0.0.0:8078"
DEFAULT_WASHBOARD_ADDRESS = "127.0.0.1:4000"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # a 50 MB TIFF fits; docs/architecture.md says why
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # decompression-bomb guard of the preprocess actor
# A dead instance is started again after 0.1 s (systemd's RestartSec), doubling while it keeps
# dying: a lone instance's callers wait for its restart (issue 15: under 1 s without a success).
DEFAULT_RESTART_BACKOFF = 0.1
DEFAULT_RESTART_BACKOFF_MAX = 30.0
DEFAULT_STOP_GRACE = 5.0
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_RPC_RETRIES = 3


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlcloud"


def _default_keys_dir() -> Path:
    # The user's, not the project's: a component keeps its identity (its public key, which links
    # and claims name) whichever state dir a command runs with.
    return _default_state_dir() / "keys"


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings shared by every mlcloud process. Field ``x`` reads ``MLCLOUD_X``."""

    state_dir: Path = dataclasses.field(default_factory=_default_state_dir)
    # The signing keys: the issuer account and each component's subject key.
    keys_dir: Path = dataclasses.field(default_factory=_default_keys_dir)
    lattice: str = DEFAULT_LATTICE
    # None means "start the embedded nats-server"; a URL means "use that server"; several,
    # comma-separated, the nodes of a NATS cluster (nats_urls).
    nats_url: str | None = None
    nats_port: int = DEFAULT_NATS_PORT
    nats_max_payload: int = DEFAULT_NATS_MAX_PAYLOAD
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT
    # How long a chain's stage waits for the next stage to confirm it took a forwarded call.
    forward_ack_timeout: float = DEFAULT_FORWARD_ACK_TIMEOUT
    ctl_timeout: float = DEFAULT_CTL_TIMEOUT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    # How long `ctl start` waits for new instances to report ready.
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    bindle_address: str = DEFAULT_BINDLE_ADDRESS
    # None means "the embedded Bindle server at bindle_address".
    bindle_url: str | None = None
    registry: str = DEFAULT_REGISTRY
    http_address: str = DEFAULT_HTTP_ADDRESS
    washboard_address: str = DEFAULT_WASHBOARD_ADDRESS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # The mlinference provider's knobs (mlcloud.inference.config.InferenceConfig.from_settings);
    # None keeps the provider's default. Batching: a max size > 1 turns it on.
    inference_engine: str | None = None
    inference_intra_op_threads: int | None = None
    inference_inter_op_threads: int | None = None
    inference_predict_workers: int | None = None
    inference_load_workers: int | None = None
    inference_batch_max_size: int | None = None
    inference_batch_max_wait_ms: float | None = None
    restart_backoff: float = DEFAULT_RESTART_BACKOFF
    restart_backoff_max: float = DEFAULT_RESTART_BACKOFF_MAX
    stop_grace: float = DEFAULT_STOP_GRACE
    # Comma-separated account public keys whose artifacts a host runs, besides the local account
    # and the trust file (mlcloud.trust.trusted_issuers is the one answer).
    trusted_issuers: str = ""
    # Allow plain-HTTP registries (the embedded one is loopback HTTP).
    registry_insecure: bool = True
    # The level of the instance processes' logs (a `logging` level name).
    log_level: str = DEFAULT_LOG_LEVEL
    # When set, each instance also appends its log to a file of its own here
    # ({component}-{instance}.log, mlcloud.host.runner.instance_log_file); stderr always has it.
    log_dir: Path | None = None
    # Development: a host also runs unsigned local component folders (`--dev`, MLCLOUD_DEV=1).
    dev: bool = False
    # The NATS credentials (.creds) this process connects with; None: state_dir/nats-auth's
    # (mlcloud.lattice.auth.credentials_for).
    nats_creds: Path | None = None
    # The lattice account's seed, with which a host signs its instances' NATS credentials;
    # None: state_dir/nats-auth/account.nk.
    nats_account_seed: Path | None = None
    # How many times an idempotent call (Op.idempotent) is made again, within its deadline, after
    # its server died under it (mlcloud.lattice.rpc.RpcClient); while nobody serves it (a restart)
    # it is tried again until its deadline whatever this says.
    rpc_retries: int = DEFAULT_RPC_RETRIES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                try:
                    values[f.name] = _coerce(f.type, raw)
                except ValueError:
                    raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("state_dir", "keys_dir", "nats_creds", "nats_account_seed", "log_dir"):
            if name in values:
                values[name] = Path(values[name]).expanduser()
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[ENV_PREFIX + f.name.upper()] = str(int(value) if isinstance(value, bool) else value)
        return env

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def nats_urls(self) -> list[str]:
        """The NATS servers a process connects to: a client given a cluster's nodes moves to another
        when its node dies (mlcloud.lattice.connect.connect takes them all)."""
        return split_urls(self.nats_url) or [f"nats://127.0.0.1:{self.nats_port}"]

    @property
    def effective_nats_url(self) -> str:
        """:attr:`nats_urls` as one comma-separated string, for messages and logs."""
        return ",".join(self.nats_urls)

    @property
    def effective_bindle_url(self) -> str:
        return self.bindle_url or f"http://{self.bindle_address}/v1"



def _coerce(annotation: Any, raw: str) -> Any:
    text = str(annotation)
    if "bool" in text:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in text and "float" not in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    if "Path" in text:
        return Path(raw).expanduser()
    return raw


def split_urls(urls: str | None) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` → ``["nats://a:4222", "nats://b:4222"]``."""
    return [url.strip() for url in (urls or "").split(",") if url.strip()]


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``."""
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)
