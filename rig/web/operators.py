"""Who may use the internal API: it can rewrite proxy routes, kill sessions, publish events.

With ``API_AUTH_TOKENS`` every internal endpoint but ``/health`` and
``/metrics`` needs ``Authorization: Bearer <one of them>``, or HTTP Basic
with one of them as the password (any user name), so that a browser asks for
it when an operator opens Swagger UI or the dashboard; with
``API_HTTPS_CLIENT_CA`` a request over the internal HTTPS port is already
authenticated by its client certificate (the TLS handshake refused any other).
Without either, the API is open, as RIG's is.
"""
import base64
import binascii
import hmac
import ipaddress

from twisted.web.resource import Resource

from rig.httputil import JSON, respond
from rig.listeners import tcp_address

OPEN_PATHS = frozenset((b"/health", b"/metrics"))
UNAUTHORIZED = b'{"errors":{"detail":"Unauthorized"}}'
CHALLENGES = [b'Bearer realm="rig internal API"',
              b'Basic realm="rig internal API", charset="UTF-8"']  # Basic: browsers ask


class OperatorGuard(Resource):
    """Lets a request through to *inner* only when its sender may use the internal API."""

    isLeaf = True

    def __init__(self, inner, *, tokens=(), client_certificates=False):
        super().__init__()
        self._inner = inner
        self._tokens = tuple(token.encode("utf-8") for token in tokens)
        self._client_certificates = client_certificates
        self.locked = bool(self._tokens) or client_certificates

    def render(self, request):
        if not self.locked or request.path in OPEN_PATHS or self._allowed(request):
            return self._inner.render(request)
        request.responseHeaders.setRawHeaders(b"www-authenticate", CHALLENGES)
        return respond(request, 401, UNAUTHORIZED, JSON)

    def _allowed(self, request):
        if self._client_certificates and request.isSecure():
            return True  # the handshake checked its certificate against API_HTTPS_CLIENT_CA
        matched = False
        for value in request.requestHeaders.getRawHeaders(b"authorization", []):
            scheme, _, token = value.strip().partition(b" ")
            scheme = scheme.lower()
            if scheme == b"basic":
                token = _basic_password(token.strip())
            elif scheme != b"bearer":
                continue
            token = token.strip()
            for known in self._tokens:  # every token compared, in constant time each
                matched |= hmac.compare_digest(token, known)
        return matched


def _basic_password(credentials):
    """The password of HTTP Basic *credentials* (base64 ``user:password``); b"" when
    they do not decode, which matches no token."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return b""
    return decoded.partition(b":")[2]


def beyond_loopback(description):
    """Whether a listener description accepts connections from other machines."""
    address = tcp_address(description)
    if address is None:
        return not description.startswith(("unix:", "fd:"))
    host = address[1]
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host not in ("localhost",)  # "" (every interface) or a name
