"""What the event-stream targets (``redis``, ``nats``) share: the request as a CloudEvent.

As RIG does for Kafka and NATS targets (spec Part B 7.7): the body must be a
JSON object with a ``specversion``; RIG replaces its ``rig`` attribute with
request metadata (and the correlation id when a response is awaited).
"""
from rig import jsonbounds
from rig.httputil import cors_headers, request_body, respond
from rig.proxy.forward import forwarded_path

USAGE = (" Send a CloudEvent: a JSON object with at least specversion, type, source and id,"
         " with content-type application/json.")


def request_metadata(request, route, correlation=None):
    client = request.getClientAddress()
    host = request.getHost()
    metadata = {
        "remoteip": getattr(client, "host", None),
        "host": (request.getHeader(b"host") or b"").decode("latin-1"),
        "port": getattr(host, "port", None),
        "scheme": "https" if request.isSecure() else "http",
        "headers": [[name.decode("latin-1").lower(), value.decode("latin-1")]
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values],
        "method": request.method.decode("latin-1"),
        "path": forwarded_path(route, request.path).decode("utf-8", "replace"),
        "query": request.uri.partition(b"?")[2].decode("latin-1"),
    }
    if correlation is not None:
        metadata["correlation"] = correlation
    return metadata


def target_headers(cors):
    """The CORS headers every answer of an event-stream target carries."""
    return cors_headers(cors, methods=b"*", allow=b"content-type,authorization")


def event_of_request(request, outcome, headers):
    """``(event, None)`` with the request body as a CloudEvent (a dict), or ``(None, the
    body of the 400 answer)`` when it is not one."""
    try:
        event = jsonbounds.loads(request_body(request))
    except ValueError:
        reason = "Bad request: expected a JSON encoded request body."
    else:
        if isinstance(event, dict) and "specversion" in event:
            return event, None
        reason = "Bad request: the body does not look like a CloudEvent."
    outcome.status = "bad_request"
    return None, respond(request, 400, reason + USAGE, headers=headers)
