"""HTTP helpers for handlers of every layer: answer a request, read its body and headers.

Below ``rig/connections``, ``rig/proxy`` and ``rig/web``: handlers use these,
and only ``rig/web`` assembles sites from the handlers.
"""
import re

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json; charset=utf-8"


def client_gone(request):
    """Whether the client closed its connection before the response finished."""
    return getattr(request, "client_gone", False)


def is_http2(request):
    """Whether *request* came over HTTP/2 (a stream of a shared connection)."""
    return request.clientproto == b"HTTP/2"


def abort_response(request):
    """Cut a started response short, so that its client sees it incomplete: over
    HTTP/1.1 by closing the connection, over HTTP/2 by resetting the request's
    stream only (its connection carries other requests)."""
    if is_http2(request):
        if request.channel is not None:
            request.channel.abortConnection()
    else:
        request.loseConnection()


_TOKEN_IN_PATH = re.compile(rb"(/_rig/v1/connection/[^/]*/)([^/]{8})[^/]*")


def redacted_path(path):
    """A request path fit for a log: a connection token keeps only its first 8 characters."""
    if isinstance(path, str):
        return redacted_path(path.encode("utf-8", "replace")).decode("utf-8", "replace")
    return _TOKEN_IN_PATH.sub(rb"\1\2...", path)


def respond(request, status, body=b"", content_type=TEXT, headers=()):
    """Set status and headers and return the body for ``render`` to send."""
    request.setResponseCode(status)
    if content_type is None:
        request.defaultContentType = None
    if isinstance(body, str):  # a message may quote the client's input, lone surrogates and all
        body = body.encode("utf-8", "backslashreplace")
    if content_type is not None and body:
        request.setHeader(b"content-type", content_type)
    for name, value in headers:
        request.setHeader(name, value)
    return body


def respond_now(request, status, body=b"", content_type=TEXT, headers=()):
    """:func:`respond`, written and finished at once: for an answer that comes after
    ``render`` returned ``NOT_DONE_YET``."""
    request.write(respond(request, status, body, content_type, headers))
    request.finish()


def request_body(request):
    request.content.seek(0)
    return request.content.read()


def header(request, name):
    """A request header as text (UTF-8, lenient), or None."""
    value = request.getHeader(name)
    return None if value is None else value.decode("utf-8", "replace")


def authorization_values(request):
    """The request's Authorization header values, as text, in order."""
    return tuple(
        value.decode("utf-8", "replace")
        for value in request.requestHeaders.getRawHeaders(b"authorization", [])
    )


def headers_as_text(request):
    """Lower-case header name to its first value, both as text."""
    return {
        name.decode("latin-1").lower(): values[0].decode("utf-8", "replace")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def cors_headers(origin, *, methods=None, allow=None, credentials=False):
    """RIG's CORS response headers: the allowed origin (``CORS``), and for a preflight
    the methods and request headers it allows."""
    headers = [(b"access-control-allow-origin", origin)]
    if credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    if methods is not None:
        headers.append((b"access-control-allow-methods", methods))
    if allow is not None:
        headers.append((b"access-control-allow-headers", allow))
    return headers


def preflight(request, origin, *, methods, allow, credentials=False):
    """Answer a CORS preflight (``OPTIONS``): 204 with the CORS headers."""
    return respond(request, 204, headers=cors_headers(origin, methods=methods, allow=allow,
                                                      credentials=credentials))
