"""The operators' door (issue 13): bearer tokens, client certificates, a warning, no Server."""
import base64
import json

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.web.client import Agent
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from rig.settings import Settings, SettingsError
from tests.certs import make_certificate
from tests.support import within

TOKEN = "operator-token-0123456789"
EPHEMERAL = "tcp:0:interface=127.0.0.1"
BLACKLIST = {"sessionId": "s", "validityInSeconds": 60}


def basic(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def status(gateway, method, path, **kwargs):
    response = await gateway.request(method, path, internal=True, **kwargs)
    await within(response.text())
    return response.code


@pytest_twisted.ensureDeferred
async def test_with_tokens_every_internal_endpoint_but_health_and_metrics_needs_one(
        make_gateway):
    gateway = make_gateway(api_auth_tokens=(TOKEN, "second-token-abcdefghij"))
    for method, path, body in (("GET", "/v3/apis", None), ("POST", "/v3/session-blacklist",
                                                          BLACKLIST),
                               ("GET", "/v3/cluster", None), ("POST", "/v3/messages", {}),
                               ("GET", "/v3/health", None), ("GET", "/nowhere", None)):
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"},
                        {"authorization": f"Basic {TOKEN}"},  # not base64
                        {"authorization": "Basic " + basic("admin", "wrong-token-0123456789")},
                        {"authorization": "Basic " + basic(TOKEN, "")},
                        {"authorization": f"Bearer {TOKEN}x"}):
            response = await gateway.request(method, path, internal=True, json=body,
                                             headers=headers)
            assert response.code == 401, (path, headers)
            assert response.headers.getRawHeaders("www-authenticate") == [
                'Bearer realm="rig internal API"',
                'Basic realm="rig internal API", charset="UTF-8"']  # a browser asks
            assert json.loads(await within(response.text())) == {
                "errors": {"detail": "Unauthorized"}}
    bearer = {"authorization": "Bearer second-token-abcdefghij"}
    assert await status(gateway, "GET", "/v3/apis", headers=bearer) == 200
    assert await status(gateway, "POST", "/v3/session-blacklist", json=BLACKLIST,
                        headers={"authorization": f"bearer {TOKEN}"}) == 201
    assert await status(gateway, "GET", "/health") == 200
    assert await status(gateway, "GET", "/metrics") == 200
    # a browser's login: any user name, a token as the password
    assert await status(gateway, "GET", "/v3/apis", headers={
        "authorization": "Basic " + basic("operator", TOKEN)}) == 200
    # the public port is not affected
    response = await gateway.request("GET", "/_rig/health")
    assert response.code == 200
    await within(response.text())


def test_tokens_from_a_file_and_never_shown(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\n{TOKEN}\n\nsecond-token-abcdefghij\n")
    settings = Settings.from_mapping({}, {"API_AUTH_TOKENS": str(tokens)})
    assert settings.api_auth_tokens == (TOKEN, "second-token-abcdefghij")
    assert TOKEN not in repr(settings)
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({}, {"API_AUTH_TOKENS": "short,also-short"})
    assert "short" not in str(info.value).replace("16 characters", "")
    assert str(info.value).startswith("API_AUTH_TOKENS: every token must be at least 16")


@implementer(IPolicyForHTTPS)
class _ClientCertificatePolicy:
    def __init__(self, trust, certificate=None):
        self._trust, self._certificate = trust, certificate

    def creatorForNetloc(self, hostname, port):
        return optionsForClientTLS(hostname.decode(), trustRoot=self._trust,
                                   clientCertificate=self._certificate)


@pytest_twisted.ensureDeferred
async def test_a_client_certificate_opens_the_internal_https_port(make_gateway, tmp_path):
    server = make_certificate(tmp_path)
    operator = make_certificate(tmp_path, name="operator")
    stranger = make_certificate(tmp_path, name="stranger")
    gateway = make_gateway(https_certfile=server.certfile, https_keyfile=server.keyfile,
                           api_https_client_ca=operator.certfile, api_https_listen=EPHEMERAL,
                           inbound_https_listen=EPHEMERAL)
    url = f"https://127.0.0.1:{gateway.service.address('internal_https').port}/v3/apis"
    trust = Certificate.loadPEM(server.pem)

    def client(cert_files=None):
        certificate = None
        if cert_files is not None:
            with open(cert_files.keyfile, "rb") as key:
                certificate = PrivateCertificate.loadPEM(cert_files.pem + key.read())
        policy = _ClientCertificatePolicy(trust, certificate)
        return HTTPClient(Agent(reactor, contextFactory=policy, pool=gateway.pool))

    response = await within(client(operator).get(url))
    assert response.code == 200
    await within(response.text())
    for who in (None, stranger):  # no certificate, or one the CA did not sign: no handshake
        with pytest.raises(Exception):  # noqa: B017 (a TLS or connection error, by platform)
            await within(client(who).get(url))
    # the plain internal port has no certificate to show: locked, no tokens are set
    assert await status(gateway, "GET", "/v3/apis") == 401
    assert await status(gateway, "GET", "/health") == 200


def test_a_client_ca_needs_https(tmp_path):
    ca = make_certificate(tmp_path, name="operator")
    with pytest.raises(SettingsError, match="API_HTTPS_CLIENT_CA: set without HTTPS_CERTFILE"):
        Settings.from_mapping({}, {"API_HTTPS_CLIENT_CA": ca.certfile})


@pytest.mark.parametrize(("overrides", "warned"), [
    ({"api_listen": "tcp:0"}, True),
    ({"api_listen": "tcp:0:interface=0.0.0.0"}, True),
    ({"api_listen": EPHEMERAL}, False),
    ({"api_listen": "tcp:0", "api_auth_tokens": (TOKEN,)}, False),
])
def test_an_open_internal_api_beyond_loopback_is_a_warning(overrides, warned, log_events):
    from rig.service import RigService

    settings = Settings(inbound_listen=EPHEMERAL, **overrides)
    RigService.build(settings, reactor)
    said = [e for e in log_events if "internal API" in e.get("log_format", "")]
    assert bool(said) is warned


@pytest_twisted.ensureDeferred
async def test_responses_do_not_name_the_server_software(gateway):
    for internal, path in ((False, "/_rig/health"), (True, "/health"), (False, "/nowhere")):
        response = await gateway.request("GET", path, internal=internal)
        await within(response.text())
        assert response.headers.getRawHeaders("server") is None, path
        assert response.headers.getRawHeaders("date") is not None


class _Trickler:
    """Sends a request head one byte at a time and records what comes back."""

    def __init__(self, head, interval):
        from twisted.internet import defer, protocol

        self.closed = defer.Deferred()
        self.received = b""
        trickler = self

        class Client(protocol.Protocol):
            def connectionMade(self):
                self._left = head
                self._send()

            def _send(self):
                if self._left and self.transport.connected:
                    self.transport.write(self._left[:1])
                    self._left = self._left[1:]
                    self._call = reactor.callLater(interval, self._send)

            def dataReceived(self, data):
                trickler.received += data

            def connectionLost(self, reason):
                if getattr(self, "_call", None) is not None and self._call.active():
                    self._call.cancel()
                trickler.closed.callback(None)

        self.protocol = Client()


async def connect(port, client_protocol):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                        client_protocol))


@pytest_twisted.ensureDeferred
async def test_a_trickled_request_head_gets_408_after_the_header_timeout(make_gateway):
    gateway = make_gateway(http_header_timeout=0.5, http_idle_timeout=30.0)
    head = b"GET /_rig/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    trickler = _Trickler(head, 0.05)  # a byte every 50 ms: the idle timer never fires
    started = reactor.seconds()
    await connect(gateway.inbound_port, trickler.protocol)
    await within(trickler.closed, 5)
    assert 0.45 < reactor.seconds() - started < 2.0
    assert trickler.received.startswith(b"HTTP/1.1 408 Request Timeout")


@pytest_twisted.ensureDeferred
async def test_idle_keep_alive_connections_close_but_streams_stay(make_gateway):
    from tests.support import RawHTTPClient, greeting, subs_query

    gateway = make_gateway(http_header_timeout=0.3, http_idle_timeout=0.3, longpoll_wait=1.0)
    idle = await RawHTTPClient.open(gateway.inbound_port, "GET", "/_rig/health")
    assert await idle.response_body() == b"OK"
    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    sse = await gateway.sse(query)
    ws = await gateway.ws(query)
    await sse.welcome()
    await ws.welcome()
    lp = await gateway.request("GET", "/_rig/v1/connection/longpolling" + query)
    cookies = lp.cookies()
    await within(lp.text())
    first = await gateway.request("GET", "/_rig/v1/connection/longpolling", cookies=cookies)
    await within(first.text())
    parked = gateway.request("GET", "/_rig/v1/connection/longpolling",
                             cookies=first.cookies())
    from twisted.internet.task import deferLater

    await deferLater(reactor, 1.2)  # four idle timeouts, two header timeouts
    assert idle.closed.called  # the keep-alive connection with nothing to do was closed
    answer = await parked  # waited its full second: not cut
    assert answer.code == 200
    await within(answer.text())
    await gateway.publish(greeting("x", "still-here"))
    assert (await sse.next_event())["id"] == "still-here"
    assert (await ws.next_event())["id"] == "still-here"
