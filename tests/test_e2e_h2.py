"""HTTP/2 on the HTTPS listeners (issue 17): real HTTP/2 clients over TLS, ALPN-chosen."""
import json
import ssl

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server

from tests.certs import make_certificate
from tests.h2client import H2Client
from tests.support import greeting, subs_query, within
from tests.test_e2e_proxy import _RecordingBackend, api, echo, endpoint
from tests.test_e2e_tls import port_of, start_tls, tls_sse, tls_ws

GREETINGS = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
SSE = "/_rig/v1/connection/sse"


@pytest.fixture
def cert(tmp_path):
    return make_certificate(tmp_path)


async def h2_client(gateway, cert, name="inbound_https", **kwargs):
    client = await H2Client.connect(port_of(gateway, name), cert.pem, **kwargs)
    gateway.clients.append(client)
    return client


@pytest_twisted.ensureDeferred
async def test_health_over_http2_on_both_https_ports(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    assert client.negotiated == b"h2"
    response = await client.fetch("GET", "/_rig/health")
    assert (response.status, response.text()) == (200, "OK")
    internal = await h2_client(gateway, cert, "internal_https")
    response = await internal.fetch("GET", "/health")
    assert (response.status, response.text()) == (200, "OK")


@pytest_twisted.ensureDeferred
async def test_twenty_sse_streams_on_one_connection_all_receive_events(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    streams = [await client.stream("GET", SSE + GREETINGS) for _ in range(20)]
    for stream in streams:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        await stream.welcome()
    assert len(gateway.hub.connections) == 20
    for number in range(3):
        await gateway.publish(greeting("alice", f"h2-{number}"))
    for stream in streams:
        ids = [(await stream.next_event())["id"] for _ in range(3)]
        assert ids == ["h2-0", "h2-1", "h2-2"]


@pytest_twisted.ensureDeferred
async def test_publish_and_subscriptions_put_over_http2(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    stream = await client.stream("GET", SSE)
    token, subscriptions = await stream.welcome()
    assert subscriptions == []
    body = json.dumps({"subscriptions": [{"eventType": "greeting"}]}).encode()
    put = await client.fetch("PUT", f"{SSE}/{token}/subscriptions",
                             [("content-type", "application/json")], body)
    assert put.status == 204, put.text()
    assert (await stream.next_event())["type"] == "rig.subscriptions_set"
    published = await client.fetch("POST", "/_rig/v1/events",
                                   [("content-type", "application/json")],
                                   json.dumps(greeting("bob", "h2-put")).encode())
    assert published.status == 202, published.text()
    assert (await stream.next_event())["id"] == "h2-put"


@pytest_twisted.ensureDeferred
async def test_long_polling_over_http2(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    path = "/_rig/v1/connection/longpolling"
    created = await client.fetch("GET", path + GREETINGS)
    assert (created.status, created.json()) == (200, "ok")
    cookies = cookie_header(created)
    first = await client.fetch("GET", path, [("cookie", cookies)])
    assert [event["type"] for event in first.json()["events"]] == [
        "rig.connection.create", "rig.subscriptions_set"]
    cookies = cookie_header(first)
    parked = client.request("GET", path, [("cookie", cookies)])
    await gateway.publish(greeting("carol", "h2-lp"))
    answered = await within(parked.ended)
    assert [event["id"] for event in answered.json()["events"]] == ["h2-lp"]


def cookie_header(response):
    """The Cookie header a browser would send back after *response*."""
    return "; ".join(value.split(";")[0] for value in response.all("set-cookie"))


@pytest_twisted.ensureDeferred
async def test_proxy_over_http2_get_and_post_with_a_body(make_gateway, cert, stub_server):
    backend = stub_server(echo)
    definition = api(backend.port.getHost().port, endpoint("get", "GET", "/books/(.+)"),
                     endpoint("post", "POST", "/books"))
    gateway = start_tls(make_gateway, cert, proxy_config=(definition,))
    client = await h2_client(gateway, cert)
    response = await client.fetch("GET", "/books/first?x=1", [("x-custom", "yes")])
    assert response.status == 200
    seen = response.json()
    assert (seen["method"], seen["uri"]) == ("GET", "/books/first?x=1")
    headers = seen["headers"]
    assert headers["x-custom"] == "yes"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{port_of(gateway, 'inbound_https')}"
    body = b"0123456789" * 20_000  # beyond the 64 KB window: the upload is flow-controlled
    response = await client.fetch("POST", "/books", [("content-type", "text/plain")], body)
    assert response.status == 200
    assert response.json()["body"] == body.decode()


@pytest_twisted.ensureDeferred
async def test_proxy_over_http2_drops_hop_by_hop_response_headers(make_gateway, cert):
    """HTTP/2 forbids connection-specific headers (h2 would refuse to send them)."""
    backend = _RecordingBackend(
        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: Value\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: no\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    try:
        gateway = start_tls(make_gateway, cert, proxy_config=(
            api(backend.port.getHost().port, endpoint("h", "GET", "/h")),))
        client = await h2_client(gateway, cert)
        for _ in range(2):  # and the connection goes on
            response = await client.fetch("GET", "/h")
            assert (response.status, response.text(), response.reset_code) == (200, "ok", None)
            assert response.all("set-cookie") == ["a=1", "b=2"]
            assert response.headers["x-mixed-case"] == "Value"
            assert not {"connection", "keep-alive", "x-hop", "transfer-encoding"} & set(
                response.headers)
    finally:
        await backend.port.stopListening()


class _Dripping(resource.Resource):
    """A backend whose response body comes in three pieces, a reactor turn apart."""

    isLeaf = True

    def render_GET(self, request):
        pieces = [b"one ", b"two ", b"three"]

        def drip():
            request.write(pieces.pop(0))
            if pieces:
                reactor.callLater(0.01, drip)
            else:
                request.finish()

        drip()
        return server.NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_proxy_over_http2_streams_a_response(make_gateway, cert):
    port = reactor.listenTCP(0, server.Site(_Dripping()), interface="127.0.0.1")
    try:
        gateway = start_tls(make_gateway, cert, proxy_config=(
            api(port.getHost().port, endpoint("s", "GET", "/stream")),))
        client = await h2_client(gateway, cert)
        response = await client.fetch("GET", "/stream")
        assert (response.status, response.text()) == (200, "one two three")
        assert "content-length" not in response.headers  # streamed, not buffered
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_internal_api_over_http2(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert, "internal_https")
    definition = {"id": "h2-api", "name": "h2-api",
                  "proxy": {"target_url": "127.0.0.1", "port": 9},
                  "version_data": {"default": {"endpoints": []}}}
    created = await client.fetch("POST", "/v3/apis", [("content-type", "application/json")],
                                 json.dumps(definition).encode())
    assert created.status == 201, created.text()
    listed = await client.fetch("GET", "/v3/apis")
    assert [each["id"] for each in listed.json()] == ["h2-api"]
    sse = await gateway.sse(GREETINGS)
    await sse.welcome()
    sent = await client.fetch("POST", "/v3/messages", [("content-type", "application/json")],
                              json.dumps(greeting("dave", "h2-internal")).encode())
    assert sent.status == 202, sent.text()
    assert (await sse.next_event())["id"] == "h2-internal"
    metrics = await client.fetch("GET", "/metrics")
    assert metrics.status == 200 and "rig_" in metrics.text()


@pytest_twisted.ensureDeferred
async def test_a_body_over_the_limit_is_413_without_a_connection_header(make_gateway, cert):
    gateway = start_tls(make_gateway, cert, max_request_bytes=1000)
    client = await h2_client(gateway, cert)
    response = await client.fetch("POST", "/_rig/v1/events",
                                  [("content-type", "application/json")], b" " * 5000)
    assert response.status == 413
    assert "connection" not in response.headers
    response = await client.fetch("GET", "/_rig/health")  # the connection goes on
    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_slow_http2_stream_is_reset_and_its_neighbours_go_on(make_gateway, cert):
    """A stream that reads nothing fills its flow-control window; what waits behind it
    counts against SEND_QUEUE_LIMIT, and over it only that stream is reset."""
    gateway = start_tls(make_gateway, cert, send_queue_limit=4096)
    client = await h2_client(gateway, cert)
    slow = client.request("GET", SSE + GREETINGS)
    client.withheld.add(slow.stream_id)
    await within(slow.head)
    await slow.welcome()
    brisk = await client.stream("GET", SSE + GREETINGS)
    await brisk.welcome()
    big = "x" * 8000
    for number in range(12):  # 96 KB: past the 64 KB window, then past the limit
        await gateway.publish(greeting(big, f"big-{number}"))
    await within(slow.ended)
    assert slow.reset_code is not None
    assert len(gateway.hub.connections) == 1
    assert [(await brisk.next_event())["id"] for _ in range(12)] == [
        f"big-{number}" for number in range(12)]
    await gateway.publish(greeting("eve", "after"))
    assert (await brisk.next_event())["id"] == "after"


@pytest_twisted.ensureDeferred
async def test_websocket_over_http2_is_426_and_over_https_it_works(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    response = await client.fetch("GET", "/_rig/v1/connection/ws")
    assert response.status == 426
    assert "HTTP/1.1" in response.text()
    socket = await tls_ws(gateway, cert, GREETINGS)  # offers no ALPN: HTTP/1.1
    await socket.welcome()
    await gateway.publish(greeting("frank", "wss"))
    assert (await socket.next_event())["id"] == "wss"


@pytest_twisted.ensureDeferred
async def test_http11_only_tls_clients_still_work(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    plain = await tls_sse(gateway, cert, GREETINGS)  # no ALPN at all
    await plain.welcome()
    http11 = await tls_sse(gateway, cert, GREETINGS, protocols=[b"http/1.1"])
    assert http11.transport.negotiatedProtocol == b"http/1.1"
    assert http11.headers["transfer-encoding"] == "chunked"
    await http11.welcome()
    await gateway.publish(greeting("gina", "tls11"))
    assert (await plain.next_event())["id"] == "tls11"
    assert (await http11.next_event())["id"] == "tls11"


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_http2_streams_and_closes_with_goaway(make_gateway, cert):
    gateway = start_tls(make_gateway, cert)
    client = await h2_client(gateway, cert)
    stream = await client.stream("GET", SSE + GREETINGS)
    await stream.welcome()
    await within(gateway.service.stopService(), 10)
    await within(stream.ended)
    assert stream.reset_code is None  # ended, not cut
    await within(client.closed)
    assert client.goaway is not None and client.goaway.error_code == 0


@pytest_twisted.ensureDeferred
async def test_httpx_speaks_http2_to_the_gateway(make_gateway, cert):
    """A client from outside Twisted (httpx on h2), in a thread: its API blocks."""
    import httpx
    from twisted.internet.threads import deferToThread

    gateway = start_tls(make_gateway, cert)
    sse = await gateway.sse(GREETINGS)
    await sse.welcome()
    base = f"https://127.0.0.1:{port_of(gateway, 'inbound_https')}"

    def talk():
        trust = ssl.create_default_context(cafile=cert.certfile)
        with httpx.Client(http2=True, verify=trust, timeout=5) as client:
            health = client.get(base + "/_rig/health")
            published = client.post(base + "/_rig/v1/events", json=greeting("hal", "httpx"))
            return [(response.http_version, response.status_code)
                    for response in (health, published)]

    assert await within(deferToThread(talk), 10) == [("HTTP/2", 200), ("HTTP/2", 202)]
    assert (await sse.next_event())["id"] == "httpx"
