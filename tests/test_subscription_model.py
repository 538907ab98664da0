"""Subscriptions, extractors, JSON pointers and JWT-derived subscriptions (spec Part B 3.1-3.4)."""

import json

import pytest

from rig.subscriptions.extractors import ExtractorConfig, ExtractorField, parse_extractors
from rig.subscriptions.inference import jwt_subscriptions
from rig.subscriptions.model import (
    Subscription,
    SubscriptionError,
    decode_subscriptions_param,
    parse_subscription,
    parse_subscriptions,
    unique,
)
from rig.subscriptions.pointer import MISSING, parse_pointer, resolve


def rejection(entry):
    with pytest.raises(SubscriptionError) as info:
        parse_subscription(entry)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def assert_sentence(message, why):
    prefix = f"invalid subscription: {why} when parsing "
    assert message.startswith(prefix), message
    assert len(message) > len(prefix)


# -- subscription objects ---------------------------------------------------------------


def test_canonical_names():
    clauses = [{"head_repo": "octocat/Hello-World"}, {"base_repo": "octocat/Hello-World"}]
    subscription = parse_subscription({"eventType": "com.github.pull.create", "oneOf": clauses})
    assert subscription.event_type == "com.github.pull.create"
    assert list(subscription.one_of) == clauses
    assert subscription == Subscription("com.github.pull.create", clauses)


@pytest.mark.parametrize("type_name", ["eventType", "event_type"])
@pytest.mark.parametrize("clauses_name", ["oneOf", "one_of", "constraints"])
def test_aliases(type_name, clauses_name):
    subscription = parse_subscription({type_name: "greeting", clauses_name: [{"name": "alice"}]})
    assert subscription == Subscription("greeting", [{"name": "alice"}])
    assert subscription.to_json() == {"eventType": "greeting", "oneOf": [{"name": "alice"}]}


def test_one_of_is_optional_and_defaults_to_empty():
    for entry in ({"eventType": "greeting"}, {"event_type": "greeting"}):
        subscription = parse_subscription(entry)
        assert subscription.one_of == ()
        assert subscription.to_json() == {"eventType": "greeting", "oneOf": []}
    assert parse_subscription({"eventType": "greeting", "oneOf": []}) == parse_subscription(
        {"eventType": "greeting"}
    )


def test_event_type_is_kept_exactly():
    for event_type in ("Greeting", " greeting ", "com.example.*", "é", "a" * 1000):
        assert parse_subscription({"eventType": event_type}).event_type == event_type


def test_values_are_not_validated():
    clause = {"n": None, "num": 30.5, "flag": False, "list": [1, "2"], "obj": {"x": {}}, "s": ""}
    assert parse_subscription({"eventType": "t", "oneOf": [clause, {}]}).to_json() == {
        "eventType": "t",
        "oneOf": [clause, {}],
    }


def test_to_json_echoes_constraints_exactly_as_given():
    entry = {
        "one_of": [{"zeta": 30.0, "alpha": None}, {"b": True, "a": {"nested": [1, 2.5, "x"]}}],
        "event_type": "person.create",
        "something else": "dropped",
    }
    echoed = parse_subscription(entry).to_json()
    assert echoed == {"eventType": "person.create", "oneOf": entry["one_of"]}
    assert list(echoed) == ["eventType", "oneOf"]
    # Key order, number spelling (30.0) and nulls survive a JSON round trip.
    assert json.dumps(echoed["oneOf"]) == json.dumps(entry["one_of"])
    assert json.loads(json.dumps(echoed)) == echoed


@pytest.mark.parametrize("entry", [[], "greeting", 1, 1.5, None, True, [{"eventType": "x"}]])
def test_not_a_map(entry):
    assert_sentence(rejection(entry), "not a map")


@pytest.mark.parametrize(
    "entry", [{}, {"oneOf": []}, {"type": "greeting"}, {"EventType": "greeting"}]
)
def test_event_type_not_found(entry):
    assert_sentence(rejection(entry), "event-type not found")


@pytest.mark.parametrize("entry", [{"eventType": ""}, {"event_type": "", "oneOf": []}])
def test_event_type_empty(entry):
    assert_sentence(rejection(entry), "event-type empty")


NON_STRING_EVENT_TYPES = [1, 0, 1.5, True, False, [], ["greeting"], {}, {"a": "b"}, None]


def test_non_string_event_types_are_rejected():
    for event_type in NON_STRING_EVENT_TYPES:
        assert rejection({"eventType": event_type}).startswith("invalid subscription: ")


def test_non_string_event_types_get_rigs_sentence():
    """Spec 3.1 names two sentences for the event type; RIG says "event-type empty" for any
    value under the key that is not a non-empty string (``byte_size(type) > 0`` fails)."""
    wrong = {}
    for event_type in NON_STRING_EVENT_TYPES:
        message = rejection({"eventType": event_type})
        if not message.startswith("invalid subscription: event-type empty when parsing "):
            wrong[json.dumps(event_type)] = message
    assert wrong == {}


@pytest.mark.parametrize("name", ["oneOf", "one_of", "constraints"])
@pytest.mark.parametrize("value", [{}, {"name": "alice"}, "name", 1, True])
def test_constraints_must_be_a_list(name, value):
    assert_sentence(
        rejection({"eventType": "greeting", name: value}),
        "constraints expected to be a list of disjunctive clauses",
    )


def test_null_constraints_are_not_a_list():
    """Spec 3.1: ``oneOf`` may be absent (then []), but if given it must be an array; RIG
    rejects a null (``validate_constraints(nil)``) instead of treating it as absent."""
    accepted = []
    for name in ("oneOf", "one_of", "constraints"):
        try:
            parse_subscription({"eventType": "greeting", name: None})
        except SubscriptionError as error:
            assert_sentence(str(error), "constraints expected to be a list of disjunctive clauses")
        else:
            accepted.append(name)
    assert accepted == []


@pytest.mark.parametrize("clause", [1, "name", None, [], [{"name": "alice"}], True])
def test_clauses_must_be_maps(clause):
    assert_sentence(
        rejection({"eventType": "greeting", "oneOf": [{"name": "alice"}, clause]}),
        "a disjunctive clause expected to be a conjunction represented by a map",
    )


def test_clause_keys_must_be_nonempty():
    assert_sentence(
        rejection({"eventType": "greeting", "oneOf": [{"name": "alice"}, {"": "x"}]}),
        "conjunctive clauses expected to be a map with nonempty strings as keys",
    )


def test_error_names_the_entry():
    entry = {"eventType": "", "oneOf": [{"name": "alice"}]}
    message = rejection(entry)
    assert message == f"invalid subscription: event-type empty when parsing {json.dumps(entry)}"


def test_parse_subscriptions():
    assert parse_subscriptions([]) == []
    parsed = parse_subscriptions(
        [{"eventType": "b"}, {"event_type": "a", "constraints": [{"x": 1}]}, {"eventType": "b"}]
    )
    assert parsed == [Subscription("b"), Subscription("a", [{"x": 1}]), Subscription("b")]


def test_one_invalid_entry_rejects_the_whole_list():
    with pytest.raises(SubscriptionError) as info:
        parse_subscriptions([{"eventType": "ok"}, {"this": "is not", "a": "subscription"}])
    assert_sentence(str(info.value), "event-type not found")


@pytest.mark.parametrize("value", [{}, {"subscriptions": []}, "x", 1, None])
def test_parse_subscriptions_wants_a_list(value):
    with pytest.raises(SubscriptionError) as info:
        parse_subscriptions(value)
    assert str(info.value).startswith("invalid subscription: ")


def test_decode_subscriptions_param():
    text = '[{"eventType":"greeting","oneOf":[{"name":"alice"}]}]'
    assert decode_subscriptions_param(text) == json.loads(text)
    assert decode_subscriptions_param(text, allow_wrapped=True) == json.loads(text)
    assert decode_subscriptions_param("[]") == []
    wrapped = '{"subscriptions": [{"eventType": "greeting"}]}'
    assert decode_subscriptions_param(wrapped, allow_wrapped=True) == [{"eventType": "greeting"}]
    assert decode_subscriptions_param(wrapped) == {"subscriptions": [{"eventType": "greeting"}]}
    # Decoding does not validate: that is parse_subscriptions' job.
    assert decode_subscriptions_param('{"foo": 1}', allow_wrapped=True) == {"foo": 1}
    assert decode_subscriptions_param("42") == 42


@pytest.mark.parametrize("text", ["can't { be [ parsed.", "", "[", "[{]", "{'a': 1}"])
def test_decode_subscriptions_param_rejects_non_json(text):
    with pytest.raises(ValueError):
        decode_subscriptions_param(text)
    with pytest.raises(ValueError):
        decode_subscriptions_param(text, allow_wrapped=True)


def test_equality_and_hash():
    first = parse_subscription({"eventType": "t", "oneOf": [{"a": 1, "b": "x"}]})
    same = parse_subscription({"event_type": "t", "constraints": [{"b": "x", "a": 1}]})
    assert first == same
    assert hash(first) == hash(same)
    assert len({first, same}) == 1
    different = [
        Subscription("T", [{"a": 1, "b": "x"}]),
        Subscription("t", [{"a": 1.0, "b": "x"}]),  # RIG keeps 30 and 30.0 apart too
        Subscription("t", [{"a": True, "b": "x"}]),
        Subscription("t", [{"a": "1", "b": "x"}]),
        Subscription("t", [{"a": 1}]),
        Subscription("t", [{"a": 1, "b": "x"}, {}]),
        Subscription("t"),
    ]
    for other in different:
        assert first != other, other
    assert Subscription("t", [{"a": 1}, {"b": 2}]) != Subscription("t", [{"b": 2}, {"a": 1}])
    assert first != first.to_json()
    assert first != "t"


def test_unique_keeps_the_first_of_each_in_order():
    a1 = Subscription("a", [{"x": 1}])
    b1 = Subscription("b")
    a2 = parse_subscription({"eventType": "a", "one_of": [{"x": 1}]})
    c1 = Subscription("c", [{"x": 1}])
    b2 = parse_subscription({"eventType": "b", "oneOf": []})
    kept = unique([a1, b1, a2, c1, b2, b1])
    assert kept == [a1, b1, c1]
    assert [id(subscription) for subscription in kept] == [id(a1), id(b1), id(c1)]
    assert unique([]) == []


# -- extractors -------------------------------------------------------------------------

EXTRACTORS = {
    "greeting": {
        "name": {
            "stable_field_index": 1,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        },
        "lang": {"stable_field_index": 0, "event": {"json_pointer": "/data/lang"}},
    },
    "other": {"a~b": {"stable_field_index": 7, "event": {"json_pointer": "/data/a~0b/c~1d"}}},
}


def check_example_config(config):
    assert isinstance(config, ExtractorConfig)
    assert config.fields("greeting") == (
        ExtractorField("lang", 0, ("data", "lang"), None),
        ExtractorField("name", 1, ("data", "name"), ("username",)),
    )
    assert config.fields("other") == (ExtractorField("a~b", 7, ("data", "a~b", "c/d"), None),)
    assert config.field_names("greeting") == {"name", "lang"}
    assert config.fields("unknown") == ()
    assert config.field_names("unknown") == frozenset()


def test_extractors_from_a_dict():
    check_example_config(parse_extractors(EXTRACTORS))


def test_extractors_from_json_text():
    check_example_config(parse_extractors(json.dumps(EXTRACTORS)))
    check_example_config(parse_extractors("\n  " + json.dumps(EXTRACTORS, indent=2) + "\n"))


def test_extractors_from_a_file(tmp_path):
    path = tmp_path / "extractors.json"
    path.write_text(json.dumps(EXTRACTORS), encoding="utf-8")
    check_example_config(parse_extractors(str(path)))


def test_extractors_from_an_unreadable_path(tmp_path):
    with pytest.raises(ValueError):
        parse_extractors(str(tmp_path / "does-not-exist.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError):
        parse_extractors(str(bad))


def test_spec_example_extractors():
    text = (
        '{"greeting":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"}}},'
        ' "greeting.jwt":{"name":{"stable_field_index":1,"jwt":{"json_pointer":"/username"},'
        '"event":{"json_pointer":"/data/name"}}}}'
    )
    config = parse_extractors(text)
    assert config.fields("greeting") == (ExtractorField("name", 1, ("data", "name")),)
    assert config.fields("greeting.jwt") == (
        ExtractorField("name", 1, ("data", "name"), ("username",)),
    )


@pytest.mark.parametrize("value", [None, "", {}, "{}"])
def test_empty_extractors(value):
    config = parse_extractors(value)
    assert config.by_type == {}
    assert config.fields("greeting") == ()


def field_error(spec, event_type="greeting", name="name"):
    with pytest.raises(ValueError) as info:
        parse_extractors({event_type: {name: spec}})
    message = str(info.value)
    assert repr(event_type) in message, message
    assert repr(name) in message, message
    return message


POINTER = {"json_pointer": "/data/name"}


def test_missing_index():
    assert "stable_field_index" in field_error({"event": POINTER})
    assert "stable_field_index" in field_error({"stable_field_index": None, "event": POINTER})


@pytest.mark.parametrize("index", [-1, -100, True, False, 1.0, 1.5, "1", [1], {}])
def test_index_must_be_a_non_negative_integer(index):
    assert "stable_field_index" in field_error({"stable_field_index": index, "event": POINTER})


def test_index_zero_and_large_are_fine():
    for index in (0, 2**40):
        config = parse_extractors({"t": {"f": {"stable_field_index": index, "event": POINTER}}})
        assert config.fields("t")[0].index == index


def test_duplicate_index():
    with pytest.raises(ValueError) as info:
        parse_extractors(
            {
                "greeting": {
                    "first": {"stable_field_index": 3, "event": POINTER},
                    "second": {"stable_field_index": 3, "event": {"json_pointer": "/data/x"}},
                }
            }
        )
    message = str(info.value)
    assert "'greeting'" in message
    assert "'first'" in message
    assert "'second'" in message


def test_same_index_in_different_types_is_fine():
    config = parse_extractors(
        {
            "a": {"f": {"stable_field_index": 0, "event": POINTER}},
            "b": {"f": {"stable_field_index": 0, "event": POINTER}},
        }
    )
    assert config.fields("a") == config.fields("b")


@pytest.mark.parametrize(
    "event",
    [None, "/data/name", {}, {"json_pointer": None}, {"json_pointer": ""}, {"json_pointer": 5},
     {"json_pointer": "data/name"}, {"pointer": "/data/name"}],
)
def test_event_pointer_missing_empty_or_bad(event):
    spec = {"stable_field_index": 0}
    if event is not None:
        spec["event"] = event
    assert "json_pointer" in field_error(spec)


@pytest.mark.parametrize(
    "jwt", ["/username", 5, [], {}, {"json_pointer": ""}, {"json_pointer": "username"}]
)
def test_bad_jwt_pointer(jwt):
    assert "jwt" in field_error({"stable_field_index": 0, "event": POINTER, "jwt": jwt})


@pytest.mark.parametrize("spec", [None, "x", 1, [], True])
def test_field_config_must_be_an_object(spec):
    field_error(spec)


def test_empty_field_name():
    with pytest.raises(ValueError) as info:
        parse_extractors({"greeting": {"": {"stable_field_index": 0, "event": POINTER}}})
    assert "'greeting'" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [[], "[]", {"greeting": []}, {"greeting": "name"}, '{"greeting": 1}', "not json", 5, "{"],
)
def test_malformed_extractor_configs(value):
    with pytest.raises(ValueError):
        parse_extractors(value)


# -- JSON pointers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("/data/name", ("data", "name")),
        ("/", ("",)),
        ("//", ("", "")),
        ("/a~1b", ("a/b",)),
        ("/m~0n", ("m~n",)),
        ("/~01", ("~1",)),
        ("/~10", ("/0",)),
        ("/~0~1~1~0", ("~//~",)),
        ("/data/0/x", ("data", "0", "x")),
        ("/ sp ace", (" sp ace",)),
    ],
)
def test_parse_pointer(text, tokens):
    assert parse_pointer(text) == tokens


@pytest.mark.parametrize("text", ["", None, "data/name", "#/data", 5, ["/data"]])
def test_parse_pointer_rejects(text):
    with pytest.raises(ValueError):
        parse_pointer(text)


DOCUMENT = {
    "data": {
        "name": "joe",
        "null": None,
        "list": ["zero", "one", {"deep": [10, 11]}],
        "a/b": 1,
        "m~n": 2,
        "": "empty key",
        "01": "key with a leading zero",
        "nested": {"x": {"y": False}},
    },
    "source": "s",
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("/source", "s"),
        ("/data/name", "joe"),
        ("/data/null", None),
        ("/data/list/0", "zero"),
        ("/data/list/1", "one"),
        ("/data/list/2/deep/1", 11),
        ("/data/a~1b", 1),
        ("/data/m~0n", 2),
        ("/data/", "empty key"),
        ("/data/01", "key with a leading zero"),
        ("/data/nested/x/y", False),
        ("/data/nested", {"x": {"y": False}}),
    ],
)
def test_resolve(text, value):
    assert resolve(parse_pointer(text), DOCUMENT) == value


@pytest.mark.parametrize(
    "text",
    [
        "/nothing",
        "/data/Name",
        "/data/name/0",
        "/data/name/x",
        "/data/null/x",
        "/data/list/3",
        "/data/list/-1",
        "/data/list/-",
        "/data/list/01",
        "/data/list/00",
        "/data/list/+1",
        "/data/list/ 1",
        "/data/list/1.0",
        "/data/list/x",
        "/data/list/",
        "/data/list/2/deep/2",
        "/data/nested/x/y/z",
        "/data/a/b",
    ],
)
def test_resolve_missing(text):
    assert resolve(parse_pointer(text), DOCUMENT) is MISSING


def test_resolve_the_whole_document_and_non_containers():
    assert resolve((), DOCUMENT) is DOCUMENT
    for document in ("string", 1, None, True):
        assert resolve(("0",), document) is MISSING


def test_resolve_non_ascii_digits_are_not_list_indexes():
    """RFC 6901 array indexes are ASCII digits; others must be MISSING, not index or crash."""
    document = ["zero", "one", "two"]
    outcomes = {}
    for token in ("\u0661", "\u00b2", "\uff11", "\u0967"):  # Arabic-Indic 1, superscript 2, ...
        try:
            outcomes[token] = resolve((token,), document)
        except Exception as error:
            outcomes[token] = error
    assert {token: value for token, value in outcomes.items() if value is not MISSING} == {}


# -- JWT-derived subscriptions ----------------------------------------------------------

JWT_EXTRACTORS = {
    "event_one": {
        "name": {
            "stable_field_index": 0,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        }
    },
    "event_two": {
        "fullname": {
            "stable_field_index": 0,
            "event": {"json_pointer": "/data/fullname"},
            "jwt": {"json_pointer": "/fullname"},
        },
        "name": {
            "stable_field_index": 1,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        },
    },
    "no_jwt": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}}},
}


def inferred(claims, extractors=JWT_EXTRACTORS):
    return [subscription.to_json() for subscription in jwt_subscriptions(
        parse_extractors(extractors), claims
    )]


def test_jwt_spec_example():
    assert inferred({"username": "john", "fullname": "John Doe"}) == [
        {"eventType": "event_one", "oneOf": [{"name": "john"}]},
        {"eventType": "event_two", "oneOf": [{"fullname": "John Doe", "name": "john"}]},
    ]


def test_jwt_subscriptions_are_subscriptions():
    subscriptions = jwt_subscriptions(
        parse_extractors(JWT_EXTRACTORS), {"username": "john", "fullname": "John Doe"}
    )
    assert subscriptions == [
        Subscription("event_one", [{"name": "john"}]),
        Subscription("event_two", [{"fullname": "John Doe", "name": "john"}]),
    ]


def test_jwt_only_resolving_fields_are_used():
    assert inferred({"fullname": "John Doe", "exp": 1}) == [
        {"eventType": "event_two", "oneOf": [{"fullname": "John Doe"}]},
    ]


def test_jwt_no_subscription_when_no_pointer_resolves():
    assert inferred({}) == []
    assert inferred({"sub": "john", "user": {"username": "john"}}) == []
    assert inferred({"username": "john"}, extractors={}) == []
    assert inferred({"username": "john"}, extractors={"no_jwt": JWT_EXTRACTORS["no_jwt"]}) == []


def test_jwt_nested_and_escaped_claims():
    extractors = {
        "greeting": {
            "name": {
                "stable_field_index": 0,
                "event": {"json_pointer": "/data/name"},
                "jwt": {"json_pointer": "/https:~1~1example.com~1user/name"},
            }
        }
    }
    assert inferred({"https://example.com/user": {"name": "ann"}}, extractors) == [
        {"eventType": "greeting", "oneOf": [{"name": "ann"}]},
    ]
