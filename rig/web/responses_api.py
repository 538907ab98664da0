"""``POST /v3/responses``: a backend answers a request waiting under ``http_async``."""
from rig.httputil import header, request_body, respond
from rig.hub.token import InvalidToken
from rig.proxy.gateway import AsyncAnswer

SENT = "message sent to correlated reverse proxy request"
_NOT_COPIED = frozenset((
    b"rig-correlation", b"rig-response-code", b"host", b"content-length", b"connection",
    b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer", b"user-agent",
    b"accept", b"accept-encoding", b"accept-language", b"expect", b"authorization",
))


def _bad(request, reason):
    return respond(request, 400, f"Failed to parse request body: {reason}", content_type=None)


def post_response(correlations, request):
    correlation = header(request, b"rig-correlation")
    code = header(request, b"rig-response-code")
    if not correlation:
        return _bad(request, 'missing header "rig-correlation"')
    if not code:
        return _bad(request, 'missing header "rig-response-code"')
    try:
        status = int(code.strip())
    except ValueError:
        return _bad(request, f'{{:error, {{:not_an_integer, "{code}"}}}}')
    if not 100 <= status <= 599:
        return _bad(request, f"status code {status} is not between 100 and 599")
    try:
        ref = correlations.codec.decode(correlation.strip())
    except InvalidToken:
        return _bad(request, "invalid correlation id")
    headers = tuple(
        (name.lower(), value)
        for name, values in request.requestHeaders.getAllRawHeaders()
        if name.lower() not in _NOT_COPIED
        for value in values
    )
    correlations.answer(ref, AsyncAnswer(status, headers, request_body(request)))
    return respond(request, 202, SENT, content_type=None)
