"""Settings: declared once, read once, frozen.

This is the only module that reads the environment. Every field carries its
default and its help text; ``docs/configuration.md`` is checked against them
by a test. Sources, lowest precedence first: defaults, ``artifactstore.toml``
(``ARTIFACTSTORE_CONFIG`` or ``./artifactstore.toml``), ``ARTIFACTSTORE_*``
environment variables, explicit overrides.
"""

from __future__ import annotations

import dataclasses
import getpass
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifactstore.errors import InvalidInput, InvalidSetting

__all__ = [
    "DATABASE_SCHEMES",
    "MAX_QUERY_FILTERS",
    "MAX_SIZE",
    "SETTINGS_HELP",
    "IPNetwork",
    "Settings",
    "check_database_url",
    "parse_duration",
    "parse_size",
]

#: A network of trusted proxies (``TRUSTED_PROXIES``).
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The DATABASE_URL schemes this build opens (a driver suffix such as ``+psycopg`` aside).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def check_database_url(url: str) -> None:
    """Refuse, in one line, a database URL this build cannot open: before a driver
    gets to print its own traceback, and before ``copy`` writes anywhere."""
    scheme = url.partition(":")[0].split("+")[0] if "://" in url else ""
    if scheme not in DATABASE_SCHEMES:
        raise InvalidSetting(
            f"unsupported database URL scheme {scheme or url!r}: give sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_SIZE = re.compile(r"([0-9]{1,30})(?:\.([0-9]{1,30}))?\s*([kmgtpe]i?b?|b)?", re.IGNORECASE)
#: Largest size accepted (what a signed 64-bit column holds).
MAX_SIZE = 2**63 - 1
_NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
#: Highest ``max_query_filters`` accepted: each filter deepens the SQL expression
#: tree by one, and SQLite refuses trees deeper than 1,000 (about 980 filters).
MAX_QUERY_FILTERS = 256
#: The longest a presigned S3 URL may be valid (SigV4's limit): 7 days.
_PRESIGN_MAX = 7 * 86400.0


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``24h``, ``90d`` -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise InvalidInput(f"invalid duration {text!r}: use a number with s, m, h, d or w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_size(text: str) -> int:
    """``1048576``, ``10MiB``, ``2GB``, ``1.5GiB`` -> bytes.

    Decimal units (``kB``, ``MB``, ``GB``, ``TB``, ``PB``, ``EB``; the ``B``
    is optional) are powers of 1000, binary ones (``KiB``, ``MiB``, ``GiB``,
    ...) powers of 1024; case does not matter. A fraction is allowed with a
    unit and rounded down to a whole byte; a bare number is whole bytes.
    """
    m = _SIZE.fullmatch(text.strip())
    if not m or (m.group(2) is not None and (m.group(3) or "b").lower() == "b"):
        raise InvalidInput(
            f"invalid size {text[:40]!r}: use whole bytes or a number with a unit "
            "(kB, MB, GB, TB or KiB, MiB, GiB, TiB), e.g. 500MB or 1.5GiB"
        )
    whole, fraction, unit = m.group(1), m.group(2) or "", (m.group(3) or "b").lower()
    base = 1024 if unit[1:2] == "i" else 1000
    scale: int = 1 if unit == "b" else base ** " kmgtpe".index(unit[0])
    size: int = int(whole) * scale + int(fraction or "0") * scale // 10 ** len(fraction)
    if size > MAX_SIZE:
        raise InvalidInput(f"size {text[:40]!r} is more than {MAX_SIZE} bytes")
    return size


def _default_actor() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass(frozen=True)
class Settings:
    home: Path = _help("data directory of the embedded default", Path("artifactstore-data"))
    database_url: str = _help("metadata database (default sqlite:///HOME/artifactstore.db)", "")
    storage_url: str = _help("blob storage (default file:///HOME/storage)", "")
    cold_storage_url: str = _help(
        "storage of the cold tier, whose blobs need a restore before reads "
        "(default file:///HOME/cold)",
        "",
    )
    restore_delay: float = _help(
        "seconds a restore from the cold tier takes before the bytes are readable", 0.0
    )
    presign_downloads: float = _help(
        "seconds a presigned URL is valid when GET /v1/blobs/{digest} answers 307 to one, "
        "for a whole blob on s3:// storage (0: the server sends the bytes itself)",
        0.0,
    )
    primary_digest: str = _help("digest algorithm that keys storage (blake3 or sha256)", "blake3")
    fsync: bool = _help("flush bytes to disk before acknowledging (off only for benchmarks)", True)
    gc_grace: float = _help(
        "seconds a blob stays protected after upload, HEAD or dereference", 86400.0
    )
    gc_interval: float = _help(
        "seconds between background GC runs in serve (0: no background GC)", 0.0
    )
    actor: str = _help("who local-mode mutations are recorded as (default local:USER)", "")
    upload_ttl: float = _help("seconds an unfinished upload session is kept", 86400.0)
    max_upload_bytes: int = _help("largest blob accepted by one upload, in bytes", 64 * 1024**3)
    max_manifest_bytes: int = _help("largest manifest accepted, in bytes", 16 * 1024 * 1024)
    max_files: int = _help("most files in one package", 100_000)
    pack_max_bytes: int = _help(
        "pushed files of at most this size (4 MiB at most) are stored in packs (0: never)",
        256 * 1024,
    )
    max_batch_members: int = _help(
        "most members (blobs) in one POST /v1/blobs/batch; each member is at most "
        "PACK_MAX_BYTES (256 KiB when packs are off)",
        10_000,
    )
    max_metadata_depth: int = _help("deepest nesting of metadata objects and arrays", 16)
    max_metadata_bytes: int = _help(
        "largest metadata document, in bytes of canonical JSON", 1024 * 1024
    )
    auth_failures_per_minute: int = _help(
        "failed authentications per client address per minute before 429", 10
    )
    no_auth: bool = _help(
        "serve without authentication: every caller is admin (loopback addresses only)", False
    )
    body_idle_timeout: float = _help(
        "seconds a request body may pause before the server gives up (HTTP 408)", 30.0
    )
    body_total_timeout: float = _help(
        "seconds a whole request body may take to arrive (HTTP 408)", 3600.0
    )
    # --- HTTP hardening (issue 17) ---------------------------------------------------------
    trusted_proxies: str = _help(
        "addresses and CIDR networks of reverse proxies whose X-Forwarded-For names the "
        "client (comma-separated; empty: the socket's peer is the client)",
        "",
    )
    header_timeout: float = _help(
        "seconds a connection may take to send a whole request head, and stay silent "
        "before its first request, before the server closes it",
        20.0,
    )
    # --- bounds of a query, and room for rm and gc on a full disk (issue 17) --------------
    max_query_filters: int = _help(
        f"most metadata filters (meta.KEY=VALUE, --where) in one query (1 to {MAX_QUERY_FILTERS})",
        32,
    )
    disk_reserve_bytes: int = _help(
        "bytes kept allocated beside the SQLite database, released only for rm and gc "
        "(and opening the database) on a full disk, so that they work there (0: none)",
        4 * 1024 * 1024,
    )
    # --- upload sessions: bounded, swept, crash-durable (issue 17) ------------------------
    max_open_uploads_per_actor: int = _help(
        "open upload sessions one token (actor) may hold at once (HTTP 413 too_many_uploads)",
        100,
    )
    max_open_uploads_per_namespace: int = _help(
        "open upload sessions one namespace may hold at once (HTTP 413 too_many_uploads)", 1000
    )
    upload_sweep_interval: float = _help(
        "seconds between sweeps in serve of expired upload sessions' bytes and crash leftovers",
        60.0,
    )
    upload_checkpoint_bytes: int = _help(
        "a PATCH makes its bytes durable and records its offset every this many bytes, so a "
        "crash keeps them (0: only at the end of the request)",
        8 * 1024 * 1024,
    )

    # --- the event stream out to NATS JetStream (SPEC section 8, issue 18) -----------------
    nats_url: str = _help(
        "NATS server(s) the event stream is published to (nats://, tls://, ws:// or wss://; "
        "comma-separated for a cluster; empty: no stream)",
        "",
    )
    nats_stream: str = _help(
        "JetStream stream the events are published to (created if absent)",
        "ARTIFACTSTORE_EVENTS",
    )
    nats_subject_prefix: str = _help(
        "subject prefix of the published events: an event goes to PREFIX.<type>",
        "artifactstore.events",
    )
    # --- the transparency log (SPEC section 8, issue 19) ----------------------------------
    log_signing_key: str = _help(
        "PEM PKCS#8 Ed25519 private key file (mode 0600) that signs the log's checkpoints "
        "(empty: HOME/log-signing.key, generated with its .pub at first need)",
        "",
    )
    log_origin: str = _help(
        "the log's origin line in its checkpoints and the name of its key: set it to your "
        "registry's address without scheme (no spaces or +)",
        "artifactstore.local/log",
    )
    log_checkpoint_interval: float = _help(
        "seconds between the checkpoints serve makes and writes to LOG_CHECKPOINT_URL (0: none)",
        300.0,
    )
    log_checkpoint_url: str = _help(
        "where serve writes each periodic checkpoint as checkpoint-<size>.txt, outside the "
        "database: file:///DIR or s3://bucket/prefix?endpoint=URL&region=R (empty: nowhere)",
        "",
    )

    def __post_init__(self) -> None:
        home = Path(self.home)
        object.__setattr__(self, "home", home)
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{home.absolute() / 'artifactstore.db'}"
            )
        if not self.storage_url:
            object.__setattr__(self, "storage_url", f"file://{home.absolute() / 'storage'}")
        if not self.cold_storage_url:
            object.__setattr__(self, "cold_storage_url", f"file://{home.absolute() / 'cold'}")
        if not self.actor:
            object.__setattr__(self, "actor", _default_actor())
        if isinstance(self.trusted_proxies, list | tuple):  # a TOML list
            object.__setattr__(self, "trusted_proxies", ",".join(map(str, self.trusted_proxies)))
        self.trusted_networks()  # refuse a malformed list at start-up, not per request
        if self.header_timeout <= 0:
            raise InvalidInput("HEADER_TIMEOUT must be a positive duration")
        if not 1 <= self.max_query_filters <= MAX_QUERY_FILTERS:
            raise InvalidInput(
                f"MAX_QUERY_FILTERS must be between 1 and {MAX_QUERY_FILTERS}, "
                f"not {self.max_query_filters}"
            )
        if not 0 <= self.presign_downloads <= _PRESIGN_MAX:
            raise InvalidInput(
                f"PRESIGN_DOWNLOADS must be from 0 to 7 days (S3's longest presigned URL), "
                f"not {self.presign_downloads}"
            )
        if self.max_batch_members < 1:
            raise InvalidInput(f"MAX_BATCH_MEMBERS must be 1 or more, not {self.max_batch_members}")
        if self.disk_reserve_bytes < 0:
            raise InvalidInput(
                f"DISK_RESERVE_BYTES must be 0 or more, not {self.disk_reserve_bytes}"
            )
        self.nats_servers()  # refuse a malformed NATS_URL at start-up, not at the first publish
        if not _STREAM_NAME.fullmatch(self.nats_stream):
            raise InvalidSetting(
                f"NATS_STREAM {self.nats_stream[:60]!r} is not a JetStream stream name "
                "(letters, digits, - and _, at most 64)"
            )
        if not _SUBJECT_PREFIX.fullmatch(self.nats_subject_prefix):
            raise InvalidSetting(
                f"NATS_SUBJECT_PREFIX {self.nats_subject_prefix[:60]!r} is not a NATS subject "
                "prefix (dot-separated tokens without spaces, * or >)"
            )
        if not self.log_origin or any(
            c.isspace() or c == "+" or ord(c) < 0x20 for c in self.log_origin
        ):
            raise InvalidSetting(
                f"LOG_ORIGIN {self.log_origin[:60]!r} must be non-empty, without spaces or +"
            )
        if self.log_checkpoint_interval < 0:
            raise InvalidSetting("LOG_CHECKPOINT_INTERVAL must be 0 (off) or more seconds")
        if self.primary_digest not in ("blake3", "sha256"):
            raise InvalidInput(
                f"PRIMARY_DIGEST must be blake3 or sha256, not {self.primary_digest!r}"
            )

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        cfg_path = Path(env.get("ARTIFACTSTORE_CONFIG", "artifactstore.toml"))
        if cfg_path.is_file():
            with cfg_path.open("rb") as fh:
                values.update(tomllib.load(fh))
        for f in dataclasses.fields(cls):
            raw = env.get(f"ARTIFACTSTORE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInput(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**{name: _coerce(cls, name, v) for name, v in values.items()})

    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies`` parsed: a bare address is a network of one."""
        out = []
        for item in self.trusted_proxies.split(","):
            if item.strip():
                try:
                    out.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise InvalidInput(
                        f"TRUSTED_PROXIES: {item.strip()[:60]!r} is not an address or a "
                        "CIDR network (e.g. 10.0.0.0/8, 192.0.2.7, ::1)"
                    ) from None
        return tuple(out)

    def nats_servers(self) -> tuple[str, ...]:
        """``nats_url`` split into its servers (none: the stream is off); each is checked
        here so that ``serve`` refuses a wrong scheme before it starts."""
        servers = tuple(item.strip() for item in self.nats_url.split(",") if item.strip())
        for server in servers:
            scheme, sep, rest = server.partition("://")
            if not sep or scheme.lower() not in _NATS_SCHEMES or not rest.strip("/"):
                shown = _redact_nats(server)[:80]
                raise InvalidSetting(
                    f"NATS_URL {shown!r} is not a NATS server URL: use "
                    "nats://HOST:PORT (or tls://, ws://, wss://), e.g. nats://127.0.0.1:4222"
                )
        return servers

    def redacted_nats_url(self) -> str:
        """``nats_url`` for logs: a password or a token (user info without one) hidden."""
        return _redact_nats(self.nats_url)

    def log_key_path(self) -> Path:
        """The checkpoint signing key's file: LOG_SIGNING_KEY, or the default under HOME."""
        return Path(self.log_signing_key) if self.log_signing_key else self.home / "log-signing.key"

    def redacted_database_url(self) -> str:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.database_url)


def _redact_nats(text: str) -> str:
    """A NATS URL list with each password, or a token (user info without one), hidden."""
    text = re.sub(r"//([^:/@,]+):[^@,]*@", r"//\1:***@", text)
    return re.sub(r"//[^:/@,]+@", "//***@", text)


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    if not isinstance(value, str):
        return value
    if kind == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidInput(f"setting {name} must be true or false, not {value!r}")
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise InvalidInput(f"setting {name} must be an integer, not {value!r}") from None
    if kind == "float":
        return parse_duration(value)
    if kind == "Path":
        return Path(value)
    return value


SETTINGS_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(Settings)}
