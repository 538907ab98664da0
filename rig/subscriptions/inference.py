"""Subscriptions inferred from JWT claims (spec Part B 3.4)."""
from rig.subscriptions.model import Subscription
from rig.subscriptions.pointer import MISSING, resolve


def jwt_subscriptions(extractors, claims):
    """One subscription per event type with at least one field whose
    ``jwt.json_pointer`` resolves in *claims*, as a single AND clause."""
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
