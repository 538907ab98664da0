"""Settings: defaults < file < environment, and one-line errors naming the key."""

import json
import os
import tomllib

import pytest

from rig.settings import Settings, SettingsError, env_names
from rig.subscriptions.extractors import ExtractorConfig

ETC_TOML = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "rig.toml")

EXTRACTORS = {
    "greeting": {
        "name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}},
    }
}


def write(tmp_path, text, name="rig.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_for(mapping=None, environ=None):
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping(mapping or {}, environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_env_names():
    assert set(env_names()) == {
        "JWT_SECRET_KEY",
        "JWT_ALG",
        "JWT_JWKS_URL",
        "JWT_SESSION_FIELD",
        "JWT_LEEWAY",
        "SUBSCRIPTION_CHECK",
        "SUBMISSION_CHECK",
        "AUTH_CHECK_TIMEOUT",
        "PROXY_CONFIG_FILE",
        "PROXY_RECV_TIMEOUT",
        "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT",
        "PROXY_MAX_BODY_BYTES",
        "REQUEST_LOG",
        "CLUSTER_PORT",
        "CLUSTER_SEEDS",
        "CLUSTER_TLS_CA",
        "REDIS_URL",
        "REDIS_SOURCE_STREAMS",
        "REDIS_CONSUMER_GROUP",
        "PROXY_REDIS_RESPONSE_STREAM",
        "PROXY_REDIS_RESPONSE_TIMEOUT",
        "DISCOVERY_TYPE",
        "DNS_NAME",
        "INBOUND_PORT",
        "API_HTTP_PORT",
        "HOST",
        "CORS",
        "MAX_CONNECTIONS_PER_MINUTE",
        "EXTRACTORS",
        "NODE_HOST",
        "NODE_COOKIE",
        "LOG_LEVEL",
        "LOG_FMT",
        "PROMETHEUS_METRICS_ENABLED",
        "HEARTBEAT_INTERVAL",
        "LONGPOLL_WAIT",
        "LONGPOLL_BUFFER_SIZE",
        "LONGPOLL_SESSION_TTL",
        "SEND_QUEUE_LIMIT",
        "MAX_REQUEST_BYTES",
    }


def test_defaults():
    settings = Settings.load(None, {})
    assert settings == Settings()
    assert settings.inbound_listen == "tcp:4000"
    assert settings.api_listen == "tcp:4010"
    assert settings.host == "localhost"
    assert settings.cors == "*"
    assert settings.max_connections_per_minute == 5000
    assert settings.extractors == ExtractorConfig()
    assert settings.node_host == "127.0.0.1"
    assert settings.node_cookie is None
    assert (settings.log_level, settings.log_fmt) == ("info", "text")
    assert settings.heartbeat_interval == 15.0
    assert settings.longpoll_wait == 5.0
    assert settings.longpoll_buffer_size == 200
    assert settings.longpoll_session_ttl == 3600.0
    assert settings.send_queue_limit == 1048576
    assert settings.max_request_bytes == 8000000


def test_file_values(tmp_path):
    path = write(
        tmp_path,
        """
inbound_port = 5000
api_http_port = "tcp:0:interface=127.0.0.1"
host = "rig.example"
cors = "https://app.example"
max_connections_per_minute = 10
node_host = "10.0.0.1"
node_cookie = "s3cret"
log_level = "WARNING"
log_fmt = "gcl"
heartbeat_interval = 2
longpoll_wait = 0.5
longpoll_buffer_size = 3
longpoll_session_ttl = 60
send_queue_limit = 2048
max_request_bytes = 100
""",
    )
    settings = Settings.load(path, {})
    assert settings.inbound_listen == "tcp:5000"
    assert settings.api_listen == "tcp:0:interface=127.0.0.1"
    assert settings.host == "rig.example"
    assert settings.cors == "https://app.example"
    assert settings.max_connections_per_minute == 10
    assert settings.node_host == "10.0.0.1"
    assert settings.node_cookie == "s3cret"
    assert (settings.log_level, settings.log_fmt) == ("warn", "json")
    assert settings.heartbeat_interval == 2.0
    assert isinstance(settings.heartbeat_interval, float)
    assert settings.longpoll_wait == 0.5
    assert settings.longpoll_buffer_size == 3
    assert settings.longpoll_session_ttl == 60.0
    assert settings.send_queue_limit == 2048
    assert settings.max_request_bytes == 100


def test_env_overrides_file(tmp_path):
    path = write(tmp_path, 'inbound_port = 5000\nlog_level = "debug"\nhost = "file"\n')
    environ = {
        "INBOUND_PORT": "6000",
        "LOG_LEVEL": "Error",
        "LONGPOLL_WAIT": "1.5",
        "SEND_QUEUE_LIMIT": "4096",
        "NODE_COOKIE": "from-env",
        "LOG_FMT": "erlang",
    }
    settings = Settings.load(path, environ)
    assert settings.inbound_listen == "tcp:6000"
    assert settings.log_level == "error"
    assert settings.host == "file"
    assert settings.longpoll_wait == 1.5
    assert settings.send_queue_limit == 4096
    assert settings.node_cookie == "from-env"
    assert settings.log_fmt == "text"


def test_empty_and_unknown_env_values_are_ignored(tmp_path):
    path = write(tmp_path, "inbound_port = 5000\n")
    environ = {"INBOUND_PORT": "", "HOST": "  ", "PATH": "/bin", "JWT_SECRETS": "x"}
    assert Settings.load(path, environ) == Settings(inbound_listen="tcp:5000")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0", "tcp:0"),
        ("65535", "tcp:65535"),
        (" 4000 ", "tcp:4000"),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        (
            "ssl:4001:privateKey=key.pem:certKey=cert.pem",
            "ssl:4001:privateKey=key.pem:certKey=cert.pem",
        ),
        ("unix:/tmp/x", "unix:/tmp/x"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
        ("tcp:port=80", "tcp:port=80"),
    ],
)
def test_listener_forms(value, expected):
    assert Settings.from_mapping({}, {"API_HTTP_PORT": value}).api_listen == expected


def test_listener_int_from_file():
    assert Settings.from_mapping({"inbound_port": 0}, {}).inbound_listen == "tcp:0"


def test_cookie_is_not_in_repr():
    settings = Settings.from_mapping({}, {"NODE_COOKIE": "very-secret"})
    assert "very-secret" not in repr(settings)


@pytest.mark.parametrize(
    "env, value",
    [
        ("INBOUND_PORT", "abc"),
        ("INBOUND_PORT", "65536"),
        ("INBOUND_PORT", "-1"),
        ("INBOUND_PORT", "tcp:99999"),
        ("INBOUND_PORT", "tcp:abc"),
        ("INBOUND_PORT", "4000 5000"),
        ("API_HTTP_PORT", "1tcp:4000"),
        ("API_HTTP_PORT", "notaport"),
        ("MAX_CONNECTIONS_PER_MINUTE", "0"),
        ("MAX_CONNECTIONS_PER_MINUTE", "1.5"),
        ("MAX_CONNECTIONS_PER_MINUTE", "many"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FMT", "xml"),
        ("HEARTBEAT_INTERVAL", "0"),
        ("HEARTBEAT_INTERVAL", "-1"),
        ("HEARTBEAT_INTERVAL", "nan"),
        ("HEARTBEAT_INTERVAL", "inf"),
        ("LONGPOLL_WAIT", "x"),
        ("LONGPOLL_BUFFER_SIZE", "0"),
        ("LONGPOLL_SESSION_TTL", "soon"),
        ("SEND_QUEUE_LIMIT", "1023"),
        ("MAX_REQUEST_BYTES", "0"),
        ("EXTRACTORS", "{not json"),
        ("EXTRACTORS", '{"t": {"f": {"event": {"json_pointer": "/x"}}}}'),
    ],
)
def test_bad_env_values_name_the_variable(env, value):
    assert error_for(environ={env: value}).startswith(f"{env}: ")


def test_error_message_format():
    assert error_for(environ={"INBOUND_PORT": "abc"}) == (
        "INBOUND_PORT: expected a port number or a Twisted endpoint string, got 'abc'"
    )
    assert error_for(environ={"LONGPOLL_WAIT": "x"}) == (
        "LONGPOLL_WAIT: must be a number > 0, got 'x'"
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("inbound_port", 70000),
        ("inbound_port", True),
        ("inbound_port", 4000.0),
        ("api_http_port", "not a port"),
        ("host", 5),
        ("host", ""),
        ("cors", ["*"]),
        ("node_host", ""),
        ("max_connections_per_minute", "5000"),
        ("max_connections_per_minute", True),
        ("max_connections_per_minute", 0),
        ("log_level", 3),
        ("log_fmt", "erlang-ish"),
        ("heartbeat_interval", "15"),
        ("heartbeat_interval", False),
        ("longpoll_wait", 0),
        ("longpoll_buffer_size", 1.0),
        ("longpoll_session_ttl", -5),
        ("send_queue_limit", 100),
        ("max_request_bytes", -1),
        ("extractors", 5),
        ("extractors", {"t": "not an object"}),
    ],
)
def test_bad_file_values_name_the_variable(key, value):
    assert error_for(mapping={key: value}).startswith(f"{key.upper()}: ")


def test_bad_cookie_does_not_show_the_value():
    message = error_for(mapping={"node_cookie": ["top-secret"]})
    assert message.startswith("NODE_COOKIE: ")
    assert "top-secret" not in message


def test_bad_file_value_is_fatal_even_when_env_overrides():
    assert error_for({"longpoll_wait": "x"}, {"LONGPOLL_WAIT": "1"}).startswith("LONGPOLL_WAIT:")


def test_unknown_key(tmp_path):
    path = write(tmp_path, "foo = 1\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(path, {})
    assert str(info.value) == f"unknown setting 'foo' in {path}"


def test_unknown_table_and_env_spelling_are_rejected(tmp_path):
    for text, key in [("[inbound]\nport = 1\n", "inbound"), ("INBOUND_PORT = 1\n", "INBOUND_PORT")]:
        with pytest.raises(SettingsError, match=f"unknown setting '{key}'"):
            Settings.load(write(tmp_path, text), {})


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(SettingsError) as info:
        Settings.load(path, {})
    assert path in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "inbound_port = = 4\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(path, {})
    assert str(info.value).startswith(f"invalid TOML in {path}: ")
    assert "\n" not in str(info.value)


def test_extractors_from_json_text():
    settings = Settings.from_mapping({}, {"EXTRACTORS": json.dumps(EXTRACTORS)})
    assert settings.extractors.field_names("greeting") == {"name"}


def test_extractors_from_env_file_path(tmp_path):
    path = write(tmp_path, json.dumps(EXTRACTORS), "extractors.json")
    settings = Settings.from_mapping({}, {"EXTRACTORS": path})
    assert settings.extractors.field_names("greeting") == {"name"}


def test_extractors_from_toml_table(tmp_path):
    path = write(
        tmp_path,
        """
[extractors.greeting.name]
stable_field_index = 1
event = { json_pointer = "/data/name" }
jwt = { json_pointer = "/username" }
""",
    )
    fields = Settings.load(path, {}).extractors.fields("greeting")
    assert [field.name for field in fields] == ["name"]
    assert fields[0].jwt_pointer is not None


def test_extractors_path_relative_to_the_settings_file(tmp_path, monkeypatch):
    write(tmp_path, json.dumps(EXTRACTORS), "extractors.json")
    path = write(tmp_path, 'extractors = "extractors.json"\n')
    monkeypatch.chdir(tmp_path.parent)
    assert Settings.load(path, {}).extractors.field_names("greeting") == {"name"}


def test_extractors_env_overrides_file(tmp_path):
    path = write(tmp_path, f"extractors = '{json.dumps(EXTRACTORS)}'\n")
    assert Settings.load(path, {}).extractors.field_names("greeting") == {"name"}
    assert Settings.load(path, {"EXTRACTORS": "{}"}).extractors == ExtractorConfig()


def test_etc_rig_toml_is_the_defaults():
    assert Settings.load(ETC_TOML, {}) == Settings()


def test_etc_rig_toml_documents_every_setting():
    with open(ETC_TOML, encoding="utf-8") as config_file:
        text = config_file.read()
    for env in env_names():
        assert f"Env: {env}." in text
        assert f"{env.lower()} = " in text


def test_etc_rig_toml_extractor_examples_load():
    with open(ETC_TOML, encoding="utf-8") as config_file:
        starts = ("# extractors = {", "# extractors = '")
        examples = [line[2:] for line in config_file if line.startswith(starts)]
    assert len(examples) == 2
    for example in examples:
        settings = Settings.from_mapping(tomllib.loads(example), {})
        assert settings.extractors.field_names("greeting") == {"name"}
