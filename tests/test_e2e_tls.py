"""HTTPS and WSS end to end (spec Part B 1.1): real TLS clients trusting a test certificate."""
import socket

import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import globalLogPublisher
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    ResponseFailed,
    ResponseNeverReceived,
)

from rig.connections.ws import NO_TWO_WAY
from rig.service import RigService
from rig.settings import Settings
from tests.certs import PASSWORD, make_certificate
from tests.support import (
    RawHTTPClient,
    WSClient,
    _WSProtocol,
    greeting,
    subs_query,
    within,
)

EPHEMERAL = "tcp:0:interface=127.0.0.1"
GREETINGS = [{"eventType": "greeting"}]
ALL_BULK = "?subscriptions=" + subs_query([{"eventType": "bulk"}])


@pytest.fixture
def cert(tmp_path):
    return make_certificate(tmp_path)


def start_tls(make_gateway, cert, **overrides):
    """A gateway with all four listeners on ephemeral loopback ports."""
    overrides.setdefault("https_certfile", cert.certfile)
    overrides.setdefault("https_keyfile", cert.keyfile)
    return make_gateway(inbound_https_listen=EPHEMERAL, api_https_listen=EPHEMERAL, **overrides)


def port_of(gateway, name):
    return gateway.service.address(name).port


def client_tls(cert, protocols=None):
    """Verify the server as a browser would, but trusting only the test certificate;
    *protocols* are offered by ALPN (none by default)."""
    return optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(cert.pem),
                               acceptableProtocols=protocols)


def https(gateway, cert, trust=True):
    policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(cert.pem) if trust else None)
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=gateway.pool))


def https_url(gateway, name, path):
    return f"https://127.0.0.1:{port_of(gateway, name)}{path}"


async def get_text(client, url):
    response = await within(client.get(url))
    return response, await within(response.text())


async def tls_sse(gateway, cert, query="", protocols=None):
    """RawHTTPClient, but connected through TLS to the inbound HTTPS port."""
    port = port_of(gateway, "inbound_https")
    request = (f"GET /_rig/v1/connection/sse{query} HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{port}\r\n\r\n").encode()
    client = RawHTTPClient(request)
    endpoint = wrapClientTLS(client_tls(cert, protocols),
                             TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await within(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    gateway.clients.append(client)
    await within(client.head)
    return client


async def tls_ws(gateway, cert, query=""):
    """WSClient, but over wss:// to the inbound HTTPS port."""
    port = port_of(gateway, "inbound_https")
    client = WSClient()
    factory = WebSocketClientFactory(f"wss://127.0.0.1:{port}/_rig/v1/connection/ws{query}")
    factory.protocol = _WSProtocol
    factory.client = client
    factory.setProtocolOptions(autoPingInterval=0)
    endpoint = wrapClientTLS(client_tls(cert), TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await within(endpoint.connect(factory))
    gateway.clients.append(client)
    client.protocol = await within(client.opened)
    return client


@pytest_twisted.ensureDeferred
async def test_health_over_https_on_both_ports(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = https(gateway, cert)
    response, text = await get_text(client, https_url(gateway, "inbound_https", "/_rig/health"))
    assert (response.code, text) == (200, "OK")
    response, text = await get_text(client, https_url(gateway, "internal_https", "/health"))
    assert (response.code, text) == (200, "OK")


@pytest_twisted.ensureDeferred
async def test_plain_http_ports_keep_working(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    response = await gateway.request("GET", "/_rig/health")
    assert response.code == 200
    assert await within(response.text()) == "OK"
    response = await gateway.request("GET", "/health", internal=True)
    assert response.code == 200
    https_ports = {port_of(gateway, "inbound_https"), port_of(gateway, "internal_https")}
    plain_ports = {port_of(gateway, "inbound"), port_of(gateway, "internal")}
    assert len(https_ports | plain_ports) == 4


@pytest_twisted.ensureDeferred
async def test_plain_http_on_the_https_port_is_not_served(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    port = port_of(gateway, "inbound_https")
    with pytest.raises((ResponseFailed, ResponseNeverReceived)):
        await within(treq.get(f"http://127.0.0.1:{port}/_rig/health", pool=gateway.pool))


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_trust_the_certificate_is_refused(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    with pytest.raises(ResponseFailed) as info:
        await within(https(gateway, cert, trust=False).get(
            https_url(gateway, "inbound_https", "/_rig/health")))
    assert any(failure.check(SSL.Error) for failure in info.value.reasons)


@pytest_twisted.ensureDeferred
async def test_sse_over_tls_receives_a_published_event(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await tls_sse(gateway, cert, "?subscriptions=" + subs_query(GREETINGS))
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    handle = client.transport.getHandle()
    assert handle.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    _token, subscriptions = await client.welcome()
    assert subscriptions == [{"eventType": "greeting", "oneOf": []}]
    tls_factory = gateway.service.getServiceNamed("inbound_https").factory
    (channel,) = tls_factory.wrappedFactory._channels
    raw = channel.transport.transport.getHandle()  # the TCP socket under TLS: Nagle off
    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await gateway.publish(greeting("alice", "tls-1"))
    event = await client.next_event()
    assert (event["id"], event["data"]) == ("tls-1", {"name": "alice"})


@pytest_twisted.ensureDeferred
async def test_event_published_over_https_reaches_a_plain_sse_client(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await gateway.sse("?subscriptions=" + subs_query(GREETINGS))
    await client.welcome()
    response = await within(https(gateway, cert).post(
        https_url(gateway, "inbound_https", "/_rig/v1/events"),
        json=greeting("bob", "tls-2")))
    assert response.code == 202
    await within(response.text())
    assert (await client.next_event())["id"] == "tls-2"


@pytest_twisted.ensureDeferred
async def test_wss_connect_gets_the_welcome_and_events(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await tls_ws(gateway, cert, "?subscriptions=" + subs_query(GREETINGS))
    token, subscriptions = await client.welcome()
    assert token
    assert subscriptions == [{"eventType": "greeting", "oneOf": []}]
    await gateway.publish(greeting("carol", "tls-3"))
    event = await client.next_event()
    assert (event["id"], event["data"]) == ("tls-3", {"name": "carol"})


@pytest_twisted.ensureDeferred
async def test_encrypted_key_with_its_password(make_gateway, cert):
    gateway = start_tls(make_gateway, cert, https_keyfile=cert.encrypted_keyfile,
                        https_keyfile_pass=PASSWORD)
    response, text = await get_text(https(gateway, cert),
                                    https_url(gateway, "internal_https", "/health"))
    assert (response.code, text) == (200, "OK")


@pytest_twisted.ensureDeferred
async def test_without_certificate_there_are_no_https_listeners(make_gateway):
    gateway = make_gateway(inbound_https_listen=EPHEMERAL, api_https_listen=EPHEMERAL)
    names = {child.name for child in gateway.service}
    assert {"inbound", "internal"} <= names
    assert not names & {"inbound_https", "internal_https"}


def test_without_certificate_a_warning_says_https_is_off():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        service = RigService.build(Settings(), reactor)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert "inbound_https" not in {child.name for child in service}
    warnings = [event for event in events if event.get("log_level") is not None
                and event["log_level"].name == "warn"]
    assert any("HTTPS is disabled" in event["log_format"] for event in warnings)


@pytest_twisted.ensureDeferred
async def test_a_slow_tls_client_is_dropped(make_gateway, cert):
    """The send queue limit counts the TLS connection's buffered bytes too."""
    gateway = start_tls(make_gateway, cert, send_queue_limit=200_000)
    slow = await tls_sse(gateway, cert, ALL_BULK)
    reader = await gateway.ws(ALL_BULK)
    await slow.welcome()
    await reader.welcome()
    slow.transport.transport.pauseProducing()  # the TCP socket under TLS stops reading
    padding = "x" * 60_000
    for number in range(200):
        await gateway.publish({"specversion": "1.0", "type": "bulk", "source": "s",
                               "id": str(number), "data": padding})
        assert (await reader.next_event())["id"] == str(number)
        if len(gateway.hub.connections) == 1:
            break
    assert len(gateway.hub.connections) == 1
    slow.transport.transport.resumeProducing()
    await within(slow.closed, 10)


@pytest_twisted.ensureDeferred
async def test_wss_closed_by_the_gateway_completes_its_close(make_gateway, cert):
    """The TLS layer closes a connection only once no producer is registered with it; the
    HTTP channel that handed the socket to the WebSocket unregistered itself."""
    gateway = start_tls(make_gateway, cert)
    client = await tls_ws(gateway, cert)
    await client.welcome()
    client.send_text("hello")
    assert await client.close_info() == (1000, NO_TWO_WAY)
    assert len(gateway.hub.connections) == 0
