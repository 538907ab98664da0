"""The subscription index: which connections want an event, without a scan.

Rows are kept per event type. A clause whose configured fields are all
unconstrained is a wildcard row; any other clause is filed under the value of
its first constrained field (lowest ``stable_field_index``), and its other
constraints are checked only for events that hit that bucket. Matching an
event therefore costs the wildcard rows plus the rows filed under the event's
own field values, however many connections subscribe to other types or values.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

from rig.subscriptions.pointer import MISSING, resolve

if TYPE_CHECKING:  # for the annotations only: no import cycle at run time
    from rig.events import CloudEvent
    from rig.subscriptions.extractors import ExtractorConfig
    from rig.subscriptions.model import Subscription


def index_key(value):
    """A hashable key under which equal JSON scalars meet.

    Numbers compare numerically (30 == 30.0), strings and booleans exactly,
    and ``"30"`` never meets ``30`` nor ``true`` meets ``1``. Non-scalars and
    null have no key: they never satisfy a constraint.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if kind is bool:
        return (bool, value)
    return MISSING


class _Row:
    __slots__ = ("connection", "others")

    def __init__(self, connection, others):
        self.connection = connection
        self.others = others  # tuple of (field, key) still to check


class _TypeRows:
    __slots__ = ("buckets", "fields", "wildcard")

    def __init__(self, fields):
        self.fields = {field.name: field for field in fields}
        self.wildcard = {}  # connection -> number of wildcard rows
        self.buckets = {}  # field name -> {key: set of rows}

    def is_empty(self):
        return not self.wildcard and not self.buckets


class SubscriptionIndex:
    """Maps (event type, field values) to connections."""

    def __init__(self, extractors: ExtractorConfig) -> None:
        self._extractors = extractors
        self._types: dict[str, _TypeRows] = {}
        self._handles: dict[Hashable, list] = {}  # connection -> removal handles

    def __len__(self) -> int:
        """The number of rows (what RIG's ``rig_subscriptions_total`` counts)."""
        return sum(len(handles) for handles in self._handles.values())

    def event_types(self) -> set[str]:
        return set(self._types)

    def set(self, connection: Hashable, subscriptions: Iterable[Subscription]) -> None:
        """Replace *connection*'s rows with those of *subscriptions*."""
        self.remove(connection)
        handles = []
        for subscription in subscriptions:
            clauses: tuple = subscription.one_of or ({},)
            for clause in clauses:
                handles.append(self._add(connection, subscription.event_type, clause))
        if handles:
            self._handles[connection] = handles

    def remove(self, connection: Hashable) -> None:
        for event_type, rows, field, key, row in self._handles.pop(connection, ()):
            if row is None:
                count = rows.wildcard[connection] - 1
                if count:
                    rows.wildcard[connection] = count
                else:
                    del rows.wildcard[connection]
            else:
                by_key = rows.buckets[field]
                bucket = by_key[key]
                bucket.discard(row)
                if not bucket:
                    del by_key[key]
                    if not by_key:
                        del rows.buckets[field]
            if rows.is_empty():
                del self._types[event_type]

    def match(self, event: CloudEvent) -> Sequence[Hashable]:
        """The connections with at least one row matching *event*, each once."""
        rows = self._types.get(event.type)
        if rows is None:
            return ()
        wildcard = rows.wildcard
        if not rows.buckets:
            return list(wildcard)
        matched = list(wildcard)
        seen = None
        document = event.filterable
        keys: dict = {}
        for name, by_key in rows.buckets.items():
            key = self._key_of(rows, name, document, keys)
            if key is MISSING:
                continue
            bucket = by_key.get(key)
            if not bucket:
                continue
            for row in bucket:
                connection = row.connection
                if connection in wildcard or (seen is not None and connection in seen):
                    continue
                if row.others and not self._others_match(rows, row.others, document, keys):
                    continue
                if seen is None:
                    seen = set()
                seen.add(connection)
                matched.append(connection)
        return matched

    def _add(self, connection, event_type, clause):
        rows = self._types.get(event_type)
        if rows is None:
            rows = self._types[event_type] = _TypeRows(self._extractors.fields(event_type))
        constraints = [
            (field.name, clause[field.name])
            for field in rows.fields.values()
            if clause.get(field.name) is not None
        ]
        if not constraints:
            rows.wildcard[connection] = rows.wildcard.get(connection, 0) + 1
            return (event_type, rows, None, None, None)
        (field, value), others = constraints[0], constraints[1:]
        row = _Row(connection, tuple((name, index_key(other)) for name, other in others))
        key = index_key(value)
        rows.buckets.setdefault(field, {}).setdefault(key, set()).add(row)
        return (event_type, rows, field, key, row)

    @staticmethod
    def _key_of(rows, name, document, keys):
        key = keys.get(name, None)
        if key is None:
            key = keys[name] = index_key(resolve(rows.fields[name].event_pointer, document))
        return key

    def _others_match(self, rows, others, document, keys):
        for name, wanted in others:
            if wanted is MISSING or self._key_of(rows, name, document, keys) != wanted:
                return False
        return True
