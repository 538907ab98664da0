"""rig.events: CloudEvents parsing, validation and serialisation."""

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.events import (
    CloudEvent,
    EventError,
    event_sse_name,
    parse_http,
    parse_structured,
    rig_event,
)

EVENT_01 = {"cloudEventsVersion": "0.1", "eventType": "greeting", "eventID": "1"}
EVENT_02 = {"specversion": "0.2", "type": "greeting", "id": "2"}
EVENT_10 = {"specversion": "1.0", "type": "greeting", "id": "3", "source": "s"}
STRUCTURED_TYPES = ["application/json", "application/cloudevents+json;charset=utf-8", None, ""]


def encode(document):
    return json.dumps(document).encode()


def error_of(content_type, headers, body):
    with pytest.raises(EventError) as info:
        parse_http(content_type, headers, body)
    return info.value


def assert_rejected(content_type, headers, body, message, status=400):
    error = error_of(content_type, headers, body)
    assert (error.status, str(error)) == (status, message)


# Structured mode ------------------------------------------------------------


@pytest.mark.parametrize("content_type", STRUCTURED_TYPES)
@pytest.mark.parametrize(
    ("document", "version", "type_", "id_"),
    [
        (EVENT_01, "0.1", "greeting", "1"),
        (EVENT_02, "0.2", "greeting", "2"),
        (EVENT_10, "1.0", "greeting", "3"),
    ],
)
def test_structured_versions_accepted(content_type, document, version, type_, id_):
    body = encode(document)
    event = parse_http(content_type, {}, body)
    assert isinstance(event, CloudEvent)
    assert (event.specversion, event.type, event.id) == (version, type_, id_)
    assert event.document == document
    assert event.json == body
    assert event.filterable is event.document


@pytest.mark.parametrize("content_type", STRUCTURED_TYPES)
def test_structured_keeps_unknown_attributes_and_bytes(content_type):
    # Scenario 24: the 0.1 and 0.2 events keep their extra top-level attribute.
    body_01 = (
        b'{"additional top-level property":true,"cloudEventsVersion":"0.1",'
        b'"eventID":"1","eventType":"greeting","source":"nil"}'
    )
    body_02 = (
        b'{ "additional top-level property" : true, "specversion": "0.2",\n'
        b' "id": "1", "type": "greeting", "source": "nil", "n": 1.50 }'
    )
    for body in (body_01, body_02):
        event = parse_http(content_type, {}, body)
        assert event.document["additional top-level property"] is True
        assert event.json == body  # byte for byte, formatting and key order preserved


def test_structured_values_are_not_coerced():
    body = b'{"specversion":"1.0","type":"t","id":"1","source":"s","time":5,"ext":[1,{"a":null}]}'
    event = parse_http("application/json", {}, body)
    assert event.document["time"] == 5
    assert event.document["ext"] == [1, {"a": None}]


def test_structured_strips_bom_and_whitespace_only():
    body = encode(EVENT_02)
    event = parse_http("application/json", {}, b"\xef\xbb\xbf \r\n\t" + body + b"\n ")
    assert event.json == body
    assert event.document == EVENT_02


def test_structured_keeps_non_ascii_bytes():
    body = '{"specversion":"0.2","type":"grüße","id":"ü","data":"»Alice«"}'.encode()
    event = parse_http("application/cloudevents+json", {}, body)
    assert event.json == body
    assert event.type == "grüße"
    assert event.document["data"] == "»Alice«"


def test_structured_ignores_ce_headers():
    # Scenario 28: ce-headers are ignored in structured mode.
    headers = {"ce-specversion": "illegal", "ce-type": "other", "ce-id": "x"}
    body = encode(EVENT_01)
    event = parse_http("application/cloudevents+json;charset=utf-8", headers, body)
    assert (event.specversion, event.type, event.id) == ("0.1", "greeting", "1")
    assert event.json == body


def test_missing_content_type_with_ce_specversion_is_binary():
    headers = {"ce-specversion": "1.0", "ce-type": "t", "ce-id": "1", "ce-source": "s"}
    event = parse_http(None, headers, b"hello")
    assert event.document == {
        "specversion": "1.0",
        "type": "t",
        "id": "1",
        "source": "s",
        "data": "hello",
    }
    event = parse_http("", headers, b"")
    assert "data" not in event.document


def test_parse_structured_directly():
    event = parse_structured(bytearray(encode(EVENT_10)))
    assert event.type == "greeting"
    assert event.json == encode(EVENT_10)


# Structured mode errors -------------------------------------------------------


def test_structured_1_0_without_source():
    document = {"specversion": "1.0", "type": "t", "id": "1"}
    assert_rejected(
        "application/json",
        {},
        encode(document),
        'The request body does not look like a CloudEvent: the required attribute "source" '
        "is missing.",
    )


def test_structured_0_2_does_not_need_source():
    event = parse_http(
        "application/json", {}, encode({"specversion": "0.2", "type": "t", "id": "1"})
    )
    assert "source" not in event.document


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"specversion": "0.2", "id": "1"}, 'the required attribute "type" is missing'),
        ({"specversion": "0.2", "type": "t"}, 'the required attribute "id" is missing'),
        (
            {"specversion": "0.2", "type": "", "id": "1"},
            'the attribute "type" must be a non-empty string',
        ),
        (
            {"specversion": "0.2", "type": "t", "id": 1},
            'the attribute "id" must be a non-empty string',
        ),
        (
            {"specversion": "0.2", "type": None, "id": "1"},
            'the attribute "type" must be a non-empty string',
        ),
        (
            {"specversion": "0.2", "type": ["t"], "id": "1"},
            'the attribute "type" must be a non-empty string',
        ),
        (
            {"specversion": "1.0", "type": "t", "id": "1", "source": 7},
            'the attribute "source" must be a non-empty string',
        ),
        (
            {"cloudEventsVersion": "0.1", "eventID": "1"},
            'the required attribute "eventType" is missing',
        ),
        (
            {"cloudEventsVersion": "0.1", "eventType": "t"},
            'the required attribute "eventID" is missing',
        ),
        (
            {"cloudEventsVersion": "0.1", "eventType": "t", "eventID": ""},
            'the attribute "eventID" must be a non-empty string',
        ),
        (
            {"specversion": "0.4", "type": "t", "id": "1"},
            'unsupported specversion "0.4" (supported: 0.1, 0.2, 0.3, 1.0)',
        ),
        (
            {"specversion": "0.3", "type": "t", "id": "1"},
            'the required attribute "source" is missing',
        ),
        (
            {"specversion": "0.3", "type": "t", "id": "1", "source": "s",
             "datacontentencoding": "gzip", "data": "x"},
            'datacontentencoding "gzip" is not supported (only "base64")',
        ),
        (
            {"specversion": "0.3", "type": "t", "id": "1", "source": "s",
             "datacontentencoding": "base64", "data": "not base64!"},
            'with datacontentencoding "base64" the attribute "data" must be base64 text',
        ),
        (
            {"specversion": 1.0, "type": "t", "id": "1"},
            "unsupported specversion 1.0 (supported: 0.1, 0.2, 0.3, 1.0)",
        ),
        ({"specversion": None},
         "unsupported specversion null (supported: 0.1, 0.2, 0.3, 1.0)"),
        (
            {"specversion": "0.1", "type": "t", "id": "1"},
            'specversion "0.1" is not valid: CloudEvents 0.1 uses the cloudEventsVersion attribute',
        ),
        (
            {"cloudEventsVersion": "0.2", "type": "t", "id": "1"},
            (
                'unsupported cloudEventsVersion "0.2" (supported: 0.1; 0.2, 0.3 and 1.0 use'
                " the specversion attribute)"
            ),
        ),
        ({"type": "t", "id": "1"}, "no specversion or cloudEventsVersion attribute"),
        ({}, "no specversion or cloudEventsVersion attribute"),
    ],
)
def test_structured_invalid_events(document, reason):
    # Scenario 29: a body without cloudEventsVersion/specversion is a 400.
    for content_type in ("application/json", "application/cloudevents+json", None):
        assert_rejected(
            content_type,
            {},
            encode(document),
            f"The request body does not look like a CloudEvent: {reason}.",
        )


def test_structured_long_specversion_is_truncated_in_message():
    message = str(error_of("application/json", {}, encode({"specversion": "x" * 1000})))
    assert message.startswith(
        'The request body does not look like a CloudEvent: unsupported specversion "xxx'
    )
    assert len(message) < 200


def test_structured_invalid_utf8():
    assert_rejected("application/json", {}, b'{"a":"\xff"}', "The request body is not valid UTF-8.")
    # UTF-16 is not UTF-8 either, even though json.loads(bytes) would accept it.
    assert_rejected(
        "application/cloudevents+json",
        {},
        json.dumps(EVENT_02).encode("utf-16"),
        "The request body is not valid UTF-8.",
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "Expecting value at line 1 column 1"),
        (b"   ", "Expecting value at line 1 column 1"),
        (b'{"specversion":', "Expecting value at line 1 column 16"),
        (b'{"a":1}{"b":2}', "Extra data at line 1 column 8"),
        (b'{"a":NaN}', "NaN is not a valid JSON value"),
        (b'{"a":-Infinity}', "-Infinity is not a valid JSON value"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ],
)
def test_structured_invalid_json(body, detail):
    assert_rejected(
        "application/json",
        {},
        body,
        f"The request body does not look like a CloudEvent: it is not valid JSON ({detail}).",
    )


@pytest.mark.parametrize(
    "body", [b"[]", b'[{"specversion":"0.2","type":"t","id":"1"}]', b'"x"', b"1", b"null"]
)
def test_structured_not_an_object(body):
    assert_rejected(
        None,
        {},
        body,
        "The request body does not look like a CloudEvent: it is not a JSON object.",
    )


# Content types that are refused -------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents-batch",
        "application/cloudevents-batch+json",
        "Application/CloudEvents-Batch; charset=utf-8",
    ],
)
def test_batch_mode_415(content_type):
    # Scenario 32.
    assert_rejected(
        content_type,
        {"ce-specversion": "0.2"},
        b"[]",
        "The batched CloudEvents HTTP transport binding mode is currently not supported.",
        415,
    )


def test_structured_other_format_415():
    assert_rejected(
        "application/cloudevents+avro; charset=utf-8",
        {},
        b"\x00\x01",
        "The given content-type application/cloudevents+avro is currently not supported for "
        "structured mode.",
        415,
    )


# Binary mode ----------------------------------------------------------------------


def binary_headers(version="0.2", **extra):
    headers = {
        "ce-specversion": version,
        "ce-type": "greeting",
        "ce-source": "s",
        "ce-id": str(uuid.UUID(int=1)),
        "user-agent": "test",
    }
    headers.update(extra)
    return headers


def test_binary_json_body_scenario_25():
    event = parse_http("application/json", binary_headers(), b'{"name":"alice"}')
    expected = {
        "specversion": "0.2",
        "type": "greeting",
        "source": "s",
        "id": "00000000-0000-0000-0000-000000000001",
        "data": {"name": "alice"},
    }
    assert event.document == expected
    assert (event.specversion, event.type, event.id) == ("0.2", "greeting", expected["id"])
    assert event.json == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
    assert event.filterable is event.document
    assert "contenttype" not in event.document


def test_binary_text_body_scenario_26():
    body = "The name this event carries is »Alice«.".encode()
    event = parse_http("text/plain", binary_headers(), body)
    assert event.document["contenttype"] == "text/plain"
    assert event.document["data"] == "The name this event carries is »Alice«."
    assert (
        event.json
        == (
            '{"contenttype":"text/plain","data":"The name this event carries is »Alice«.",'
            '"id":"00000000-0000-0000-0000-000000000001","source":"s","specversion":"0.2",'
            '"type":"greeting"}'
        ).encode()
    )
    assert "data" not in event.filterable
    assert event.filterable["contenttype"] == "text/plain"
    assert "data" in event.document  # the copy leaves the document alone


def test_binary_1_0_text_body_sets_datacontenttype():
    event = parse_http("text/plain; charset=utf-8", binary_headers("1.0"), b"hi")
    assert event.specversion == "1.0"
    assert event.document["datacontenttype"] == "text/plain; charset=utf-8"
    assert "contenttype" not in event.document
    assert event.document["data"] == "hi"
    assert "data" not in event.filterable


def test_binary_text_content_type_overrides_header_attribute():
    headers = binary_headers("1.0", **{"ce-datacontenttype": "application/json"})
    event = parse_http("application/xml", headers, b"<a/>")
    assert event.document["datacontenttype"] == "application/xml"
    assert "data" not in event.filterable


def test_binary_json_body_drops_content_type_attribute():
    headers = binary_headers("0.2", **{"ce-contenttype": "text/plain"})
    event = parse_http("application/json; charset=utf-8", headers, b' [1, "x"] ')
    assert event.document["data"] == [1, "x"]
    assert "contenttype" not in event.document


def test_binary_json_empty_body_has_no_data():
    event = parse_http("application/json", binary_headers("1.0"), b"")
    assert "data" not in event.document
    assert event.document["specversion"] == "1.0"


def test_binary_json_body_with_ce_data_header_ignored():
    event = parse_http("application/json", binary_headers(**{"ce-data": '{"x":1}'}), b"")
    assert "data" not in event.document


def test_binary_extension_headers_json_decoded():
    headers = binary_headers(
        **{
            "ce-count": "42",
            "ce-flag": "true",
            "ce-obj": '{"a":[1,2]}',
            "ce-quoted": '"q"',
            "ce-word": "hello world",
            "ce-nan": "NaN",
            "ce-time": "2019-03-27T11:53:18Z",
            "ce-subject": "123",
            "ce-schemaurl": "null",
            "ce-dataschema": "1",
            "content-length": "2",
        }
    )
    event = parse_http("application/json", headers, b"{}")
    document = event.document
    assert document["count"] == 42
    assert document["flag"] is True
    assert document["obj"] == {"a": [1, 2]}
    assert document["quoted"] == "q"
    assert document["word"] == "hello world"
    assert document["nan"] == "NaN"
    assert document["time"] == "2019-03-27T11:53:18Z"
    assert document["subject"] == "123"
    assert document["schemaurl"] == "null"
    assert document["dataschema"] == "1"
    assert "content-length" not in document and "length" not in document
    assert json.loads(event.json) == document


def test_binary_id_and_type_are_plain_strings():
    event = parse_http("text/plain", binary_headers(**{"ce-id": "123", "ce-type": "true"}), b"x")
    assert (event.id, event.type) == ("123", "true")


def test_binary_application_json_with_ce_specversion():
    # application/json with ce-specversion is binary, not structured.
    event = parse_http("application/json", binary_headers(), encode(EVENT_02))
    assert event.document["data"] == EVENT_02


@pytest.mark.parametrize(
    ("value", "shown"),
    [("1.0 ", '"1.0 "'), ("illegal", '"illegal"'), ("0.1", '"0.1"'), ("", '""'), (None, "")],
)
def test_binary_bad_specversion(value, shown):
    # Scenario 30 (with a value txrig does not accept).
    headers = binary_headers()
    if value is None:
        del headers["ce-specversion"]
    else:
        headers["ce-specversion"] = value
    error = error_of("text/plain", headers, b"x")
    assert error.status == 400
    assert 'instead of ["0.2"]' in str(error)
    assert str(error) == (
        "Your request looks like it's using the CloudEvents binary content mode, but the "
        f'ce-specversion header is [{shown}] instead of ["0.2"], ["0.3"] or ["1.0"].'
    )


def test_binary_1_0_accepted():
    event = parse_http("text/plain", binary_headers("1.0"), b"x")
    assert event.specversion == "1.0"


@pytest.mark.parametrize(
    ("version", "remove", "replace", "reason"),
    [
        ("1.0", "ce-source", {}, 'the required attribute "source" is missing'),
        ("0.2", "ce-id", {}, 'the required attribute "id" is missing'),
        ("0.2", "ce-type", {}, 'the required attribute "type" is missing'),
        ("1.0", None, {"ce-type": ""}, 'the attribute "type" must be a non-empty string'),
    ],
)
def test_binary_invalid_event(version, remove, replace, reason):
    headers = binary_headers(version, **replace)
    if remove:
        del headers[remove]
    assert_rejected(
        "application/json",
        headers,
        b"{}",
        "Your request looks like it's using the CloudEvents binary content mode but can't be "
        f"parsed: {reason}.",
    )


def test_binary_0_2_without_source_accepted():
    headers = binary_headers()
    del headers["ce-source"]
    assert parse_http("text/plain", headers, b"x").id == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    "body", [b"{", b"NaN", b'{"a":"\xff"}', b"\xff", b"[" * 100000, b"[" * 100000 + b"]" * 100000]
)
def test_binary_invalid_json_body(body):
    assert_rejected(
        "application/json",
        binary_headers(),
        body,
        "Your request looks like it's using the CloudEvents binary content mode but its "
        "application/json body is not valid JSON.",
    )


def test_binary_invalid_utf8_text_body():
    assert_rejected(
        "text/plain",
        binary_headers(),
        b"\xff\xfe",
        "Your request looks like it's using the CloudEvents binary content mode but its body is "
        "not valid UTF-8.",
    )


def test_binary_lone_surrogate_data_still_encodes():
    event = parse_http("application/json", binary_headers(), b'{"a":"\\ud800"}')
    assert event.document["data"] == {"a": "\ud800"}
    assert json.loads(event.json)["data"] == {"a": "\ud800"}
    event.json.decode("utf-8")


# filterable ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "document"),
    [
        ("contentType", dict(EVENT_01)),
        ("contenttype", dict(EVENT_02)),
        ("datacontenttype", dict(EVENT_10)),
    ],
)
def test_filterable_by_content_type(attribute, document):
    document["data"] = {"name": "alice"}
    for content_type, visible in [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/cloudevents+json", True),
        ("text/vnd.foo+json", True),
        ("text/plain", False),
        ("application/xml", False),
        ("+json", False),
        (5, False),
    ]:
        document[attribute] = content_type
        event = parse_http("application/json", {}, encode(document))
        assert ("data" in event.filterable) is visible, content_type
        assert event.filterable[attribute] == content_type
        assert event.document["data"] == {"name": "alice"}
        if visible:
            assert event.filterable is event.document


def test_filterable_ignores_other_versions_attribute_name():
    # A 0.2 event's content type is "contenttype"; "datacontenttype" is just an extension.
    document = dict(EVENT_02, datacontenttype="text/plain", data={"x": 1})
    assert parse_http("application/json", {}, encode(document)).filterable["data"] == {"x": 1}


def test_filterable_without_data_is_document():
    document = dict(EVENT_10, datacontenttype="text/plain")
    event = parse_http("application/json", {}, encode(document))
    assert event.filterable is event.document


# RIG-generated events --------------------------------------------------------------


def test_rig_event_shape():
    event = rig_event("rig.connection.create", {"connection_token": "tok"}, now=0.0)
    assert list(event.document) == ["specversion", "type", "source", "id", "time", "data"]
    assert event.document["time"] == "1970-01-01T00:00:00.000000+00:00"
    assert str(uuid.UUID(event.id)) == event.id and uuid.UUID(event.id).version == 4
    assert (
        event.json
        == (
            '{"specversion":"1.0","type":"rig.connection.create","source":"rig",'
            f'"id":"{event.id}","time":"1970-01-01T00:00:00.000000+00:00",'
            '"data":{"connection_token":"tok"}}'
        ).encode()
    )
    assert (event.specversion, event.type) == ("1.0", "rig.connection.create")
    assert event.filterable is event.document
    # The JSON it produces is itself an acceptable structured event.
    assert parse_http("application/cloudevents+json", {}, event.json).document == event.document


def test_rig_event_time_format_and_unique_ids():
    first = rig_event("rig.subscriptions_set", [], now=1553687598.43569)
    second = rig_event("rig.subscriptions_set", [], now=1553687598.43569)
    assert first.document["time"] == "2019-03-27T11:53:18.435690+00:00"
    assert first.document["data"] == []
    assert first.id != second.id


def test_rig_event_without_data():
    event = rig_event("rig.session_killed", None, now=1.5)
    assert "data" not in event.document
    assert event.document["time"] == "1970-01-01T00:00:01.500000+00:00"
    assert b'"data"' not in event.json


def test_rig_event_non_ascii_data():
    event = rig_event("rig.subscriptions_set", [{"eventType": "grüße", "oneOf": []}], now=0.0)
    assert "grüße".encode() in event.json


def test_event_sse_name():
    assert (
        event_sse_name(rig_event("rig.connection.create", None, now=0.0)) == "rig.connection.create"
    )
    event = parse_http("application/json", {}, encode(dict(EVENT_02, type="grüße")))
    assert event_sse_name(event) == "grüße"
    event = parse_http(
        "application/json", {}, b'{"specversion":"0.2","id":"1","type":"a\\nb\\r\\ud800"}'
    )
    name = event_sse_name(event)
    assert name == "a\ufffdb\ufffd\ufffd"
    name.encode("utf-8")


def test_event_error():
    error = EventError("Nope.")
    assert isinstance(error, ValueError)
    assert (str(error), error.status) == ("Nope.", 400)
    assert EventError("Too large.", 413).status == 413


# Robustness -----------------------------------------------------------------------------

content_types = st.one_of(
    st.none(),
    st.text(),
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents+avro",
            "application/cloudevents-batch",
            "text/plain",
            "application/json; charset=utf-8",
        ]
    ),
)
header_maps = st.dictionaries(
    st.one_of(
        st.sampled_from(["ce-specversion", "ce-type", "ce-id", "ce-source", "ce-x", "ce-"]),
        st.text(),
    ),
    st.one_of(st.sampled_from(["0.2", "1.0", "t", "NaN", "[[[", "{}"]), st.text()),
)
bodies = st.one_of(
    st.binary(),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(
                [
                    "specversion",
                    "cloudEventsVersion",
                    "type",
                    "id",
                    "source",
                    "eventType",
                    "eventID",
                    "data",
                ]
            ),
            st.one_of(st.sampled_from(["0.1", "0.2", "1.0", "x", ""]), st.integers(), st.none()),
        ),
    ),
)


@settings(max_examples=500, deadline=None, database=None)
@given(content_types, header_maps, bodies)
def test_parse_http_only_raises_event_error(content_type, headers, body):
    try:
        event = parse_http(content_type, headers, body)
    except EventError as error:
        assert error.status in (400, 415)
        assert str(error).endswith(".")
    else:
        assert isinstance(event.document, dict)
        assert isinstance(event.json, bytes)
        assert json.loads(event.json.decode("utf-8")) == event.document
        event_sse_name(event).encode("utf-8")


def test_rig_event_ids_are_distinct_version_4_uuids():
    ids = [rig_event("rig.x", now=0.0).id for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


@pytest.mark.parametrize("event_type, data", [
    ("rig.connection.create", {"connection_token": "AQx-_0Z"}),
    ("rig.connection.create", {"connection_token": "AQx-_0Z", "recovered": False}),
    ("rig.subscriptions_set", []),
    ("rig.subscriptions_set", [{"eventType": "greeting", "oneOf": [{"name": "zoë \u2028"}]}]),
    ("rig.subscriptions_set", [{"eventType": "lone \ud800 surrogate", "oneOf": []}]),
])
def test_a_notice_is_byte_for_byte_the_event_rig_event_makes(event_type, data):
    from rig.events import rfc3339_utc, rig_notice
    from rig.jsontext import utf8_compact

    now = 1_800_000_000.123456
    notice = rig_notice(event_type, utf8_compact(data), rfc3339_utc(now))
    event = rig_event(event_type, data, now=now)
    assert notice.json == event.json.replace(event.id.encode(), notice.id.encode())
    assert (notice.type, notice.document) == (event.type, json.loads(event.json) | {
        "id": notice.id})
    assert notice.id != event.id and len(notice.id) == 36


def test_a_subscription_makes_its_json_once():
    from rig.subscriptions.model import Subscription

    subscription = Subscription("greeting", [{"name": "alice"}])
    text = subscription.json_text()
    assert text == '{"eventType":"greeting","oneOf":[{"name":"alice"}]}'
    assert subscription.json_text() is text
