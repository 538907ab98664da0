"""Settings: built-in defaults, then a flat TOML file, then RIG's environment variables.

Every value is checked once, here, so a bad setting stops the daemon at start
with one line naming the variable, instead of failing later inside a service.
Services receive a :class:`Settings`, never ``os.environ``.
"""

import math
import os
import re
import tomllib
from collections.abc import Callable

import attrs

from rig import defaults
from rig.auth.jwt import ALGORITHMS, load_key
from rig.jsonsource import load_path_or_json
from rig.listeners import parse_description, tcp_address
from rig.logs import parse_format, parse_level
from rig.nats.client import parse_servers
from rig.nats.protocol import check_queue, check_subject
from rig.proxy.definitions import validate, with_defaults
from rig.proxy.targets import TargetPolicy, local_names
from rig.streams.source import parse_redis_url
from rig.subscriptions.extractors import ExtractorConfig, parse_extractors
from rig.subscriptions.pointer import parse_pointer
from rig.tls import load_certificates, load_private_key, server_options
from rig.tracing import config as tracing


class SettingsError(Exception):
    """A bad setting; ``str()`` is one line naming it."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).splitlines()))


@attrs.frozen
class Settings:
    """The validated configuration of one node.

    Validation happens in :meth:`from_mapping`; constructing a ``Settings``
    directly trusts the caller, so tests can pick tiny limits and timeouts.
    """

    inbound_listen: str = "tcp:4000"
    api_listen: str = "tcp:4010"
    inbound_https_listen: str = "tcp:4001"
    api_https_listen: str = "tcp:4011"
    https_certfile: str | None = None
    https_keyfile: str | None = None
    https_keyfile_pass: str | None = attrs.field(default=None, repr=False)
    api_https_client_ca: str | None = None
    api_auth_tokens: tuple = attrs.field(default=(), repr=False)
    host: str = "localhost"
    cors: str = "*"
    examples_enabled: bool = False
    max_connections_per_minute: int = defaults.MAX_CONNECTIONS_PER_MINUTE
    extractors: ExtractorConfig = attrs.field(factory=ExtractorConfig)
    node_host: str = "127.0.0.1"
    node_cookie: str | None = attrs.field(default=None, repr=False)
    log_level: str = "info"
    log_fmt: str = "text"
    prometheus_metrics_enabled: bool = True
    dashboard_enabled: bool = True
    heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL
    longpoll_wait: float = 5.0
    longpoll_buffer_size: int = 200
    longpoll_session_ttl: float = 3600.0
    send_queue_limit: int = defaults.SEND_QUEUE_LIMIT
    recovery_history_size: int = defaults.RECOVERY_HISTORY_SIZE
    recovery_history_age: float = defaults.RECOVERY_HISTORY_AGE
    shutdown_drain_timeout: float = 10.0
    max_request_bytes: int = 8000000
    http_header_timeout: float = 30.0
    http_idle_timeout: float = 75.0
    listen_backlog: int = defaults.LISTEN_BACKLOG
    jwt_secret_key: str = attrs.field(default="", repr=False)
    jwt_alg: str = "HS256"
    jwt_jwks_url: str | None = None
    jwt_session_field: tuple = ("jti",)
    jwt_leeway: float = 10.0
    subscription_check: str = "no_check"
    submission_check: str = "no_check"
    auth_check_timeout: float = 5.0
    proxy_config: tuple = ()
    proxy_use_env_allowed: tuple = ()
    proxy_recv_timeout: float = 5.0
    proxy_http_async_response_timeout: float = 5.0
    proxy_max_body_bytes: int = 1 << 30
    request_log: tuple = ()
    cluster_listen: str | None = None
    cluster_seeds: tuple = ()
    cluster_tls_ca: str | None = None
    cluster_interest_timeout: float = 1.0
    cluster_backplane: tuple = attrs.field(default=(), repr=False)  # (kind, address) or ()
    cluster_backplane_prefix: str = "rig.events."
    redis_url: object = None  # a RedisAddress, or None: Redis is optional
    redis_source_streams: tuple = ("rig",)
    redis_consumer_group: str = "rig"
    proxy_redis_response_stream: str = "rig-proxy-response"
    proxy_redis_response_timeout: float = 5.0
    nats_servers: tuple = attrs.field(default=(), repr=False)  # NatsServer; empty: NATS off
    nats_source_topics: tuple = ("rig",)
    nats_queue_group: str = "rig-nats-to-filter"
    proxy_nats_response_timeout: float = 60.0
    discovery_type: str | None = None
    dns_name: str = "localhost"
    workers: int = 1
    # tracing (rig/tracing/config.py says which exporter each one configures)
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_headers: tuple = attrs.field(default=(), repr=False)
    otel_exporter_otlp_timeout: float = 10.0
    otel_exporter_otlp_compression: str = "none"
    otel_exporter_otlp_protocol: str = "http/protobuf"
    otel_service_name: str = ""
    otel_resource_attributes: tuple = ()
    otel_traces_sampler: str = "parentbased_always_on"
    otel_traces_sampler_arg: float = 1.0
    otel_bsp_schedule_delay: float = 5.0
    otel_bsp_max_queue_size: int = 2048
    otel_bsp_max_export_batch_size: int = 512
    zipkin_addr: str | None = None
    zipkin_service_name: str = "rig"
    jaeger_host: str | None = None
    jaeger_port: int = 6831
    jaeger_service_name: str = "rig"
    # set by the supervisor for each of its workers, never read from a file or variable
    worker_index: int | None = None
    worker_siblings: tuple = ()

    @classmethod
    def load(cls, config_path, environ):
        """Read ``config_path`` (optional) and let ``environ`` override it."""
        if config_path is None:
            return cls.from_mapping({}, environ)
        mapping = _read_toml(config_path)
        _reject_unknown(mapping, config_path)
        if isinstance(mapping.get("extractors"), str):
            mapping["extractors"] = _beside(config_path, mapping["extractors"])
        return cls.from_mapping(mapping, environ)

    @classmethod
    def from_mapping(cls, mapping, environ):
        """Build from decoded TOML (typed values) and an environment (strings)."""
        _reject_unknown(mapping, "the settings")
        values = {}
        for spec in _SPECS:
            if spec.key in mapping:
                values[spec.field] = spec.convert(spec.check, mapping[spec.key])
            text = environ.get(spec.env, "")
            if text.strip():
                values[spec.field] = spec.convert(spec.parse, text)
        _check_jwt_key(values)
        _check_https(values)
        _check_client_ca(values)
        if values.get("cluster_listen") and not values.get("node_cookie"):
            raise SettingsError("NODE_COOKIE: required when CLUSTER_PORT is set "
                                "(it authenticates every node of the cluster)")
        if values.get("workers", 1) > 1:
            _check_workers(values)
        if values.get("cluster_backplane") and not values.get("cluster_listen") \
                and values.get("workers", 1) == 1:
            raise SettingsError("CLUSTER_BACKPLANE: set without CLUSTER_PORT (the backplane"
                                " carries a cluster's events; the mesh is its fallback)")
        _check_proxy_targets(values, environ)
        return cls(**values)


# Value checks. Each raises ValueError (or TypeError) with a message that does
# not name the key; _Spec.convert prefixes the environment variable name.

_PORT_TEXT = re.compile(r"\d+")
_ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*:\S*")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")


def _listener(value):
    """A port number (int or digits) becomes ``tcp:N``; anything else must look like an endpoint."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"tcp:{_port(value)}"
    if not isinstance(value, str):
        raise TypeError(f"expected a port number or a Twisted endpoint string, got {value!r}")
    text = value.strip()
    if _PORT_TEXT.fullmatch(text):
        return f"tcp:{_port(int(text))}"
    if not _ENDPOINT.fullmatch(text):
        raise ValueError(f"expected a port number or a Twisted endpoint string, got {value!r}")
    kind, _, rest = text.partition(":")
    first = rest.split(":", 1)[0]
    positional_port = kind.lower() in ("tcp", "tcp6", "ssl") and "=" not in first
    if positional_port and not (_PORT_TEXT.fullmatch(first) and int(first) <= 65535):
        raise ValueError(f"port must be a number 0..65535 in endpoint {value!r}")
    return text


def _tls_listener(value):
    """Like _listener: where to listen; TLS is layered on top with HTTPS_CERTFILE/KEYFILE.

    So any stream endpoint works (tcp, tcp6, unix, systemd), but not ``ssl:``,
    which brings its own certificate and would wrap TLS twice.
    """
    description = _listener(value)
    if description.split(":", 1)[0].lower() == "ssl":
        raise ValueError(
            f"expected a port number or a plain stream endpoint (tcp:, unix:, systemd:), "
            f"got {value!r}; the certificate comes from HTTPS_CERTFILE and HTTPS_KEYFILE")
    return description


def _port(number):
    if not 0 <= number <= 65535:
        raise ValueError(f"port number must be 0..65535, got {number}")
    return number


def _port_number():
    check_int, parse_int = _integer(1)
    return (lambda value: _port(check_int(value))), (lambda text: _port(parse_int(text)))


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value.strip()


def _node_host(value):
    """Connection tokens carry the node name in at most 255 bytes."""
    text = _text(value)
    if len(text.encode("utf-8")) > 200:
        raise ValueError("must be at most 200 bytes long")
    return text


def _secret(value):
    """Like _text, but the message never shows the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string (value not shown)")
    return value.strip()


def _optional_path(value):
    """A file path, or empty for unset (RIG's default for the HTTPS files is "")."""
    if not isinstance(value, str):
        raise TypeError(f"must be a file path, got {value!r}")
    return value.strip() or None


def _passphrase(value):
    """Kept verbatim (spaces count in a passphrase); messages never show it."""
    if not isinstance(value, str):
        raise TypeError("must be a string (value not shown)")
    return value or None


def _integer(minimum):
    """Checks for a typed value and for environment text, with one shared message."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value!r}")
        return value

    def parse(text):
        if not _INTEGER_TEXT.fullmatch(text.strip()):
            raise ValueError(f"must be an integer >= {minimum}, got {text!r}")
        return check(int(text))

    return check, parse


def _boolean():
    """A TOML boolean, or true/false (yes/no, on/off, 1/0) in the environment."""

    def check(value):
        if not isinstance(value, bool):
            raise TypeError(f"must be true or false, got {value!r}")
        return value

    def parse(text):
        word = text.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"must be true or false, got {text!r}")

    return check, parse


def _check_seconds(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a number > 0, got {value!r}")
    return float(value)


def _parse_seconds(text):
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"must be a number > 0, got {text!r}") from None
    return _check_seconds(number)


def _extractors(value):
    if isinstance(value, ExtractorConfig):
        return value
    if not isinstance(value, str | dict):
        raise TypeError(f"expected a file path, JSON text or a table, got {value!r}")
    return parse_extractors(value)


def _jwt_algorithm(value):
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {value!r}")
    by_upper = {name.upper(): name for name in ALGORITHMS}
    name = by_upper.get(value.strip().upper())
    if name is None:
        raise ValueError(f"must be one of {', '.join(ALGORITHMS)}, got {value!r}")
    return name


def _url(value):
    text = _text(value)
    if not text.lower().startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return text


def _pointer(value):
    if not isinstance(value, str):
        raise TypeError(f"must be a JSON pointer string, got {value!r}")
    return parse_pointer(value.strip())


def _check_mode(value):
    """no_check, jwt_validation (any case) or the URL of an external checker."""
    text = _text(value)
    if text.lower() in ("no_check", "jwt_validation"):
        return text.lower()
    return _url(text)


def _check_jwt_key(values):
    """An asymmetric JWT_ALG needs a key that parses; say so at start, not per request."""
    algorithm = values.get("jwt_alg", "HS256")
    material = values.get("jwt_secret_key", "")
    if values.get("jwt_jwks_url") and not material:
        return
    if not material:
        return
    try:
        load_key(algorithm, material)
    except (ValueError, OSError) as error:
        raise SettingsError(f"JWT_SECRET_KEY: {error} (JWT_ALG={algorithm})") from None


def _check_https(values):
    """Spec 1.1: both files or neither; the password only with them; files load now."""
    certfile = values.get("https_certfile")
    keyfile = values.get("https_keyfile")
    password = values.get("https_keyfile_pass")
    if not (certfile or keyfile):
        if password:
            raise SettingsError(
                "HTTPS_KEYFILE_PASS: set without a certificate and key. Please also set "
                "HTTPS_CERTFILE and HTTPS_KEYFILE, or unset HTTPS_KEYFILE_PASS")
        return
    if not keyfile:
        raise SettingsError("HTTPS_KEYFILE: missing while HTTPS_CERTFILE is set. Please also "
                            "set HTTPS_KEYFILE, or unset HTTPS_CERTFILE to disable HTTPS")
    if not certfile:
        raise SettingsError("HTTPS_CERTFILE: missing while HTTPS_KEYFILE is set. Please also "
                            "set HTTPS_CERTFILE, or unset HTTPS_KEYFILE to disable HTTPS")
    try:
        certificates = load_certificates(certfile)
    except ValueError as error:
        raise SettingsError(f"HTTPS_CERTFILE: {error}") from None
    try:
        key = load_private_key(keyfile, password)
    except ValueError as error:
        raise SettingsError(f"HTTPS_KEYFILE: {error}") from None
    try:
        server_options(certificates, key)
    except ValueError as error:
        raise SettingsError(f"HTTPS_KEYFILE: {error} ({keyfile!r}, {certfile!r})") from None


def _workers(value):
    """A number of worker processes, or ``auto``: one per usable core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    check, parse = _integer(1)
    try:
        return parse(value) if isinstance(value, str) else check(value)
    except ValueError:
        raise ValueError(f"must be an integer >= 1 or auto, got {value!r}") from None


def _check_workers(values):
    """Workers share TCP ports, and each listens for cluster links on CLUSTER_PORT + i."""
    count = values["workers"]
    listeners = [("inbound_listen", "INBOUND_PORT"), ("api_listen", "API_HTTP_PORT")]
    if values.get("https_certfile"):
        listeners += [("inbound_https_listen", "INBOUND_HTTPS_PORT"),
                      ("api_https_listen", "API_HTTPS_PORT")]
    for field, env in listeners:
        description = values.get(field, attrs.fields_dict(Settings)[field].default)
        if tcp_address(description) is None:
            raise SettingsError(f"{env}: with WORKERS={count} every listener must be a port or a"
                                f" tcp: or tcp6: endpoint (they share it), got {description!r}")
    cluster = values.get("cluster_listen")
    if cluster is not None:
        kind, positional, _ = parse_description(cluster)
        port = int(positional[0]) if kind in ("tcp", "tcp6", "ssl") and positional else 0
        if not 0 < port <= 65536 - count:
            raise SettingsError(f"CLUSTER_PORT: with WORKERS={count} worker i listens on "
                                f"CLUSTER_PORT + i, so it must be a tcp:, tcp6: or ssl: port "
                                f"from 1 to {65536 - count}, got {cluster!r}")
    elif values.get("cluster_seeds") or values.get("discovery_type"):
        raise SettingsError("CLUSTER_SEEDS: other machines can join the workers only on a"
                            " CLUSTER_PORT (without one they talk over loopback only)")


def _variable_names(value):
    """Environment variable names, comma-separated (or a TOML array); ``NAME*`` is a prefix."""
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\*?", name):
            raise ValueError(f"expected environment variable names (NAME or PREFIX*), got {name!r}")
    return names


def _check_proxy_targets(values, environ):
    """An API of PROXY_CONFIG_FILE may not read a variable that is not allowed, nor point
    at this gateway's own listeners (one line naming the API)."""
    apis = values.get("proxy_config", ())
    if not apis:
        return
    ports = {}
    for field, name in (("inbound_listen", "inbound"), ("api_listen", "internal")):
        address = tcp_address(values.get(field, attrs.fields_dict(Settings)[field].default))
        if address is not None and address[2]:
            ports[address[2]] = name
    policy = TargetPolicy(env_allowed=values.get("proxy_use_env_allowed", ()),
                          environ=dict(environ), own_ports=lambda: ports,
                          local_names=local_names(values.get("host"), values.get("node_host")),
                          nats_enabled=bool(values.get("nats_servers")))
    for api in apis:
        for entry in policy.errors(api["proxy"]):
            (field, message), = entry.items()
            raise SettingsError(f"PROXY_CONFIG_FILE: API {api['id']!r}: proxy.{field} {message}")
        for key, entries in validate(api, policy).items():  # what needs the settings: NATS
            (field, message), = entries[0].items()
            raise SettingsError(f"PROXY_CONFIG_FILE: API {api['id']!r}: endpoint {key}:"
                                f" {field} {message}")


MIN_TOKEN_LENGTH = 16


def _auth_tokens(value):
    """Bearer tokens for the internal API: a list, comma-separated text, or the path of a
    file with one token a line (``#`` comments). Messages never show a token."""
    if isinstance(value, str) and value.strip() and os.path.isfile(value.strip()):
        try:
            with open(value.strip(), encoding="utf-8") as tokens_file:
                items = [line.strip() for line in tokens_file
                         if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {value.strip()!r}: {error}") from None
    elif isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = value.split(",")
    else:
        raise TypeError("must be a list of tokens, comma-separated tokens or a file path"
                        " (value not shown)")
    tokens = tuple(str(item).strip() for item in items if str(item).strip())
    if any(len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token)
           for token in tokens):
        raise ValueError(f"every token must be at least {MIN_TOKEN_LENGTH} characters with no"
                         " spaces (value not shown)")
    return tokens


def _check_client_ca(values):
    """Mutual TLS on the internal HTTPS port needs HTTPS on and a readable CA file."""
    path = values.get("api_https_client_ca")
    if not path:
        return
    if not values.get("https_certfile"):
        raise SettingsError("API_HTTPS_CLIENT_CA: set without HTTPS_CERTFILE and HTTPS_KEYFILE"
                            " (client certificates are checked on the internal HTTPS port)")
    try:
        load_certificates(path)
    except ValueError as error:
        raise SettingsError(f"API_HTTPS_CLIENT_CA: {error}") from None


def _milliseconds():
    """RIG gives timeouts in milliseconds; the services want seconds."""
    check_int, parse_int = _integer(1)
    return (lambda value: check_int(value) / 1000.0), (lambda text: parse_int(text) / 1000.0)


def _seeds(value):
    """``host:port`` peers to join, comma-separated (or a TOML array)."""
    items = value if isinstance(value, list) else str(value).split(",")
    seeds = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        host, _, port = text.rpartition(":")
        if not host or not _PORT_TEXT.fullmatch(port) or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port entries, got {text!r}")
        seeds.append(text)
    return tuple(seeds)


def _redis_url(value):
    return parse_redis_url(_text(value))


def _backplane(value):
    """``redis://...``/``rediss://...`` (Redis Pub/Sub) or ``nats://...``/``tls://...``
    (NATS, comma-separated servers); empty: the mesh carries the events."""
    text = _text(value)
    scheme = text.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return ("redis", parse_redis_url(text))
    if scheme in ("nats", "tls"):
        return ("nats", parse_servers(text))
    raise ValueError(f"expected a redis://, rediss://, nats:// or tls:// URL, got {scheme}://")


def _channel_prefix(value):
    text = _text(value)
    check_subject(text + "type")
    return text


def _nats_servers(value):
    return parse_servers(value)


def _subjects(value):
    """NATS subjects to consume (wildcards allowed), comma-separated or a TOML array."""
    return tuple(check_subject(name, wildcards=True) for name in _names(value))


def _queue_group(value):
    return check_queue(_text(value))


def _names(value):
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError("must name at least one")
    return names


def _readable_file(value):
    path = _text(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file {path!r}")
    return path


def _discovery(value):
    text = _text(value).lower()
    if text != "dns":
        raise ValueError(f"the only discovery type is dns, got {value!r}")
    return text


def _request_log(value):
    items = value if isinstance(value, list) else str(value).split(",")
    loggers = tuple(item.strip().lower() for item in items if str(item).strip())
    for logger in loggers:
        if logger != "console":
            raise ValueError(f"unknown request logger {logger!r} (supported: console)")
    return loggers


def _proxy_config(value):
    """API definitions from a file path or JSON text, validated as at start-up in RIG."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, str):
        value = load_path_or_json(value)
    if not isinstance(value, list):
        raise ValueError("must be a JSON array of API definitions")
    seen = set()
    apis = []
    for api in value:
        errors = validate(api)
        if errors:
            key, entries = next(iter(errors.items()))
            field, message = next(iter(entries[0].items()))
            where = "API" if key == "api" else f"API {key!r}"
            raise ValueError(f"{where}: {field} {message}")
        if api["id"] in seen:
            raise ValueError(f"API {api['id']!r}: duplicate id")
        seen.add(api["id"])
        apis.append(with_defaults(api, uppercase_methods=True))
    return tuple(apis)


@attrs.frozen
class _Spec:
    """How one setting is read: its field, its variable, and how to check each source."""

    field: str
    env: str
    check: Callable  # a typed value from the file
    parse: Callable  # a string from the environment

    @property
    def key(self):
        return self.env.lower()

    def convert(self, function, value):
        try:
            return function(value)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{self.env}: {error}") from None


def _spec(field, env, check, parse=None):
    return _Spec(field, env, check, parse or check)


_SPECS = (
    _spec("inbound_listen", "INBOUND_PORT", _listener),
    _spec("api_listen", "API_HTTP_PORT", _listener),
    _spec("inbound_https_listen", "INBOUND_HTTPS_PORT", _tls_listener),
    _spec("api_https_listen", "API_HTTPS_PORT", _tls_listener),
    _spec("https_certfile", "HTTPS_CERTFILE", _optional_path),
    _spec("https_keyfile", "HTTPS_KEYFILE", _optional_path),
    _spec("https_keyfile_pass", "HTTPS_KEYFILE_PASS", _passphrase),
    _spec("api_https_client_ca", "API_HTTPS_CLIENT_CA", _optional_path),
    _spec("api_auth_tokens", "API_AUTH_TOKENS", _auth_tokens),
    _spec("host", "HOST", _text),
    _spec("cors", "CORS", _text),
    _spec("examples_enabled", "EXAMPLES_ENABLED", *_boolean()),
    _spec("max_connections_per_minute", "MAX_CONNECTIONS_PER_MINUTE", *_integer(1)),
    _spec("extractors", "EXTRACTORS", _extractors),
    _spec("node_host", "NODE_HOST", _node_host),
    _spec("node_cookie", "NODE_COOKIE", _secret),
    _spec("log_level", "LOG_LEVEL", parse_level),
    _spec("log_fmt", "LOG_FMT", parse_format),
    _spec("prometheus_metrics_enabled", "PROMETHEUS_METRICS_ENABLED", *_boolean()),
    _spec("dashboard_enabled", "DASHBOARD_ENABLED", *_boolean()),
    _spec("heartbeat_interval", "HEARTBEAT_INTERVAL", _check_seconds, _parse_seconds),
    _spec("longpoll_wait", "LONGPOLL_WAIT", _check_seconds, _parse_seconds),
    _spec("longpoll_buffer_size", "LONGPOLL_BUFFER_SIZE", *_integer(1)),
    _spec("longpoll_session_ttl", "LONGPOLL_SESSION_TTL", _check_seconds, _parse_seconds),
    _spec("send_queue_limit", "SEND_QUEUE_LIMIT", *_integer(1024)),
    _spec("recovery_history_size", "RECOVERY_HISTORY_SIZE", *_integer(0)),
    _spec("recovery_history_age", "RECOVERY_HISTORY_AGE", _check_seconds, _parse_seconds),
    _spec("shutdown_drain_timeout", "SHUTDOWN_DRAIN_TIMEOUT", _check_seconds, _parse_seconds),
    _spec("max_request_bytes", "MAX_REQUEST_BYTES", *_integer(1)),
    _spec("http_header_timeout", "HTTP_HEADER_TIMEOUT", _check_seconds, _parse_seconds),
    _spec("http_idle_timeout", "HTTP_IDLE_TIMEOUT", _check_seconds, _parse_seconds),
    _spec("listen_backlog", "LISTEN_BACKLOG", *_integer(1)),
    _spec("jwt_secret_key", "JWT_SECRET_KEY", _secret),
    _spec("jwt_alg", "JWT_ALG", _jwt_algorithm),
    _spec("jwt_jwks_url", "JWT_JWKS_URL", _url),
    _spec("jwt_session_field", "JWT_SESSION_FIELD", _pointer),
    _spec("jwt_leeway", "JWT_LEEWAY", _check_seconds, _parse_seconds),
    _spec("subscription_check", "SUBSCRIPTION_CHECK", _check_mode),
    _spec("submission_check", "SUBMISSION_CHECK", _check_mode),
    _spec("auth_check_timeout", "AUTH_CHECK_TIMEOUT", _check_seconds, _parse_seconds),
    _spec("proxy_config", "PROXY_CONFIG_FILE", _proxy_config),
    _spec("proxy_use_env_allowed", "PROXY_USE_ENV_ALLOWED", _variable_names),
    _spec("proxy_recv_timeout", "PROXY_RECV_TIMEOUT", *_milliseconds()),
    _spec("proxy_http_async_response_timeout", "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT",
          *_milliseconds()),
    _spec("proxy_max_body_bytes", "PROXY_MAX_BODY_BYTES", *_integer(1)),
    _spec("request_log", "REQUEST_LOG", _request_log),
    _spec("cluster_listen", "CLUSTER_PORT", _listener),
    _spec("cluster_seeds", "CLUSTER_SEEDS", _seeds),
    _spec("cluster_tls_ca", "CLUSTER_TLS_CA", _readable_file),
    _spec("cluster_interest_timeout", "CLUSTER_INTEREST_TIMEOUT", _check_seconds,
          _parse_seconds),
    _spec("cluster_backplane", "CLUSTER_BACKPLANE", _backplane),
    _spec("cluster_backplane_prefix", "CLUSTER_BACKPLANE_PREFIX", _channel_prefix),
    _spec("redis_url", "REDIS_URL", _redis_url),
    _spec("redis_source_streams", "REDIS_SOURCE_STREAMS", _names),
    _spec("redis_consumer_group", "REDIS_CONSUMER_GROUP", _text),
    _spec("proxy_redis_response_stream", "PROXY_REDIS_RESPONSE_STREAM", _text),
    _spec("proxy_redis_response_timeout", "PROXY_REDIS_RESPONSE_TIMEOUT", *_milliseconds()),
    _spec("nats_servers", "NATS_SERVERS", _nats_servers),
    _spec("nats_source_topics", "NATS_SOURCE_TOPICS", _subjects),
    _spec("nats_queue_group", "NATSTOFILTER_QUEUE_GROUP", _queue_group),
    _spec("proxy_nats_response_timeout", "PROXY_NATS_RESPONSE_TIMEOUT", *_milliseconds()),
    _spec("discovery_type", "DISCOVERY_TYPE", _discovery),
    _spec("dns_name", "DNS_NAME", _text),
    _spec("workers", "WORKERS", _workers),
    _spec("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", _url),
    _spec("otel_exporter_otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _url),
    _spec("otel_exporter_otlp_headers", "OTEL_EXPORTER_OTLP_HEADERS", tracing.otlp_headers),
    _spec("otel_exporter_otlp_timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", *_milliseconds()),
    _spec("otel_exporter_otlp_compression", "OTEL_EXPORTER_OTLP_COMPRESSION",
          tracing.compression),
    _spec("otel_exporter_otlp_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", tracing.protocol),
    _spec("otel_service_name", "OTEL_SERVICE_NAME", _text),
    _spec("otel_resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", tracing.resource_attributes),
    _spec("otel_traces_sampler", "OTEL_TRACES_SAMPLER", tracing.sampler_name),
    _spec("otel_traces_sampler_arg", "OTEL_TRACES_SAMPLER_ARG", tracing.ratio),
    _spec("otel_bsp_schedule_delay", "OTEL_BSP_SCHEDULE_DELAY", *_milliseconds()),
    _spec("otel_bsp_max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE", *_integer(1)),
    _spec("otel_bsp_max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", *_integer(1)),
    _spec("zipkin_addr", "ZIPKIN_ADDR", _url),
    _spec("zipkin_service_name", "ZIPKIN_SERVICE_NAME", _text),
    _spec("jaeger_host", "JAEGER_HOST", _text),
    _spec("jaeger_port", "JAEGER_PORT", *_port_number()),
    _spec("jaeger_service_name", "JAEGER_SERVICE_NAME", _text),
)


def _read_toml(path):
    try:
        with open(path, "rb") as config_file:
            return tomllib.load(config_file)
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"invalid TOML in {path}: {error}") from None


def _reject_unknown(mapping, where):
    known = {spec.key for spec in _SPECS}
    for key in mapping:
        if key not in known:
            raise SettingsError(f"unknown setting {key!r} in {where}")


def _beside(config_path, value):
    """A relative extractor path not found as given is tried next to the settings file.

    RIG tries its ``priv`` directory in the same way; here the file's own
    directory plays that role, which suits daemons started with cwd ``/``.
    """
    path = value.strip()
    if path.startswith(("{", "[")) or os.path.isabs(path) or os.path.isfile(path):
        return value
    candidate = os.path.join(os.path.dirname(os.path.abspath(config_path)), path)
    return candidate if os.path.isfile(candidate) else value


def env_names():
    """The environment variables the settings read, in declaration order."""
    return tuple(spec.env for spec in _SPECS)
