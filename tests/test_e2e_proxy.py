"""The reverse proxy end to end, with real backend HTTP servers on loopback (spec Part B 7)."""
import gc
import json
import tempfile

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from rig.testing import eventually
from tests.support import make_jwt, subs_query, within

AUTH = {"jwt_secret_key": "mysecret"}


def api(backend_port, *endpoints, api_id="books", **extra):
    definition = {
        "id": api_id, "name": api_id,
        "proxy": {"target_url": "127.0.0.1", "port": backend_port},
        "version_data": {"default": {"endpoints": list(endpoints)}},
    }
    definition.update(extra)
    return definition


def endpoint(endpoint_id, method, path_regex, **extra):
    return {"id": endpoint_id, "method": method, "path_regex": path_regex, **extra}


def echo(info):
    return 200, json.dumps(info, default=lambda b: b.decode("utf-8", "replace")).encode()


@pytest_twisted.ensureDeferred
async def test_forwards_method_path_query_headers_and_body(make_gateway, stub_server):
    backend = stub_server(echo)
    port = backend.port.getHost().port
    definition = api(port, endpoint("get", "GET", "/books/(.+)"),
                     endpoint("post", "POST", "/books", path_replacement="/v2/books"),
                     endpoint("rw", "GET", "/foo/([^/]+)/bar/([^/]+)",
                              path_replacement=r"/bar/\1/foo/\2"))
    gateway = make_gateway(proxy_config=(definition,))
    response = await gateway.request("GET", "/books/first.user?page[offset]=0&x=1",
                                     headers={"x-custom": "yes", "connection": "keep-alive, x-hop",
                                              "x-hop": "drop me"})
    assert response.code == 200
    seen = await within(response.json())
    assert seen["method"] == "GET" and seen["path"] == "/books/first.user"
    headers = seen["headers"]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["x-custom"] == "yes"
    assert ("x-hop" not in headers and "connection" not in headers) or \
        headers.get("connection") != "keep-alive, x-hop"
    assert headers["forwarded"] == "for=127.0.0.1;by=127.0.0.1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert backend.requests[-1]["path"] == "/books/first.user"
    response = await gateway.request("POST", "/books", data=b"payload",
                                     headers={"content-type": "text/plain"})
    seen = await within(response.json())
    assert (seen["path"], seen["body"]) == ("/v2/books", "payload")
    response = await gateway.request("GET", "/foo/1/bar/2")
    assert (await within(response.json()))["path"] == "/bar/1/foo/2"


@pytest_twisted.ensureDeferred
async def test_unmatched_and_wrong_method_give_404(make_gateway, stub_server):
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("get", "GET", "/books")),))
    for method, path in (("GET", "/random/route"), ("DELETE", "/books"), ("GET", "/")):
        response = await gateway.request(method, path)
        assert response.code == 404
        assert await within(response.text()) == '{"message":"Not Found"}'
        assert response.headers.getRawHeaders("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_backend_status_headers_and_body_pass_back(make_gateway, stub_server):
    backend = stub_server(lambda info: (418, b"short and stout"))
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("tea", "GET", "/tea")),))
    response = await gateway.request("GET", "/tea")
    assert response.code == 418
    assert await within(response.text()) == "short and stout"


@pytest_twisted.ensureDeferred
async def test_unreachable_backend_is_502_and_slow_backend_504(make_gateway, stub_server):
    slow = stub_server(lambda info: None)
    dead_port = 9  # discard: nothing listens (a just-freed port could be reused by the gateway)
    definitions = (
        api(dead_port, endpoint("dead", "GET", "/dead"), api_id="dead"),
        api(slow.port.getHost().port, endpoint("slow", "GET", "/slow"), api_id="slow"),
    )
    gateway = make_gateway(proxy_config=definitions, proxy_recv_timeout=1.0)
    response = await gateway.request("GET", "/dead")
    assert (response.code, await within(response.text())) == (502, "Bad gateway.")
    response = await gateway.request("GET", "/slow")
    assert response.code == 504


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_the_upstream_request(make_gateway, stub_server):
    slow = stub_server(lambda info: None)
    gateway = make_gateway(proxy_config=(api(slow.port.getHost().port,
                                             endpoint("slow", "GET", "/slow")),))
    pending = gateway.request("GET", "/slow")
    pending.addErrback(lambda failure: None)
    for _ in range(100):
        if slow.hanging:
            break
        await deferLater(reactor, 0.01)
    (upstream,) = slow.hanging
    gone = upstream.notifyFinish()
    gone.addCallbacks(lambda _: "finished", lambda failure: "connection lost")
    pending.cancel()
    assert await within(gone, 2) == "connection lost"


@pytest_twisted.ensureDeferred
async def test_secured_endpoints_need_a_valid_token(make_gateway, stub_server):
    backend = stub_server(echo)
    definition = api(backend.port.getHost().port,
                     endpoint("secret", "GET", "/secret", secured=True),
                     auth_type="jwt", auth={"use_query": True, "query_name": "token"})
    gateway = make_gateway(proxy_config=(definition,), **AUTH)
    response = await gateway.request("GET", "/secret")
    assert (response.code, await within(response.text())) == (401, "Authentication failed.")
    assert response.headers.getRawHeaders("access-control-allow-methods") == ["*"]
    token = make_jwt({"jti": "p1"})
    response = await gateway.request("GET", "/secret",
                                     headers={"authorization": f"Bearer {token}"})
    assert response.code == 200
    response = await gateway.request("GET", f"/secret?token={token}")
    assert response.code == 200
    response = await gateway.request("GET", "/secret",
                                     headers={"authorization": "Bearer garbage"})
    assert response.code == 401
    await gateway.request("POST", "/v3/session-blacklist", internal=True,
                          json={"sessionId": "p1", "validityInSeconds": 60})
    response = await gateway.request("GET", "/secret",
                                     headers={"authorization": f"Bearer {token}"})
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_transform_request_headers(make_gateway, stub_server):
    backend = stub_server(echo)
    definition = api(backend.port.getHost().port,
                     endpoint("on", "GET", "/on", transform_request_headers=True),
                     endpoint("off", "GET", "/off"))
    definition["version_data"]["default"]["transform_request_headers"] = {
        "add_headers": {"custom-header": "v", "host": "other.example"}}
    gateway = make_gateway(proxy_config=(definition,))
    seen = await within((await gateway.request("GET", "/on")).json())
    assert seen["headers"]["custom-header"] == "v"
    assert seen["headers"]["host"].startswith("127.0.0.1:")  # the target host wins
    seen = await within((await gateway.request("GET", "/off")).json())
    assert "custom-header" not in seen["headers"]


@pytest_twisted.ensureDeferred
async def test_http_async_answer_and_timeout(make_gateway, stub_server):
    correlations = []

    def backend_answer(info):
        correlations.append(info["path"])
        return 202, b""

    backend = stub_server(backend_answer)
    definition = api(backend.port.getHost().port,
                     endpoint("async", "POST", "/orders", response_from="http_async"))
    gateway = make_gateway(proxy_config=(definition,), proxy_http_async_response_timeout=0.5)
    waiting = gateway.request("POST", "/orders", data=b"{}")
    for _ in range(100):
        if backend.requests:
            break
        await deferLater(reactor, 0.01)
    assert backend.requests[-1]["path"] == "/orders"
    correlation = backend.last_query()["correlation"]
    response = await gateway.request(
        "POST", "/v3/responses", internal=True, data=b'{"id":42}',
        headers={"rig-correlation": correlation, "rig-response-code": "201",
                 "content-type": "application/json"})
    assert (response.code, await within(response.text())) == (
        202, "message sent to correlated reverse proxy request")
    answer = await waiting
    assert answer.code == 201
    assert await within(answer.text()) == '{"id":42}'
    assert answer.headers.getRawHeaders("content-type") == ["application/json"]
    assert answer.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    timed_out = await gateway.request("POST", "/orders", data=b"{}")
    assert timed_out.code == 504
    response = await gateway.request(
        "POST", "/v3/responses", internal=True, data=b"x",
        headers={"rig-correlation": correlation, "rig-response-code": "abc201"})
    assert response.code == 400
    response = await gateway.request(
        "POST", "/v3/responses", internal=True, data=b"x",
        headers={"rig-correlation": "forged", "rig-response-code": "200"})
    assert response.code == 400


def resident_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest_twisted.ensureDeferred
async def test_large_bodies_stream_both_ways_with_bounded_memory(make_gateway):
    from twisted.internet import interfaces
    from twisted.web import resource, server
    from twisted.web.client import FileBodyProducer
    from zope.interface import implementer

    size = 100 * 1024 * 1024
    chunk = b"x" * 65536

    @implementer(interfaces.IPushProducer)
    class Download:
        def __init__(self, request):
            self.request, self.sent, self.paused = request, 0, False
            request.registerProducer(self, True)
            reactor.callLater(0, self.resumeProducing)

        def resumeProducing(self):
            self.paused = False
            while not self.paused and self.sent < size:
                self.request.write(chunk)
                self.sent += len(chunk)
            if self.sent >= size and not self.request.finished:
                self.request.unregisterProducer()
                self.request.finish()

        def pauseProducing(self):
            self.paused = True

        def stopProducing(self):
            self.sent = size

    class Backend(resource.Resource):
        isLeaf = True
        uploaded = 0

        def render_GET(self, request):
            request.setHeader(b"content-length", b"%d" % size)
            Download(request)
            return server.NOT_DONE_YET

        def render_POST(self, request):
            request.content.seek(0, 2)
            Backend.uploaded = request.content.tell()
            return b"%d" % Backend.uploaded

    port = reactor.listenTCP(0, server.Site(Backend()), interface="127.0.0.1")
    try:
        definition = api(port.getHost().port, endpoint("down", "GET", "/big"),
                         endpoint("up", "POST", "/big"))
        gateway = make_gateway(proxy_config=(definition,))
        before = resident_kb()
        response = await gateway.request("GET", "/big", unbuffered=True)
        received = 0

        def count(data):
            nonlocal received
            received += len(data)

        import treq

        await within(treq.collect(response, count), 60)
        assert received == size
        with tempfile.TemporaryFile() as upload:
            for _ in range(size // len(chunk)):
                upload.write(chunk)
            upload.seek(0)
            response = await gateway.request("POST", "/big", data=FileBodyProducer(upload),
                                             headers={"content-type": "application/octet-stream"})
            assert await within(response.text(), 60) == str(size)
        grown_mb = (resident_kb() - before) / 1024
        assert grown_mb < 60, f"resident memory grew by {grown_mb:.0f} MB"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_body_over_the_proxy_limit_is_413(make_gateway, stub_server):
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("up", "POST", "/up")),),
                           proxy_max_body_bytes=1000)
    response = await gateway.request("POST", "/up", data=b"z" * 5000)
    assert response.code == 413
    response = await gateway.request("POST", "/up", data=b"z" * 500)
    assert response.code == 200


class _RawBackend:
    """A TCP 'backend' that answers every connection with fixed bytes, then closes."""

    def __init__(self, answer):
        from twisted.internet.protocol import Factory, Protocol

        class Answer(Protocol):
            def dataReceived(self, data):
                self.transport.write(answer)
                self.transport.loseConnection()

        self.port = reactor.listenTCP(0, Factory.forProtocol(Answer), interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_garbage_and_cut_responses(make_gateway):
    garbage = _RawBackend(b"this is not HTTP\r\n\r\n")
    cut = _RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little")
    try:
        gateway = make_gateway(proxy_config=(
            api(garbage.port.getHost().port, endpoint("g", "GET", "/garbage"), api_id="g"),
            api(cut.port.getHost().port, endpoint("c", "GET", "/cut"), api_id="c"),
        ))
        response = await gateway.request("GET", "/garbage")
        assert (response.code, await within(response.text())) == (502, "Bad gateway.")
        response = await gateway.request("GET", "/cut")
        assert response.code == 200
        failure = None
        try:
            await within(response.text())
        except Exception as error:  # the client sees a cut body, not a complete one
            failure = error
        assert failure is not None
        response = await gateway.request("GET", "/garbage")  # and the gateway goes on
        assert response.code == 502
    finally:
        await garbage.port.stopListening()
        await cut.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_request_log_console(make_gateway, stub_server):
    from twisted.logger import globalLogPublisher

    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("get", "GET", "/logged")),),
                           request_log=("console",))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        response = await gateway.request("GET", "/logged")
        assert response.code == 200
    finally:
        globalLogPublisher.removeObserver(events.append)
    calls = [event for event in events if event.get("log_format", "").startswith("CALL:")]
    assert len(calls) == 1
    assert calls[0]["endpoint_id"] == "get" and calls[0]["request_path"] == "/logged"


class _RecordingBackend:
    """A keep-alive TCP 'backend' that records each request head and answers *answer*."""

    def __init__(self, answer):
        from twisted.internet.protocol import Factory, Protocol

        self.heads = []
        backend = self

        class Answer(Protocol):
            def dataReceived(self, data):
                backend.heads.append(data)
                self.transport.write(answer)

        self.port = reactor.listenTCP(0, Factory.forProtocol(Answer), interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_response_heads_pass_as_the_backend_sent_them(make_gateway):
    backend = _RecordingBackend(
        b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nX-Mixed-Case: Value\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: no\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    try:
        gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                                 endpoint("h", "GET", "/h/.*")),))
        response = await gateway.request("GET", "/h/caf\u00e9?x=1")
        assert (response.code, await within(response.text())) == (200, "ok")
        headers = response.headers
        assert headers.getRawHeaders("set-cookie") == ["a=1", "b=2"]
        assert headers.getRawHeaders("x-mixed-case") == ["Value"]
        assert response.length == 2  # complete at once: sent with a length, not re-chunked
        assert len(headers.getRawHeaders("date")) == 1  # the gateway's
        assert "1970" not in headers.getRawHeaders("date")[0]
        assert not headers.hasHeader("x-hop") and not headers.hasHeader("content-type")
        request_line = backend.heads[0].split(b"\r\n")[0]
        assert request_line == b"GET /h/caf%C3%A9?x=1 HTTP/1.1"
    finally:
        await backend.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_head_and_no_content_responses_end(make_gateway):
    backend = _RecordingBackend(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
    try:
        gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                                 endpoint("n", "GET", "/none"),
                                                 endpoint("d", "DELETE", "/none")),))
        for method in ("GET", "HEAD", "DELETE", "GET"):
            response = await gateway.request(method, "/none")
            assert response.code == 204
            assert await within(response.content()) == b""
        assert len(backend.heads) == 4
        assert backend.heads[1].startswith(b"HEAD /none HTTP/1.1\r\n")
    finally:
        await backend.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_configured_headers_can_not_inject_lines(make_gateway, stub_server):
    backend = stub_server(echo)
    definition = api(backend.port.getHost().port,
                     endpoint("on", "GET", "/on", transform_request_headers=True))
    definition["version_data"]["default"]["transform_request_headers"] = {
        "add_headers": {"x-a": "1\r\nx-injected: yes", "x-forwarded-for": "spoofed"}}
    gateway = make_gateway(proxy_config=(definition,))
    seen = await within((await gateway.request("GET", "/on")).json())
    assert seen["headers"]["x-a"] == "1  x-injected: yes"
    assert "x-injected" not in seen["headers"]
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_a_proxied_request_leaves_no_cycle_for_the_garbage_collector(make_gateway,
                                                                           stub_server):
    """Every object of the gateway's made for a proxied request is freed by its last
    reference going: a cycle would be found only by the collector, whose runs stall
    every connection of a busy proxy (its p99)."""
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("get", "GET", "/books")),))
    response = await gateway.request("GET", "/books")  # warm-up: the pool's connection
    await within(response.content())
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            response = await gateway.request("GET", "/books")
            assert response.code == 200
            await within(response.content())
        gc.collect()
        ours = sorted({type(found).__qualname__ for found in gc.garbage
                       if type(found).__module__.startswith("rig.")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []


@pytest_twisted.ensureDeferred
async def test_an_incoming_forwarded_chain_and_host_are_extended_and_passed_on(make_gateway,
                                                                               stub_server):
    backend = stub_server(echo)
    port = backend.port.getHost().port
    gateway = make_gateway(proxy_config=(api(port, endpoint("get", "GET", "/books")),))
    response = await gateway.request(
        "GET", "/books", headers={"x-forwarded-for": "10.0.0.1, 10.0.0.2",
                                  "host": "books.example", "connection": "x-private",
                                  "x-private": "hop", "x-kept": "end to end"})
    headers = (await within(response.json()))["headers"]
    assert headers["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    assert headers["x-forwarded-host"] == "books.example"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["x-kept"] == "end to end" and "x-private" not in headers


@pytest_twisted.ensureDeferred
async def test_a_stopped_gateway_closes_its_connections_to_backends_and_checkers(make_gateway,
                                                                                stub_server):
    """Keep-alive connections to a backend and to a subscription checker are closed
    once the gateway has stopped, not left to the far end's idle timeout."""
    backend = stub_server(echo)
    checker = stub_server(lambda info: (200, b""))
    gateway = make_gateway(subscription_check=checker.url, proxy_config=(
        api(backend.port.getHost().port, endpoint("get", "GET", "/books")),))
    response = await gateway.request("GET", "/books")
    assert response.code == 200
    await within(response.text())
    client = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    assert client.status == 200 and checker.requests
    await eventually(reactor, lambda: backend.open_connections and checker.open_connections,
                     5, "both connections kept alive")
    await gateway.stop()
    await eventually(reactor, lambda: not backend.open_connections
                     and not checker.open_connections, 5, "both connections closed")
