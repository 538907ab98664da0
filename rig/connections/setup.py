"""What every transport does before a connection goes live (spec Part B 2.3 steps 1-6).

Parse the ``subscriptions`` parameter, turn a ``jwt`` parameter into
subscriptions, validate, combine, and count the connection against the
per-minute limit. Failures carry the HTTP answer and the WebSocket close reason.
"""
from rig.auth import InvalidJWT
from rig.subscriptions.model import (
    SubscriptionError,
    decode_subscriptions_param,
    parse_subscriptions,
    unique,
)

BAD_REQUEST = "Bad request."
RATE_LIMITED = "Reached maximum number of connections"


class SetupError(Exception):
    """A refused connection: HTTP *status* and *message*, WebSocket *close_reason*."""

    def __init__(self, status, message, close_reason=BAD_REQUEST):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close_reason = close_reason


def query_arg(args, name):
    """The first value of query parameter *name* as text, None when absent or empty."""
    values = args.get(name.encode("ascii")) or args.get(name)
    if not values:
        return None
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value or None


def connection_subscriptions(hub, args, *, longpoll=False):
    """The effective subscriptions of a new connection, or SetupError.

    Long polling checks the rate limit first and accepts the wrapped
    ``{"subscriptions": [...]}`` form, as RIG does.
    """
    if longpoll and not hub.rate_limit.allow():
        raise SetupError(429, RATE_LIMITED)
    text = query_arg(args, "subscriptions")
    decoded = []
    if text is not None:
        try:
            decoded = decode_subscriptions_param(text, allow_wrapped=longpoll)
        except ValueError as error:
            message = f"Failed to decode subscription list: {error}"
            raise SetupError(400, message, close_reason=message) from None
    inferred = []
    token = query_arg(args, "jwt")
    if token is not None:
        try:
            _claims, inferred = hub.subscriptions_from_jwt(token)
        except InvalidJWT as error:
            raise SetupError(
                400, f"could not parse subscriptions: could not decode JWT: {error}"
            ) from None
    try:
        manual = parse_subscriptions(decoded)
    except SubscriptionError as error:
        raise SetupError(400, f"could not parse subscriptions: {error}") from None
    if not longpoll and not hub.rate_limit.allow():
        raise SetupError(429, RATE_LIMITED)
    return unique(inferred + manual)
