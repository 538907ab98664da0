"""Subscriptions as clients send them: an event type plus ``oneOf`` clauses.

Parsing follows RIG's validation and error wording (spec Part B 3.1), so a
client sees the same sentences it saw from the original gateway.
"""
import json

from rig import jsonbounds, jsontext

ABSENT = object()


class SubscriptionError(ValueError):
    """A subscription list was rejected; str() is RIG's sentence."""


class Subscription:
    """One subscription: exact event type, OR of clauses, each an AND of field == value."""

    __slots__ = ("_json_text", "_key", "event_type", "one_of")

    def __init__(self, event_type, one_of=()):
        self.event_type = event_type
        self.one_of = tuple(one_of)
        self._key = jsontext.canonical([event_type, self.one_of])
        self._json_text = None

    def to_json(self):
        return {"eventType": self.event_type, "oneOf": list(self.one_of)}

    def json_text(self):
        """``to_json()`` as compact JSON (encodable as UTF-8), made once: a subscription
        parsed once (:mod:`rig.subscriptions.params`) is told to many connections."""
        text = self._json_text
        if text is None:
            text = self._json_text = jsontext.utf8_compact(self.to_json())
        return text

    def __eq__(self, other):
        return isinstance(other, Subscription) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"Subscription({self.event_type!r}, {list(self.one_of)!r})"


def parse_subscription(entry):
    """One JSON value to a Subscription, or SubscriptionError naming why not."""
    if not isinstance(entry, dict):
        raise _invalid("not a map", entry)
    event_type = _first_present(entry, ("eventType", "event_type"), ABSENT)
    if event_type is ABSENT:
        raise _invalid("event-type not found", entry)
    if not isinstance(event_type, str) or not event_type:
        raise _invalid("event-type empty", entry)
    one_of = _first_present(entry, ("oneOf", "one_of", "constraints"), [])
    if not isinstance(one_of, list):
        raise _invalid("constraints expected to be a list of disjunctive clauses", entry)
    for clause in one_of:
        if not isinstance(clause, dict):
            raise _invalid(
                "a disjunctive clause expected to be a conjunction represented by a map", entry
            )
        if any(not key for key in clause):
            raise _invalid(
                "conjunctive clauses expected to be a map with nonempty strings as keys", entry
            )
    return Subscription(event_type, one_of)


def parse_subscriptions(entries):
    """A JSON array of subscription objects to a list of Subscriptions."""
    if not isinstance(entries, list):
        raise SubscriptionError(
            "invalid subscription: expected a list of subscriptions when parsing "
            + _show(entries)
        )
    return [parse_subscription(entry) for entry in entries]


def decode_subscriptions_param(text, allow_wrapped=False):
    """Decode the ``subscriptions`` query parameter.

    Returns the decoded JSON (not yet validated); raises ValueError with the
    decoder's message when it is not JSON. Long polling also accepts the
    ``{"subscriptions": [...]}`` form (*allow_wrapped*).
    """
    value = jsonbounds.loads(text)
    if allow_wrapped and isinstance(value, dict) and "subscriptions" in value:
        value = value["subscriptions"]
    return value


def unique(subscriptions):
    """Drop exact duplicates, keeping the first of each, in order."""
    seen = set()
    kept = []
    for subscription in subscriptions:
        if subscription not in seen:
            seen.add(subscription)
            kept.append(subscription)
    return kept


def _first_present(entry, names, default):
    for name in names:
        if name in entry:
            return entry[name]
    return default


def _invalid(why, entry):
    return SubscriptionError(f"invalid subscription: {why} when parsing {_show(entry)}")


def _show(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "..."
