"""SubscriptionIndex against a brute-force oracle of spec Part B 3.2."""

import itertools
import types

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.subscriptions.extractors import parse_extractors
from rig.subscriptions.index import SubscriptionIndex
from rig.subscriptions.model import parse_subscription

KNOWN_TYPES = ("t0", "t1", "t2")
EVENT_TYPES = (*KNOWN_TYPES, "t9", "T0")  # t9 is never configured; T0 differs only in case
FIELD_NAMES = ("f0", "f1", "f2")
CLAUSE_FIELDS = (*FIELD_NAMES, "zz")  # zz is never configured
DATA_KEYS = ("d0", "d1")

SCALARS = (30, 30.0, "30", True, False, 1, 1.0, 0, 0.0, -0.0, "a", "b", "", "true")
NESTED = ({"x": 30}, [30], [], {}, ["a", "b"], {"x": {"y": "a"}})
# Near misses are listed again so that equal and almost equal values meet often.
# (sampled_from draws uniformly; one_of and optional keys lean towards the first branch.)
VALUE_POOL = (None, *SCALARS, *NESTED, 30, 30.0, "30", True, 1, None)
VALUES = st.sampled_from(VALUE_POOL)
# Most events and subscriptions use t0 so that they meet often.
TYPES = st.sampled_from(("t0", "t0", "t0", *EVENT_TYPES))
MISSING = object()

ORACLE_SETTINGS = settings(derandomize=True, deadline=None, max_examples=300, database=None)


class Connection:
    """A plain connection object: hashable by identity only."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Connection({self.name})"


def event(event_type, data=MISSING, **attributes):
    document = {"specversion": "1.0", "type": event_type, "id": "1", "source": "s"}
    document.update(attributes)
    if data is not MISSING:
        document["data"] = data
    return types.SimpleNamespace(type=event_type, filterable=document)


# -- the oracle -------------------------------------------------------------------------


def _is_scalar(value):
    return type(value) in (str, int, float, bool)


def _equal(event_value, clause_value):
    if not (_is_scalar(event_value) and _is_scalar(clause_value)):
        return False
    if isinstance(event_value, bool) or isinstance(clause_value, bool):
        return type(event_value) is bool and type(clause_value) is bool and (
            event_value == clause_value
        )
    if isinstance(event_value, str) or isinstance(clause_value, str):
        return type(event_value) is str and type(clause_value) is str and (
            event_value == clause_value
        )
    return event_value == clause_value


def _extract(document, data_key):
    data = document.get("data", MISSING)
    if not isinstance(data, dict):
        return MISSING
    return data.get(data_key, MISSING)


def oracle_match(config, subscriptions_by_connection, ev):
    """ids of the connections that spec 3.2 says receive *ev*, sorted."""
    fields = config.get(ev.type, {})
    matched = []
    for connection, subscriptions in subscriptions_by_connection.items():
        for subscription in subscriptions:
            if subscription["eventType"] != ev.type:
                continue
            one_of = subscription.get("oneOf", [])
            if not one_of or any(_clause_matches(fields, clause, ev) for clause in one_of):
                matched.append(id(connection))
                break
    return sorted(matched)


def _clause_matches(fields, clause, ev):
    for name, spec in fields.items():
        wanted = clause.get(name)
        if wanted is None:
            continue
        data_key = spec["event"]["json_pointer"].rsplit("/", 1)[1]
        value = _extract(ev.filterable, data_key)
        if value is MISSING or not _equal(value, wanted):
            return False
    return True


def oracle_rows(subscriptions_by_connection):
    return sum(
        max(1, len(subscription.get("oneOf", [])))
        for subscriptions in subscriptions_by_connection.values()
        for subscription in subscriptions
    )


def oracle_types(subscriptions_by_connection):
    return {
        subscription["eventType"]
        for subscriptions in subscriptions_by_connection.values()
        for subscription in subscriptions
    }


# -- strategies -------------------------------------------------------------------------


FIELD_ORDERS = tuple(itertools.permutations(range(len(FIELD_NAMES))))


@st.composite
def extractor_configs(draw):
    """1-3 event types (t0 always), each with 0-3 fields.

    One integer per type says which fields exist, which data key each points at, and
    their stable_field_index order (drawing these one by one is needlessly slow).
    """
    others = draw(st.lists(st.sampled_from(KNOWN_TYPES[1:]), max_size=2, unique=True))
    config = {}
    for event_type in (KNOWN_TYPES[0], *others):
        code = draw(st.integers(0, 8 * 8 * len(FIELD_ORDERS) * 4 - 1))
        code, present = divmod(code, 8)
        code, keys = divmod(code, 8)
        spread, order = divmod(code, len(FIELD_ORDERS))
        config[event_type] = {
            name: {
                "stable_field_index": FIELD_ORDERS[order][position] * (spread + 1),
                "event": {"json_pointer": "/data/" + DATA_KEYS[keys >> position & 1]},
            }
            for position, name in enumerate(FIELD_NAMES)
            if present >> position & 1
        }
    return config


# Clauses mostly constrain configured names: wildcard clauses shadow a connection's
# other clauses, so too many of them would leave little to check.
CLAUSES = st.dictionaries(
    st.sampled_from((*FIELD_NAMES, *FIELD_NAMES, *CLAUSE_FIELDS)), VALUES, max_size=3
)


@st.composite
def subscriptions(draw):
    subscription = {"eventType": draw(TYPES)}
    shape = draw(st.sampled_from(("clauses",) * 6 + ("empty", "absent")))
    if shape == "clauses":
        subscription["oneOf"] = draw(st.lists(CLAUSES, min_size=1, max_size=3))
    elif shape == "empty":
        subscription["oneOf"] = []
    return subscription


SUBSCRIPTION_LISTS = st.lists(subscriptions(), max_size=3)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 4), SUBSCRIPTION_LISTS),
        st.tuples(st.just("remove"), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=6,
)


def twins(value):
    """Values that look like *value* but may or may not equal it."""
    kind = type(value)
    if kind is bool:
        return (int(value), float(value), str(value).lower())
    if kind in (int, float):
        found = [float(value), str(value)]
        if value == int(value):
            found.append(int(value))
        if value in (0, 1):
            found.append(bool(value))
        return tuple(found)
    if kind is str:
        try:
            return (int(value), float(value))
        except ValueError:
            return (value + "x",)
    return ()


def events_near(operations):
    """Events whose data values are often the constraint values of *operations*."""
    used = [
        value
        for operation in operations
        if operation[0] == "set"
        for subscription in operation[2]
        for clause in subscription.get("oneOf", ())
        for value in clause.values()
    ]
    near = [twin for value in used for twin in (value, *twins(value))]
    values = st.sampled_from((*near, *near, *VALUE_POOL, MISSING, MISSING))
    shapes = st.sampled_from(("object",) * 8 + ("missing", "scalar"))

    @st.composite
    def one_event(draw):
        shape = draw(shapes)
        if shape == "missing":
            data = MISSING
        elif shape == "scalar":
            data = draw(VALUES)
        else:
            drawn = {key: draw(values) for key in DATA_KEYS}
            data = {key: value for key, value in drawn.items() if value is not MISSING}
        return event(draw(TYPES), data)

    return st.lists(one_event(), min_size=1, max_size=4)


def probes(config, current):
    """Events aimed at each current clause: one meeting it exactly, then near misses.

    Random events rarely hit a constrained clause, so every check also tries, for each
    clause, the event carrying exactly its constrained values and variants with one of
    those values replaced by a look-alike, a null or nothing.
    """
    for entries in current.values():
        for subscription in entries:
            event_type = subscription["eventType"]
            fields = config.get(event_type, {})
            for clause in subscription.get("oneOf") or [{}]:
                wanted = {}
                for name, spec in fields.items():
                    if clause.get(name) is not None:
                        wanted[spec["event"]["json_pointer"].rsplit("/", 1)[1]] = clause[name]
                yield event(event_type, dict(wanted))
                for key, value in wanted.items():
                    for other in (*twins(value), None, MISSING):
                        data = dict(wanted)
                        data[key] = other
                        if other is MISSING:
                            del data[key]
                        yield event(event_type, data)


def check(index, config, current, evs):
    assert len(index) == oracle_rows(current)
    assert index.event_types() == oracle_types(current)
    for ev in [*evs, *probes(config, current)]:
        got = list(map(id, index.match(ev)))
        assert len(got) == len(set(got)), f"a connection matched twice for {ev}"
        assert sorted(got) == oracle_match(config, current, ev), ev


@ORACLE_SETTINGS
@given(
    config=extractor_configs(),
    operations=OPERATIONS,
    data=st.data(),
)
def test_index_agrees_with_oracle(config, operations, data):
    evs = data.draw(events_near(operations), label="events")
    extractors = parse_extractors(config)
    index = SubscriptionIndex(extractors)
    connections = [Connection(number) for number in range(5)]
    current = {}
    for operation in operations:
        connection = connections[operation[1]]
        if operation[0] == "set":
            index.set(connection, [parse_subscription(entry) for entry in operation[2]])
            if operation[2]:
                current[connection] = operation[2]
            else:
                current.pop(connection, None)
        else:
            index.remove(connection)
            current.pop(connection, None)
        check(index, config, current, evs)
    for connection in connections:
        index.remove(connection)
    assert index.event_types() == set()
    assert len(index) == 0
    for ev in evs:
        assert list(index.match(ev)) == []


# -- hand-written cases -----------------------------------------------------------------

PERSON = {
    "person.create": {
        "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}},
        "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}},
    }
}


def matches(index, connection, ev):
    return connection in list(index.match(ev))


def person(name, age=MISSING):
    data = {"name": name}
    if age is not MISSING:
        data["age"] = age
    return event("person.create", data)


def test_scenario_34_name_and_age():
    index = SubscriptionIndex(parse_extractors(PERSON))
    joe30 = Connection("joe30")
    index.set(joe30, [parse_subscription(
        {"eventType": "person.create", "oneOf": [{"name": "joe", "age": 30}]}
    )])
    assert matches(index, joe30, person("joe", 30))
    assert matches(index, joe30, person("joe", 30.0))
    assert not matches(index, joe30, person("joe", 20))
    assert not matches(index, joe30, person("joe", None))
    assert not matches(index, joe30, person("joe"))
    assert not matches(index, joe30, person("joe", "30"))
    assert not matches(index, joe30, person("bob", 30))


def test_scenario_34_name_only():
    index = SubscriptionIndex(parse_extractors(PERSON))
    joe = Connection("joe")
    index.set(joe, [parse_subscription(
        {"eventType": "person.create", "oneOf": [{"name": "joe"}]}
    )])
    assert matches(index, joe, person("joe", 20))
    assert matches(index, joe, person("joe", 30))
    assert matches(index, joe, person("joe", None))
    assert not matches(index, joe, person("bob", 30))


def test_scenario_35_unconfigured_field_is_a_wildcard():
    index = SubscriptionIndex(parse_extractors({}))
    joe = Connection("joe")
    index.set(joe, [parse_subscription({"eventType": "greeting", "oneOf": [{"name": "joe"}]})])
    assert list(index.match(event("greeting", {"name": "sam"}))) == [joe]
    assert list(index.match(event("greeting"))) == [joe]
    assert list(index.match(event("greeting.other", {"name": "joe"}))) == []


def test_scenario_35_field_configured_for_another_type_only():
    index = SubscriptionIndex(parse_extractors({
        "other": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}}},
    }))
    joe = Connection("joe")
    index.set(joe, [parse_subscription({"eventType": "greeting", "oneOf": [{"name": "joe"}]})])
    assert list(index.match(event("greeting", {"name": "sam"}))) == [joe]


def test_or_of_clauses_and_each_connection_once():
    index = SubscriptionIndex(parse_extractors(PERSON))
    both = Connection("both")
    index.set(both, [
        parse_subscription({"eventType": "person.create", "oneOf": [{"name": "joe"}, {"age": 30}]}),
        parse_subscription({"eventType": "person.create"}),
        parse_subscription({"eventType": "person.create", "oneOf": [{"name": "joe", "age": 30}]}),
    ])
    assert len(index) == 4
    assert list(index.match(person("joe", 30))) == [both]
    assert list(index.match(person("sam", 1))) == [both]
    index.set(both, [])
    assert len(index) == 0
    assert index.event_types() == set()


def test_null_constraint_is_a_wildcard_and_booleans_are_not_numbers():
    config = {"t": {"flag": {"stable_field_index": 3, "event": {"json_pointer": "/data/flag"}}}}
    index = SubscriptionIndex(parse_extractors(config))
    wildcard, on, one = Connection("wildcard"), Connection("on"), Connection("one")
    index.set(wildcard, [parse_subscription({"eventType": "t", "oneOf": [{"flag": None}]})])
    index.set(on, [parse_subscription({"eventType": "t", "oneOf": [{"flag": True}]})])
    index.set(one, [parse_subscription({"eventType": "t", "oneOf": [{"flag": 1}]})])
    assert set(index.match(event("t", {"flag": True}))) == {wildcard, on}
    assert set(index.match(event("t", {"flag": 1}))) == {wildcard, one}
    assert set(index.match(event("t", {"flag": 1.0}))) == {wildcard, one}
    assert set(index.match(event("t", {"flag": [True]}))) == {wildcard}
    assert set(index.match(event("t", {"flag": {"x": 1}}))) == {wildcard}
    assert set(index.match(event("t", "not an object"))) == {wildcard}


def test_non_scalar_constraint_never_matches():
    config = {"t": {"tags": {"stable_field_index": 0, "event": {"json_pointer": "/data/tags"}}}}
    index = SubscriptionIndex(parse_extractors(config))
    listy = Connection("listy")
    index.set(listy, [parse_subscription({"eventType": "t", "oneOf": [{"tags": ["a"]}]})])
    assert list(index.match(event("t", {"tags": ["a"]}))) == []
    assert list(index.match(event("t", {"tags": "a"}))) == []
    index.remove(listy)
    assert len(index) == 0
    assert index.event_types() == set()
