"""The inbound listener's resource tree (:4000): frontends, event submission, proxy."""
from functools import partial

from rig.connections.longpoll import longpoll_preflight, serve_longpoll
from rig.connections.sse import serve_sse, sse_headers
from rig.connections.sse_lane import SSELane
from rig.connections.subscribe import put_subscriptions, subscriptions_preflight
from rig.connections.ws import websocket_resource
from rig.httputil import TEXT, cors_headers, is_http2, preflight, respond
from rig.web.examples import ExamplePages, load_pages
from rig.web.http import RigSite, Router
from rig.web.publish import publish_event


def health(request):
    return respond(request, 200, b"OK", TEXT)


def events_preflight(cors, request):
    return preflight(request, cors, methods=b"POST", allow=b"content-type")


NOT_AN_UPGRADE = "This endpoint speaks WebSocket only: send an Upgrade: websocket request."
NOT_OVER_HTTP2 = "WebSocket is served over HTTP/1.1 only: connect without HTTP/2."


def upgrade_to_websocket(websocket, request):
    """Hand the connection to the WebSocket (:mod:`rig.connections.upgrade`); its HTTP
    channel is then no longer the site's to drain (the hub closes WebSockets on shutdown).

    A plain GET gets 426 here (autobahn's resource answered it with its banner page:
    200, naming itself and its version). So does any request over HTTP/2, which has no
    upgrade (and no ``Upgrade`` header)."""
    if is_http2(request):
        body = respond(request, 426, NOT_OVER_HTTP2, TEXT)
        request.setResponseCode(426, b"Upgrade Required")
        return body
    upgrade = request.getHeader(b"upgrade") or b""
    if upgrade.strip().lower() != b"websocket":
        body = respond(request, 426, NOT_AN_UPGRADE, TEXT, headers=[(b"upgrade", b"websocket")])
        request.setResponseCode(426, b"Upgrade Required")  # a phrase Twisted does not know
        return body
    return websocket.render(request)


def inbound_resource(hub, settings, proxy):
    cors = settings.cors.encode("utf-8")
    websocket = websocket_resource(hub)
    cors_header = cors_headers(cors)
    routes = [
        (r"/_rig/health", {b"GET": health}),
        (r"/_rig/v1/events", {
            b"POST": partial(publish_event, hub, extra_headers=cors_header,
                             check=hub.auth.submission_check),
            b"OPTIONS": partial(events_preflight, cors),
        }),
        (r"/_rig/v1/connection/sse", {
            b"GET": partial(serve_sse, hub, sse_headers(cors)),
            b"POST": partial(serve_sse, hub, sse_headers(cors)),
        }),
        (r"/_rig/v1/connection/ws", {b"GET": partial(upgrade_to_websocket, websocket)}),
        (r"/_rig/v1/connection/longpolling", {
            b"GET": partial(serve_longpoll, hub, settings, cors),
            b"OPTIONS": partial(longpoll_preflight, cors),
        }),
        (r"/_rig/v1/connection/(?P<kind>sse|ws|longpolling)/(?P<token>[^/]+)/subscriptions", {
            b"PUT": partial(put_subscriptions, hub, cors),
            b"OPTIONS": partial(subscriptions_preflight, cors),
        }),
    ]
    if settings.examples_enabled:  # off: /_rig/examples/ falls through to the proxy (404)
        routes += ExamplePages(load_pages()).routes()
    return Router(routes, fallback=proxy)


def inbound_site(hub, settings, proxy):
    site = RigSite(inbound_resource(hub, settings, proxy),
                   max_request_bytes=settings.max_request_bytes,
                   max_proxy_body_bytes=settings.proxy_max_body_bytes,
                   header_timeout=settings.http_header_timeout,
                   idle_timeout=settings.http_idle_timeout)
    site.stream_lane = SSELane(hub, sse_headers(settings.cors.encode("utf-8")))
    return site
