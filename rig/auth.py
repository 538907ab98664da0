"""The seam where JWTs turn into claims (the authentication issue fills it in).

Until JWT validation is configured every token is refused, so a client that
sends one learns so instead of silently losing its JWT-derived subscriptions.
"""
from rig.subscriptions.model import Subscription
from rig.subscriptions.pointer import MISSING, resolve


class InvalidJWT(ValueError):
    """A token that must not be trusted; str() is the reason."""


class NoJWTValidation:
    """Refuses every token: no key is configured."""

    def claims(self, token):
        raise InvalidJWT("JWT validation is not configured")


def jwt_subscriptions(extractors, claims):
    """Subscriptions inferred from JWT claims (spec Part B 3.4).

    One subscription per event type with at least one field whose
    ``jwt.json_pointer`` resolves in *claims*, as a single AND clause.
    """
    inferred = []
    for event_type, fields in extractors.by_type.items():
        clause = {}
        for field in fields:
            if field.jwt_pointer is None:
                continue
            value = resolve(field.jwt_pointer, claims)
            if value is not MISSING:
                clause[field.name] = value
        if clause:
            inferred.append(Subscription(event_type, [clause]))
    return inferred
