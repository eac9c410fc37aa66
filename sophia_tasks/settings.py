"""The one place that reads the environment.

Everything else receives a ``Settings`` (or clients built from it), so tests and
the benchmark can run a whole stack side by side with other database numbers.
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

DEFAULT_FLOW = Path(__file__).parent / "flows" / "default.yaml"


class ConfigError(ValueError):
    """A variable has a value we cannot use; the message names it."""


class Secret:
    """A credential that never shows itself: repr and str print asterisks, ``reveal()`` gives the value.

    Why: settings travel into reprs, tracebacks, Celery's reports and log lines; a plain string
    would be printed there in clear.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def reveal(value: Secret | str | None) -> str | None:
    """The value of a secret setting (None stays None)."""
    return value.reveal() if isinstance(value, Secret) else value


def _secret(value: Any) -> Any:
    return value if value is None or isinstance(value, Secret) else Secret(value)


#: ``scheme://user:password@host`` and libpq's ``password=...``: what a URL or DSN repr must not show.
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]+@")
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by asterisks."""
    return _DSN_PASSWORD.sub(r"\1**********", _URL_PASSWORD.sub(r"\1:**********@", url))


def _env(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """``name`` from the environment, or the contents of the file named by ``name_FILE`` (the
    convention of Docker and Kubernetes secrets; a trailing newline is dropped). Both set is an error."""
    path = env.get(f"{name}_FILE")
    if path:
        if env.get(name):
            raise ConfigError(f"{name} and {name}_FILE are both set: keep one")
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}") from None
    value = env.get(name)
    return default if value is None else value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive duration: plain seconds (``90``) or with a unit (``90s``, ``15m``, ``1h``)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h)?", raw)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{name} must be a positive duration like 90, 90s, 15m or 1h, got {raw!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _secrets(env: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    """A comma-separated list of secrets (several at once: rotation without downtime)."""
    raw = _env(env, name) or ""
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


#: Variables whose value is a credential, or may hold one (a URL with a password): each also has a
#: ``_FILE`` form, and none is ever printed.
SECRET_VARIABLES = (
    "SOPHIA_WEBHOOK_TOKENS", "SOPHIA_WEBHOOK_SECRET", "SOPHIA_READ_TOKENS", "SOPHIA_SNOWFLAKE_PASSWORD",
    "SOPHIA_GONG_ACCESS_KEY", "SOPHIA_GONG_ACCESS_KEY_SECRET", "SOPHIA_SLACK_WEBHOOK_URL", "SENTRY_DSN",
    "SOPHIA_BROKER_URL", "SOPHIA_REDIS_URL", "SOPHIA_POSTGRES_DSN", "SOPHIA_GONG_JWT_PUBLIC_KEY",
    "SOPHIA_DATA_KEYS", "SOPHIA_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
)


@dataclass(frozen=True)
class SnowflakeSettings:
    account: str | None
    user: str
    password: Secret
    database: str
    schema: str
    warehouse: str | None
    role: str | None
    host: str
    port: int
    protocol: str
    login_timeout: int = 15
    network_timeout: int = 60
    #: The connector's cloud platform probe at every login (telemetry only): off unless asked for.
    platform_detection: bool = False
    #: Key-pair authentication (instead of the password): a PEM private key, maybe encrypted.
    private_key_file: str | None = None
    private_key_passphrase: Secret | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "password", _secret(self.password))
        object.__setattr__(self, "private_key_passphrase", _secret(self.private_key_passphrase))

    @property
    def emulator(self) -> bool:
        """No account means the local fakesnow server (dev, demo, tests, CI)."""
        return not self.account

    def connect_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "user": self.user,
            "database": self.database,
            "schema": self.schema,
            # Server-side binding: a whole batch travels as one bound JSON value.
            "paramstyle": "qmark",
            "login_timeout": self.login_timeout,
            "network_timeout": self.network_timeout,
            "client_session_keep_alive": False,
        }
        if self.private_key_file:
            kwargs.update(authenticator="SNOWFLAKE_JWT", private_key_file=self.private_key_file)
            if self.private_key_passphrase:
                kwargs["private_key_file_pwd"] = self.private_key_passphrase.reveal()
        else:
            kwargs["password"] = self.password.reveal()
        if self.emulator:
            kwargs.update(account="fakesnow", host=self.host, port=self.port, protocol=self.protocol)
        else:
            kwargs["account"] = self.account
            if self.warehouse:
                kwargs["warehouse"] = self.warehouse
            if self.role:
                kwargs["role"] = self.role
            if self.host:  # else the connector's own host for the account
                kwargs.update(host=self.host, port=self.port, protocol=self.protocol)
        return kwargs


@dataclass(frozen=True, repr=False)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/sophia"
    snowflake: SnowflakeSettings = field(
        default_factory=lambda: SnowflakeSettings(
            account=None, user="sophia", password="sophia", database="SOPHIA", schema="PUBLIC",
            warehouse=None, role=None, host="127.0.0.1", port=8765, protocol="http",
        )
    )
    snowflake_data_dir: str = "var/snowflake"
    webhook_tokens: tuple[Secret, ...] = ()
    webhook_secrets: tuple[Secret, ...] = ()
    #: Bearer tokens for reads (documents, /metrics); none configured: reads are refused.
    read_tokens: tuple[Secret, ...] = ()
    #: Fernet keys sealing the journal and the dead letters at rest: the first seals, all open.
    data_keys: tuple[Secret, ...] = ()
    #: Days a dead letter is kept, replayed or not (beat purges older ones).
    dead_letter_retention_days: int = 30
    gong_jwt_public_key: str | None = None
    insecure_no_auth: bool = False
    public_url: str | None = None
    flow_path: Path = DEFAULT_FLOW
    sentry_dsn: Secret | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = 0.0
    slack_webhook_url: Secret | None = None
    # How often beat runs sophia.alerts (thresholds live in the flow spec's alerts: section).
    alerts_interval_seconds: float = 60.0
    # /readyz fails when events wait and no worker node consumed for this long (heartbeats every 2 s;
    # long enough that a rolling restart of the workers does not flap it).
    ready_worker_seconds: float = 60.0
    # How often beat reconciles with the Gong API (only with Gong API credentials set).
    reconcile_every_seconds: float = 900.0
    max_body_bytes: int = 1024 * 1024
    dedupe_window_seconds: int = 24 * 3600
    #: Record each event's path (receipt, dedupe, stages, targets) for `sophia-tasks trace`, kept as long
    #: as the dedupe window (sophia_tasks.observe.trace); off saves its small cost.
    trace_enabled: bool = True
    rate_limit_per_minute: int = 0
    bind_all: bool = False
    port: int = 9009
    # Redis visibility timeout: retries' countdowns must stay well below it.
    visibility_timeout: int = 3600
    ingest_batch_size: int = 500
    # 250 ms: each batch has a fixed cost in every stage (a task, a journal insert, an upsert, a Redis
    # pipeline, the stats); at 350 events/s, 100 ms batches (~40 events) cost the worker 0.93-0.97 ms
    # of CPU per event and 250 ms ones (~90 events) 0.75-0.76, for 0.25 s more p99 lag to Redis
    # (0.25 -> 0.5 s; interleaved runs, docs/benchmarks.md). A busy node's batches still fill to
    # SOPHIA_INGEST_BATCH_SIZE before the age is reached.
    ingest_flush_seconds: float = 0.25
    retry_max: int = 8
    retry_backoff_max: int = 300
    retry_backoff_base: float = 2.0
    queue_prefix: str = ""
    # Pool processes of one worker node that may write to the same target at once (0 = no cap).
    target_concurrency: int = 2
    # Seconds a write waits for a busy target's slot before stepping aside (re-queued).
    bulkhead_wait_seconds: float = 2.0
    # Derived batches stored beside a Redis broker (claim checks): backstop expiry; 0 = send inline.
    batch_ttl_seconds: int = 7 * 24 * 3600
    # Materializations written by the validate task itself, right after the derivation (a failure
    # or a slow write hands them to their queue for a while); the others always go through theirs.
    inline_targets: tuple[str, ...] = ("redis", "postgres")
    # Queued targets whose batches are coalesced in the broker's Redis before the write (a Redis
    # broker only): one write per SOPHIA_COALESCE_ROWS documents or SOPHIA_COALESCE_SECONDS.
    coalesce_targets: tuple[str, ...] = ("snowflake",)
    coalesce_rows: int = 1000
    coalesce_seconds: float = 1.0
    # Backfill and rebuild batches in flight at once (0 = publish without pacing): the rest of the
    # pool stays free for live events (sophia_tasks.pipeline.bulk_window). One on 2 cores: the backfill ran
    # as fast as with two (the second batch only waited for a core), and live lag held.
    bulk_inflight: int = 1
    # The bulk lane also holds its next batch while live events were written this many seconds
    # after receipt (the last live batch of any target, within the last few seconds); 0 = never.
    bulk_yield_lag: float = 0.5
    # Live validate tasks running at once on one worker node (0 = no cap; default: its CPU count).
    validate_concurrency: int = os.cpu_count() or 2
    # Gong API (backfill --gong): Basic auth with an access key and its secret.
    gong_api_url: str = "https://api.gong.io"
    gong_access_key: Secret | None = None
    gong_access_key_secret: Secret | None = None

    def __post_init__(self) -> None:
        """Secrets given as plain strings (tests, ``with_overrides``) are wrapped, so none prints."""
        for name in ("webhook_tokens", "webhook_secrets", "read_tokens", "data_keys"):
            object.__setattr__(self, name, tuple(_secret(v) for v in getattr(self, name)))
        for name in ("sentry_dsn", "slack_webhook_url", "gong_access_key", "gong_access_key_secret"):
            object.__setattr__(self, name, _secret(getattr(self, name)))

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={mask_url(value)!r}" if f.name in _URL_FIELDS else f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def queue(self, name: str) -> str:
        """Queue names carry an optional prefix so a benchmark or test stack never steals demo work."""
        return f"{self.queue_prefix}{name}"

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]


_URL_FIELDS = ("broker_url", "redis_url", "postgres_dsn")


#: A Redis server, plain, over TLS or on a socket: the broker features that need Redis work on all three.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.")


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError):
        return False


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    flow = env.get("SOPHIA_FLOW")
    account = env.get("SOPHIA_SNOWFLAKE_ACCOUNT") or None
    sf_host = env.get("SOPHIA_SNOWFLAKE_HOST") or ("" if account else "127.0.0.1")
    local = not account and is_loopback(sf_host)
    # https whenever Snowflake (or anything off this machine) is reached; http only for the emulator on loopback.
    sf_protocol = env.get("SOPHIA_SNOWFLAKE_PROTOCOL") or ("http" if local else "https")
    if sf_protocol not in ("http", "https"):
        raise ConfigError(f"SOPHIA_SNOWFLAKE_PROTOCOL must be http or https, got {sf_protocol!r}")
    if sf_protocol == "http" and not local:
        raise ConfigError("SOPHIA_SNOWFLAKE_PROTOCOL=http is only for the emulator on this machine (no "
                          "SOPHIA_SNOWFLAKE_ACCOUNT, a loopback SOPHIA_SNOWFLAKE_HOST): Snowflake is reached "
                          "over https")
    key_file = env.get("SOPHIA_SNOWFLAKE_PRIVATE_KEY_FILE") or None
    if key_file and not os.path.isfile(key_file):
        raise ConfigError(f"SOPHIA_SNOWFLAKE_PRIVATE_KEY_FILE: no file at {key_file}")
    snowflake = SnowflakeSettings(
        account=account,
        user=env.get("SOPHIA_SNOWFLAKE_USER", "sophia"),
        password=Secret(_env(env, "SOPHIA_SNOWFLAKE_PASSWORD", "sophia") or ""),
        database=env.get("SOPHIA_SNOWFLAKE_DATABASE", "SOPHIA"),
        schema=env.get("SOPHIA_SNOWFLAKE_SCHEMA", "PUBLIC"),
        warehouse=env.get("SOPHIA_SNOWFLAKE_WAREHOUSE") or None,
        role=env.get("SOPHIA_SNOWFLAKE_ROLE") or None,
        host=sf_host,
        port=_int(env, "SOPHIA_SNOWFLAKE_PORT", 8765 if local else 443),
        protocol=sf_protocol,
        login_timeout=_int(env, "SOPHIA_SNOWFLAKE_LOGIN_TIMEOUT", 15),
        network_timeout=_int(env, "SOPHIA_SNOWFLAKE_NETWORK_TIMEOUT", 60),
        platform_detection=_bool(env, "SOPHIA_SNOWFLAKE_PLATFORM_DETECTION"),
        private_key_file=key_file,
        private_key_passphrase=_secret(_env(env, "SOPHIA_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE") or None),
    )
    settings = Settings(
        broker_url=_env(env, "SOPHIA_BROKER_URL") or Settings.broker_url,
        redis_url=_env(env, "SOPHIA_REDIS_URL") or Settings.redis_url,
        postgres_dsn=_env(env, "SOPHIA_POSTGRES_DSN") or Settings.postgres_dsn,
        snowflake=snowflake,
        snowflake_data_dir=env.get("SOPHIA_SNOWFLAKE_DATA_DIR", Settings.snowflake_data_dir),
        webhook_tokens=_secrets(env, "SOPHIA_WEBHOOK_TOKENS"),
        webhook_secrets=_secrets(env, "SOPHIA_WEBHOOK_SECRET"),
        read_tokens=_secrets(env, "SOPHIA_READ_TOKENS"),
        data_keys=_secrets(env, "SOPHIA_DATA_KEYS"),
        dead_letter_retention_days=_int(env, "SOPHIA_DEAD_LETTER_RETENTION_DAYS", 30),
        gong_jwt_public_key=_env(env, "SOPHIA_GONG_JWT_PUBLIC_KEY") or None,
        insecure_no_auth=_bool(env, "SOPHIA_INSECURE_NO_AUTH"),
        public_url=(env.get("SOPHIA_PUBLIC_URL") or None),
        flow_path=Path(flow) if flow else DEFAULT_FLOW,
        sentry_dsn=_secret(_env(env, "SENTRY_DSN") or None),
        sentry_environment=env.get("SENTRY_ENVIRONMENT") or None,
        sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", 0.0),
        slack_webhook_url=_secret(_env(env, "SOPHIA_SLACK_WEBHOOK_URL") or None),
        alerts_interval_seconds=_float(env, "SOPHIA_ALERTS_INTERVAL_SECONDS", Settings.alerts_interval_seconds),
        ready_worker_seconds=_seconds(env, "SOPHIA_READY_WORKER_SECONDS", Settings.ready_worker_seconds),
        reconcile_every_seconds=_seconds(env, "SOPHIA_RECONCILE_EVERY", Settings.reconcile_every_seconds),
        max_body_bytes=_int(env, "SOPHIA_MAX_BODY_BYTES", Settings.max_body_bytes),
        dedupe_window_seconds=_int(env, "SOPHIA_DEDUPE_WINDOW_SECONDS", Settings.dedupe_window_seconds),
        trace_enabled=_bool(env, "SOPHIA_TRACE", True),
        rate_limit_per_minute=_int(env, "SOPHIA_RATE_LIMIT_PER_MINUTE", 0),
        bind_all=_bool(env, "SOPHIA_BIND_ALL"),
        port=_int(env, "PORT", 9009),
        visibility_timeout=_int(env, "SOPHIA_VISIBILITY_TIMEOUT", Settings.visibility_timeout),
        ingest_batch_size=_int(env, "SOPHIA_INGEST_BATCH_SIZE", Settings.ingest_batch_size),
        ingest_flush_seconds=_float(env, "SOPHIA_INGEST_FLUSH_SECONDS", Settings.ingest_flush_seconds),
        retry_max=_int(env, "SOPHIA_RETRY_MAX", Settings.retry_max),
        retry_backoff_max=_int(env, "SOPHIA_RETRY_BACKOFF_MAX", Settings.retry_backoff_max),
        retry_backoff_base=_float(env, "SOPHIA_RETRY_BACKOFF_BASE", Settings.retry_backoff_base),
        queue_prefix=env.get("SOPHIA_QUEUE_PREFIX", ""),
        target_concurrency=_int(env, "SOPHIA_TARGET_CONCURRENCY", Settings.target_concurrency),
        bulkhead_wait_seconds=_float(env, "SOPHIA_BULKHEAD_WAIT", Settings.bulkhead_wait_seconds),
        inline_targets=(_list(env, "SOPHIA_INLINE_TARGETS") if env.get("SOPHIA_INLINE_TARGETS") is not None
                        else Settings.inline_targets),
        batch_ttl_seconds=_int(env, "SOPHIA_BATCH_TTL_SECONDS", Settings.batch_ttl_seconds),
        coalesce_targets=(_list(env, "SOPHIA_COALESCE_TARGETS") if env.get("SOPHIA_COALESCE_TARGETS") is not None
                          else Settings.coalesce_targets),
        coalesce_rows=_int(env, "SOPHIA_COALESCE_ROWS", Settings.coalesce_rows),
        coalesce_seconds=_float(env, "SOPHIA_COALESCE_SECONDS", Settings.coalesce_seconds),
        bulk_inflight=_int(env, "SOPHIA_BULK_INFLIGHT", Settings.bulk_inflight),
        bulk_yield_lag=_float(env, "SOPHIA_BULK_YIELD_LAG", Settings.bulk_yield_lag),
        validate_concurrency=_int(env, "SOPHIA_VALIDATE_CONCURRENCY", Settings.validate_concurrency),
        gong_api_url=(env.get("SOPHIA_GONG_API_URL") or Settings.gong_api_url).rstrip("/"),
        gong_access_key=_secret(_env(env, "SOPHIA_GONG_ACCESS_KEY") or None),
        gong_access_key_secret=_secret(_env(env, "SOPHIA_GONG_ACCESS_KEY_SECRET") or None),
    )
    for index, key in enumerate(settings.data_keys, 1):
        if not _is_fernet_key(key.reveal()):
            raise ConfigError(f"SOPHIA_DATA_KEYS entry {index} is not a Fernet key (32 url-safe base64 bytes; "
                              "`sophia-tasks keys new` prints one)")
    if settings.dead_letter_retention_days < 1:
        raise ConfigError("SOPHIA_DEAD_LETTER_RETENTION_DAYS must be at least 1")
    if settings.coalesce_rows < 1 or not 0 < settings.coalesce_seconds <= 60:
        raise ConfigError("SOPHIA_COALESCE_ROWS must be at least 1 and SOPHIA_COALESCE_SECONDS between 0 and 60")
    if settings.retry_backoff_max * 2 >= settings.visibility_timeout:
        raise ConfigError(
            "SOPHIA_RETRY_BACKOFF_MAX must stay below half of SOPHIA_VISIBILITY_TIMEOUT, "
            "or a delayed retry would be delivered twice"
        )
    return settings
