"""What every transport does before a connection goes live (spec Part B 2.3 steps 1-6).

Parse the ``subscriptions`` parameter, turn a ``jwt`` parameter into claims
and subscriptions, validate, ask ``SUBSCRIPTION_CHECK`` (only when
subscriptions were given), and count the connection against the per-minute
limit. Failures carry the HTTP answer and the WebSocket close reason.
"""
import json

import attrs
from twisted.internet.defer import ensureDeferred

from rig.auth.checks import CheckRequest, NoCheck
from rig.auth.jwt import InvalidJWT
from rig.hub.closing import SHUTDOWN
from rig.subscriptions.model import SubscriptionError, unique

BAD_REQUEST = "Bad request."
RATE_LIMITED = "Reached maximum number of connections"
DENIED = "Subscription denied (not authorized)."
SHUTTING_DOWN = "Shutting down."


class SetupError(Exception):
    """A refused connection: HTTP *status* and *message*, WebSocket *close_code* and
    *close_reason*."""

    def __init__(self, status, message, close_reason=BAD_REQUEST, close_code=1000):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close_reason = close_reason
        self.close_code = close_code


@attrs.frozen
class Admission:
    """An accepted connection's subscriptions, the claims of its JWT (if any),
    and the last event id it resumes from (if any)."""

    subscriptions: tuple | list
    claims: dict | None = None
    resume: str | None = None

    def join(self, hub, connection):
        """Register *connection* and tie it to its JWT's session and lifetime.

        Returns None once the welcome is sent, or a Deferred that fires when it
        is (the cluster had to learn of a new event type first).
        """
        confirming = hub.register(connection, self.subscriptions, resume=self.resume)
        if self.claims is not None:
            hub.join_sessions(connection, [self.claims])
        return confirming


def query_arg(args, name):
    """The first value of query parameter *name* as text, None when absent or empty."""
    values = args.get(name.encode("ascii")) or args.get(name)
    if not values:
        return None
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value or None


async def admit(hub, args, *, longpoll=False, last_event_id=None, trace=(None, None)):
    """The Admission of a new connection, or SetupError.

    Long polling checks the rate limit first and accepts the wrapped
    ``{"subscriptions": [...]}`` form, as RIG does. The client resumes from
    *last_event_id* (SSE's ``Last-Event-ID`` header) or else from the
    ``lastEventId`` query parameter. *trace* is the request's ``(traceparent,
    tracestate)``, for an external subscription check.
    """
    admitting = _Admitting(hub, args, longpoll, last_event_id, trace)
    if admitting.check is None:
        return admitting.admission()
    return await _checked(admitting)


def admit_at_once(hub, args, *, longpoll=False, last_event_id=None, trace=(None, None)):
    """:func:`admit` without a coroutine: the Admission, or SetupError, at once when no
    external subscription check has to answer first (most connects); else a Deferred
    of it. A coroutine and its Deferred cost about 6 us per connect."""
    admitting = _Admitting(hub, args, longpoll, last_event_id, trace)
    if admitting.check is None:
        return admitting.admission()
    return ensureDeferred(_checked(admitting))


def admit_unchecked(hub, args, *, last_event_id=None, trace=(None, None)):
    """The Admission of an SSE or WebSocket connect that no external subscription check
    has to answer, else None (having asked nothing); SetupError as :func:`admit`'s.
    Nothing is counted against the rate limit unless the connect is admitted."""
    admitting = _Admitting(hub, args, False, last_event_id, trace)
    if admitting.check is not None:
        return None
    return admitting.admission()


async def _checked(admitting):
    if not await admitting.hub.auth.subscription_check.allows(admitting.check):
        raise SetupError(400, DENIED)
    return admitting.admission()


class _Admitting:
    """Everything an admission decides without waiting (the parameters, the JWT); the
    request for the external subscription check in ``check`` when one must answer."""

    __slots__ = ("args", "check", "claims", "hub", "last_event_id", "longpoll", "subscriptions")

    def __init__(self, hub, args, longpoll, last_event_id, trace):
        if hub.closing:  # this node is shutting down: connect to another one
            raise SetupError(503, SHUTTING_DOWN, close_reason=SHUTDOWN.ws_reason,
                             close_code=SHUTDOWN.ws_code)
        if longpoll and not hub.rate_limit.allow():
            raise SetupError(429, RATE_LIMITED)
        self.hub, self.args, self.longpoll = hub, args, longpoll
        self.last_event_id = last_event_id
        text = query_arg(args, "subscriptions")
        decoded, manual, params = [], (), hub.subscription_params
        if text is not None:
            known = params.known(text, longpoll)
            if known is not None:
                decoded, manual = known
            else:
                try:
                    decoded = params.decode(text, longpoll)
                except ValueError as error:
                    message = f"Failed to decode subscription list: {error}"
                    raise SetupError(400, message, close_reason=message) from None
                manual = None  # parsed after the JWT: its error is said first
        claims, inferred = None, []
        token = query_arg(args, "jwt")
        if token is not None:
            try:
                claims = hub.auth.validator.claims(token)
            except InvalidJWT as error:
                raise SetupError(
                    400, f"could not parse subscriptions: could not decode JWT: {error}"
                ) from None
            inferred = hub.subscriptions_from_claims(claims)
        if manual is None:
            try:
                manual = params.parse(text, longpoll, decoded)
            except SubscriptionError as error:
                raise SetupError(400, f"could not parse subscriptions: {error}") from None
        self.claims = claims
        # unique already: the manual ones on their own need no second pass
        self.subscriptions = unique(inferred + list(manual)) if inferred else manual
        self.check = None
        if text is not None and not isinstance(hub.auth.subscription_check, NoCheck):
            self.check = CheckRequest(
                json.dumps({"subscriptions": decoded}).encode(),
                "application/json; charset=utf-8",
                (f"Bearer {token}",) if token is not None else (),
                *trace,
            )

    def admission(self):
        """The Admission, once the subscription check (if any) allowed it."""
        if not self.longpoll and not self.hub.rate_limit.allow():
            raise SetupError(429, RATE_LIMITED)
        resume = self.last_event_id or query_arg(self.args, "lastEventId")
        return Admission(self.subscriptions, self.claims, resume)
