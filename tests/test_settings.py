"""Settings: defaults < file < environment, and one-line errors naming the key."""

import json
import os
import tomllib

import pytest

from rig.settings import Settings, SettingsError, env_names
from rig.subscriptions.extractors import ExtractorConfig
from tests.certs import PASSWORD, make_certificate

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
        "PROXY_USE_ENV_ALLOWED",
        "REQUEST_LOG",
        "CLUSTER_PORT",
        "CLUSTER_SEEDS",
        "CLUSTER_TLS_CA",
        "CLUSTER_INTEREST_TIMEOUT",
        "WORKERS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "ZIPKIN_ADDR",
        "ZIPKIN_SERVICE_NAME",
        "JAEGER_HOST",
        "JAEGER_PORT",
        "JAEGER_SERVICE_NAME",
        "API_AUTH_TOKENS",
        "HTTP_HEADER_TIMEOUT",
        "HTTP_IDLE_TIMEOUT",
        "LISTEN_BACKLOG",
        "API_HTTPS_CLIENT_CA",
        "CLUSTER_BACKPLANE",
        "CLUSTER_BACKPLANE_PREFIX",
        "REDIS_URL",
        "REDIS_SOURCE_STREAMS",
        "REDIS_CONSUMER_GROUP",
        "PROXY_REDIS_RESPONSE_STREAM",
        "PROXY_REDIS_RESPONSE_TIMEOUT",
        "NATS_SERVERS",
        "NATS_SOURCE_TOPICS",
        "NATSTOFILTER_QUEUE_GROUP",
        "PROXY_NATS_RESPONSE_TIMEOUT",
        "DISCOVERY_TYPE",
        "DNS_NAME",
        "INBOUND_PORT",
        "API_HTTP_PORT",
        "INBOUND_HTTPS_PORT",
        "API_HTTPS_PORT",
        "HTTPS_CERTFILE",
        "HTTPS_KEYFILE",
        "HTTPS_KEYFILE_PASS",
        "HOST",
        "CORS",
        "EXAMPLES_ENABLED",
        "MAX_CONNECTIONS_PER_MINUTE",
        "EXTRACTORS",
        "NODE_HOST",
        "NODE_COOKIE",
        "LOG_LEVEL",
        "LOG_FMT",
        "PROMETHEUS_METRICS_ENABLED",
        "DASHBOARD_ENABLED",
        "HEARTBEAT_INTERVAL",
        "LONGPOLL_WAIT",
        "LONGPOLL_BUFFER_SIZE",
        "LONGPOLL_SESSION_TTL",
        "SEND_QUEUE_LIMIT",
        "RECOVERY_HISTORY_SIZE",
        "RECOVERY_HISTORY_AGE",
        "MAX_REQUEST_BYTES",
        "SHUTDOWN_DRAIN_TIMEOUT",
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


# --- HTTPS (spec Part B 1.1) ---------------------------------------------------


@pytest.fixture
def cert(tmp_path):
    return make_certificate(tmp_path)


def test_https_defaults():
    settings = Settings.load(None, {})
    assert settings.inbound_https_listen == "tcp:4001"
    assert settings.api_https_listen == "tcp:4011"
    assert settings.https_certfile is None
    assert settings.https_keyfile is None
    assert settings.https_keyfile_pass is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("4443", "tcp:4443"),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        ("unix:/run/rig-https.sock", "unix:/run/rig-https.sock"),
    ],
)
def test_https_listener_forms(value, expected):
    settings = Settings.from_mapping({}, {"INBOUND_HTTPS_PORT": value, "API_HTTPS_PORT": value})
    assert settings.inbound_https_listen == settings.api_https_listen == expected


def test_https_listener_from_file_int():
    settings = Settings.from_mapping({"inbound_https_port": 8443, "api_https_port": 0}, {})
    assert (settings.inbound_https_listen, settings.api_https_listen) == ("tcp:8443", "tcp:0")


@pytest.mark.parametrize("env", ["INBOUND_HTTPS_PORT", "API_HTTPS_PORT"])
@pytest.mark.parametrize("value", ["abc", "65536", "ssl:4001:privateKey=k.pem:certKey=c.pem"])
def test_bad_https_listener_names_the_variable(env, value):
    assert error_for(environ={env: value}).startswith(f"{env}: ")


def test_certificate_and_key_enable_https(cert):
    settings = Settings.from_mapping(
        {}, {"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.keyfile})
    assert (settings.https_certfile, settings.https_keyfile) == (cert.certfile, cert.keyfile)


def test_https_files_from_the_settings_file(tmp_path, cert):
    path = write(tmp_path,
                 f"https_certfile = {cert.certfile!r}\nhttps_keyfile = {cert.keyfile!r}\n")
    settings = Settings.load(path, {})
    assert (settings.https_certfile, settings.https_keyfile) == (cert.certfile, cert.keyfile)


def test_empty_https_values_in_the_file_mean_unset(tmp_path):
    path = write(tmp_path, 'https_certfile = ""\nhttps_keyfile = " "\nhttps_keyfile_pass = ""\n')
    assert Settings.load(path, {}) == Settings()


def test_only_the_certificate_asks_for_the_key(cert):
    message = error_for(environ={"HTTPS_CERTFILE": cert.certfile})
    assert message.startswith("HTTPS_KEYFILE: ")
    assert "Please also set HTTPS_KEYFILE" in message


def test_only_the_key_asks_for_the_certificate(cert):
    message = error_for(environ={"HTTPS_KEYFILE": cert.keyfile})
    assert message.startswith("HTTPS_CERTFILE: ")
    assert "Please also set HTTPS_CERTFILE" in message


def test_certificate_and_password_without_key_asks_for_the_key(cert):
    message = error_for(environ={"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE_PASS": "pw"})
    assert "Please also set HTTPS_KEYFILE" in message


def test_only_the_password_is_an_error():
    message = error_for(environ={"HTTPS_KEYFILE_PASS": "hunter2"})
    assert message.startswith("HTTPS_KEYFILE_PASS: ")
    assert "HTTPS_CERTFILE and HTTPS_KEYFILE" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("env", ["HTTPS_CERTFILE", "HTTPS_KEYFILE"])
def test_a_missing_file_is_an_error(tmp_path, cert, env):
    environ = {"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.keyfile}
    environ[env] = str(tmp_path / "missing.pem")
    message = error_for(environ=environ)
    assert message.startswith(f"{env}: cannot read ")
    assert "missing.pem" in message


def test_relative_paths_are_relative_to_the_working_directory(tmp_path, cert, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_mapping({}, {
        "HTTPS_CERTFILE": os.path.basename(cert.certfile),
        "HTTPS_KEYFILE": os.path.basename(cert.keyfile),
    })
    assert settings.https_certfile == os.path.basename(cert.certfile)


def test_a_file_that_is_not_pem_is_an_error(tmp_path, cert):
    junk = write(tmp_path, "not a certificate", name="junk.pem")
    assert error_for(environ={"HTTPS_CERTFILE": junk, "HTTPS_KEYFILE": cert.keyfile}) == (
        f"HTTPS_CERTFILE: no PEM certificate in {junk!r}")
    assert error_for(environ={"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": junk}) == (
        f"HTTPS_KEYFILE: no readable PEM private key in {junk!r}")


def test_a_key_of_another_certificate_is_an_error(tmp_path, cert):
    other = make_certificate(tmp_path, name="other.example")
    message = error_for(environ={"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": other.keyfile})
    assert message.startswith("HTTPS_KEYFILE: the private key does not belong to the certificate")


@pytest.mark.parametrize("key_format", ["pkcs8", "traditional"])
def test_encrypted_key_with_the_right_password(tmp_path, key_format):
    cert = make_certificate(tmp_path, key_format=key_format)
    settings = Settings.from_mapping({}, {
        "HTTPS_CERTFILE": cert.certfile,
        "HTTPS_KEYFILE": cert.encrypted_keyfile,
        "HTTPS_KEYFILE_PASS": PASSWORD,
    })
    assert settings.https_keyfile_pass == PASSWORD
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)


@pytest.mark.parametrize("key_format", ["pkcs8", "traditional"])
def test_encrypted_key_with_a_wrong_password(tmp_path, key_format):
    cert = make_certificate(tmp_path, key_format=key_format)
    message = error_for(environ={
        "HTTPS_CERTFILE": cert.certfile,
        "HTTPS_KEYFILE": cert.encrypted_keyfile,
        "HTTPS_KEYFILE_PASS": "not the password",
    })
    assert message == (
        f"HTTPS_KEYFILE: cannot decrypt the key in {cert.encrypted_keyfile!r}: "
        "wrong HTTPS_KEYFILE_PASS")
    assert "not the password" not in message


def test_encrypted_key_without_a_password(cert):
    message = error_for(environ={
        "HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.encrypted_keyfile})
    assert message == (
        f"HTTPS_KEYFILE: the key in {cert.encrypted_keyfile!r} is encrypted; "
        "set HTTPS_KEYFILE_PASS")


def test_a_password_for_a_plain_key_is_not_needed(cert):
    settings = Settings.from_mapping({}, {
        "HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.keyfile,
        "HTTPS_KEYFILE_PASS": "unused"})
    assert settings.https_keyfile == cert.keyfile


def test_the_password_is_kept_verbatim(tmp_path):
    cert = make_certificate(tmp_path, password=" spaced pw ")
    environ = {"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.encrypted_keyfile,
               "HTTPS_KEYFILE_PASS": " spaced pw "}
    assert Settings.from_mapping({}, environ).https_keyfile_pass == " spaced pw "
    environ["HTTPS_KEYFILE_PASS"] = "spaced pw"
    assert "wrong HTTPS_KEYFILE_PASS" in error_for(environ=environ)


def test_a_password_that_is_not_a_string_is_not_shown():
    message = error_for({"https_keyfile_pass": 12345678})
    assert message.startswith("HTTPS_KEYFILE_PASS: ")
    assert "12345678" not in message


def test_a_certificate_chain_file_is_accepted(tmp_path, cert):
    intermediate = make_certificate(tmp_path, name="intermediate.example")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(cert.pem + intermediate.pem)
    settings = Settings.from_mapping({}, {"HTTPS_CERTFILE": str(chain),
                                          "HTTPS_KEYFILE": cert.keyfile})
    assert settings.https_certfile == str(chain)


def test_shutdown_drain_timeout():
    assert Settings().shutdown_drain_timeout == 10.0
    environ = {"SHUTDOWN_DRAIN_TIMEOUT": "2.5"}
    assert Settings.from_mapping({}, environ).shutdown_drain_timeout == 2.5
    assert Settings.from_mapping({"shutdown_drain_timeout": 30}, {}).shutdown_drain_timeout == 30.0
    for bad in ("0", "-1", "soon"):
        message = error_for(environ={"SHUTDOWN_DRAIN_TIMEOUT": bad})
        assert message.startswith("SHUTDOWN_DRAIN_TIMEOUT: ")


def test_workers():
    assert Settings().workers == 1
    assert Settings.from_mapping({"workers": 3}, {}).workers == 3
    assert Settings.from_mapping({}, {"WORKERS": "2"}).workers == 2
    assert Settings.from_mapping({}, {"WORKERS": "auto"}).workers == len(os.sched_getaffinity(0))
    assert Settings.from_mapping({"workers": "auto"}, {}).workers >= 1
    for bad in ("0", "-2", "many", "1.5"):
        assert error_for(environ={"WORKERS": bad}).startswith("WORKERS: must be an integer")


@pytest.mark.parametrize(("environ", "start"), [
    ({"INBOUND_PORT": "unix:/tmp/rig.sock"}, "INBOUND_PORT: with WORKERS=2 every listener"),
    ({"API_HTTP_PORT": "ssl:4010:privateKey=k.pem"}, "API_HTTP_PORT: with WORKERS=2"),
    ({"CLUSTER_PORT": "tcp:0", "NODE_COOKIE": "c"}, "CLUSTER_PORT: with WORKERS=2 worker i"),
    ({"CLUSTER_PORT": "65535", "NODE_COOKIE": "c"}, "CLUSTER_PORT: with WORKERS=2 worker i"),
    ({"CLUSTER_SEEDS": "10.0.0.5:7946"}, "CLUSTER_SEEDS: other machines can join"),
    ({"DISCOVERY_TYPE": "dns"}, "CLUSTER_SEEDS: other machines can join"),
])
def test_workers_need_shareable_listeners(environ, start):
    assert error_for(environ={"WORKERS": "2", **environ}).startswith(start)


def test_workers_with_a_cluster_port_or_none():
    plain = Settings.from_mapping({}, {"WORKERS": "2", "INBOUND_PORT": "tcp6:4000"})
    assert (plain.workers, plain.cluster_listen, plain.node_cookie) == (2, None, None)
    clustered = Settings.from_mapping({"workers": 4, "cluster_port": 7946}, {
        "NODE_COOKIE": "c", "CLUSTER_SEEDS": "10.0.0.5:7946"})
    assert clustered.cluster_listen == "tcp:7946"
    # HTTPS listeners are checked only when HTTPS is on
    assert Settings.from_mapping({}, {"WORKERS": "2",
                                      "INBOUND_HTTPS_PORT": "unix:/tmp/s"}).workers == 2


def test_etc_production_toml_keeps_the_internal_api_on_loopback():
    from rig.web.operators import beyond_loopback

    settings = Settings.load(os.path.join(os.path.dirname(ETC_TOML), "production.toml"), {})
    assert not beyond_loopback(settings.api_listen)
    assert not beyond_loopback(settings.api_https_listen)
    assert beyond_loopback(settings.inbound_listen)
    assert settings.workers >= 1 and settings.log_fmt == "json"
