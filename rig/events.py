"""CloudEvents parsing, validation and serialisation (pure functions, no I/O).

Every event published through txrig passes :func:`parse_http` (HTTP
submissions; other sources use :func:`parse_structured`) exactly once. The
result is a :class:`CloudEvent` holding the decoded document, the JSON bytes
forwarded to subscribers and the document extractors read.

Accepted: CloudEvents 0.1 (``cloudEventsVersion``), 0.2, 0.3 and 1.0
(``specversion``) in structured mode, and 0.2 / 0.3 / 1.0 in binary mode
(``ce-*`` headers). 0.3 is what the official SDKs still produce besides 1.0:
its ``datacontenttype`` is 1.0's, ``schemaurl`` 0.2's, and
``datacontentencoding: "base64"`` says that ``data`` is base64 text. Every
rejection is an :class:`EventError` carrying the HTTP status and a
one-sentence response body; nothing else is raised.
"""

import base64
import binascii
import datetime
import functools
import json
import math
import re
from collections.abc import Mapping
from random import getrandbits

import attrs

from rig import jsonbounds, jsontext

__all__ = [
    "CloudEvent",
    "EventError",
    "event_sse_name",
    "parse_http",
    "parse_structured",
    "rig_event",
]

SUPPORTED_VERSIONS = ("0.1", "0.2", "0.3", "1.0")
BINARY_VERSIONS = ("0.2", "0.3", "1.0")

# Required string attributes per version, in the order they are checked.
_REQUIRED = {
    "0.1": ("eventType", "eventID"),
    "0.2": ("type", "id"),
    "0.3": ("type", "id", "source"),
    "1.0": ("type", "id", "source"),
}
# The attribute that holds the media type of ``data``, per version.
_CONTENT_TYPE_ATTRIBUTE = {"0.1": "contentType", "0.2": "contenttype", "0.3": "datacontenttype",
                           "1.0": "datacontenttype"}
# Binary mode: ce-* headers taken as plain strings (everything else is JSON-decoded if possible).
_PLAIN_ATTRIBUTES = frozenset(
    (
        "specversion",
        "type",
        "source",
        "id",
        "time",
        "schemaurl",
        "dataschema",
        "subject",
        "datacontenttype",
        "datacontentencoding",
        "contenttype",
        "traceparent",  # the CloudEvents distributed-tracing extension
        "tracestate",
    )
)

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\n\r"

_STRUCTURED = "The request body does not look like a CloudEvent: "
_BINARY = "Your request looks like it's using the CloudEvents binary content mode"
_BATCH_NOT_SUPPORTED = (
    "The batched CloudEvents HTTP transport binding mode is currently not supported."
)
_BINARY_BAD_JSON = f"{_BINARY} but its application/json body is not valid JSON."
_BINARY_BAD_UTF8 = f"{_BINARY} but its body is not valid UTF-8."


class EventError(ValueError):
    """A rejected submission.

    ``.status`` is the HTTP status (400, 413 or 415); ``str(err)`` is the full
    one-sentence response body.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class _Invalid(Exception):
    """Internal: an event document failed validation; the argument is the reason."""


@attrs.define(slots=True, eq=False)
class CloudEvent:
    """A validated CloudEvent.

    ``document`` is the decoded JSON object exactly as received (structured
    mode) or built (binary mode); ``json`` is the UTF-8 JSON forwarded to
    subscribers; ``filterable`` is the document extractors read: the document
    itself, or a shallow copy without ``data`` when the event's content type
    attribute names a non-JSON media type.
    """

    specversion: str
    type: str
    id: str
    document: dict = attrs.field(repr=False)
    json: bytes = attrs.field(repr=False)
    filterable: dict = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self):
        document = self.document
        content_type = document.get(_CONTENT_TYPE_ATTRIBUTE.get(self.specversion, ""))
        if isinstance(document.get("data"), str) and \
                document.get("datacontentencoding") == "base64":
            self.filterable = _decoded_for_filters(document, content_type)
        elif content_type is not None and "data" in document and not _is_json_media(content_type):
            filterable = dict(document)
            del filterable["data"]
            self.filterable = filterable
        else:
            self.filterable = document


def _media_type(content_type) -> str:
    """``type/subtype`` of a Content-Type value, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_media(content_type) -> bool:
    if not isinstance(content_type, str):
        return False
    media = _media_type(content_type)
    return media == "application/json" or ("/" in media and media.endswith("+json"))


def _loads(text: str):
    """Bounded, strict JSON: NaN and Infinity are not JSON, nor is 1e999."""
    return jsonbounds.loads(text)


def _dumps(document) -> bytes:
    """Compact, sorted, UTF-8 JSON; falls back to ASCII escapes for lone surrogates."""
    try:
        return jsontext.compact_sorted(document).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


def _show(value) -> str:
    """A short JSON rendering of *value* for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
        text = "?"
    if len(text) > 64:
        text = text[:60] + "..."
    return text


def _validate(document: dict) -> tuple[str, str, str]:
    """(specversion, type, id) of a valid event document; raises _Invalid(reason)."""
    if "specversion" in document:
        version = document["specversion"]
        if version == "0.1":
            raise _Invalid(
                'specversion "0.1" is not valid: CloudEvents 0.1 uses the '
                "cloudEventsVersion attribute"
            )
        if version not in ("0.2", "0.3", "1.0") or not isinstance(version, str):
            raise _Invalid(
                f"unsupported specversion {_show(version)} (supported: 0.1, 0.2, 0.3, 1.0)")
    elif "cloudEventsVersion" in document:
        version = document["cloudEventsVersion"]
        if version != "0.1" or not isinstance(version, str):
            raise _Invalid(
                f"unsupported cloudEventsVersion {_show(version)} (supported: 0.1; "
                "0.2, 0.3 and 1.0 use the specversion attribute)"
            )
    else:
        raise _Invalid("no specversion or cloudEventsVersion attribute")
    for name in _REQUIRED[version]:
        value = document.get(name)
        if value is None and name not in document:
            raise _Invalid(f'the required attribute "{name}" is missing')
        if not isinstance(value, str) or not value:
            raise _Invalid(f'the attribute "{name}" must be a non-empty string')
    if version == "0.1":
        return version, document["eventType"], document["eventID"]
    if version == "0.3" and "datacontentencoding" in document:
        _check_encoding(document)
    return version, document["type"], document["id"]


def _decoded_for_filters(document, content_type):
    """What extractors read of a 0.3 event whose ``data`` is base64: the decoded JSON when
    the content type is JSON (or unset), else no ``data``."""
    filterable = dict(document)
    del filterable["data"]
    if content_type is None or _is_json_media(content_type):
        raw = _base64_bytes(document["data"])
        try:
            filterable["data"] = _loads(raw.decode("utf-8"))
        except (AttributeError, ValueError, RecursionError):
            pass  # not JSON after all: nothing to filter on
    return filterable


def _check_encoding(document):
    """0.3's ``datacontentencoding``: only ``base64`` is defined, and then ``data`` must be
    base64 text."""
    encoding = document["datacontentencoding"]
    if encoding != "base64":
        raise _Invalid(f'datacontentencoding {_show(encoding)} is not supported (only "base64")')
    data = document.get("data")
    if data is not None and not (isinstance(data, str) and _base64_bytes(data) is not None):
        raise _Invalid('with datacontentencoding "base64" the attribute "data" must be base64 text')


def _base64_bytes(text):
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def parse_structured(body: bytes) -> CloudEvent:
    """A structured-mode (JSON) event; ``json`` is *body* minus a BOM and surrounding whitespace.

    Also the entry point for events from streams and peers, which are always
    structured JSON.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    if body.startswith(_BOM):
        body = body[3:]
    body = body.strip(_JSON_WHITESPACE)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("The request body is not valid UTF-8.") from None
    try:
        document = _loads(text)
    except jsonbounds.JSONInputError as error:
        why = str(error) if error.msg is None else (
            f"{error.msg} at line {error.lineno} column {error.colno}")
        raise EventError(f"{_STRUCTURED}it is not valid JSON ({why}).") from None
    if not isinstance(document, dict):
        raise EventError(f"{_STRUCTURED}it is not a JSON object.")
    try:
        version, event_type, event_id = _validate(document)
    except _Invalid as invalid:
        raise EventError(f"{_STRUCTURED}{invalid}.") from None
    return CloudEvent(version, event_type, event_id, document, body)


def _parse_binary(content_type: str | None, headers: Mapping[str, str], body: bytes) -> CloudEvent:
    version = headers.get("ce-specversion")
    if version not in BINARY_VERSIONS:
        shown = "" if version is None else _show(version)
        raise EventError(
            f'{_BINARY}, but the ce-specversion header is [{shown}] instead of ["0.2"], ["0.3"]'
            ' or ["1.0"].'
        )
    document = {}
    for name, value in headers.items():
        if not name.startswith("ce-"):
            continue
        attribute = name[3:]
        if not attribute or attribute == "data":
            continue
        if attribute in _PLAIN_ATTRIBUTES:
            document[attribute] = value
        else:
            try:
                document[attribute] = _loads(value)
            except (ValueError, RecursionError):
                document[attribute] = value
    content_type_attribute = _CONTENT_TYPE_ATTRIBUTE[version]
    if content_type and _media_type(content_type) == "application/json":
        document.pop(content_type_attribute, None)
        if body.startswith(_BOM):
            body = body[3:]
        if body.strip(_JSON_WHITESPACE):
            try:
                document["data"] = _loads(body.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                raise EventError(_BINARY_BAD_JSON) from None
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if version != "0.3":
                raise EventError(_BINARY_BAD_UTF8) from None
            # 0.3 carries bytes as base64 text, marked by datacontentencoding
            text = base64.b64encode(body).decode("ascii")
            document["datacontentencoding"] = "base64"
        if content_type:
            document[content_type_attribute] = content_type
            document["data"] = text
        elif text:
            document["data"] = text
    try:
        version, event_type, event_id = _validate(document)
    except _Invalid as invalid:
        raise EventError(f"{_BINARY} but can't be parsed: {invalid}.") from None
    try:
        encoded = _dumps(document)
    except RecursionError:
        raise EventError(_BINARY_BAD_JSON) from None
    return CloudEvent(version, event_type, event_id, document, encoded)


def parse_http(content_type: str | None, headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """The event of an HTTP submission (``POST /_rig/v1/events``, ``/v3/messages``).

    *headers* maps lower-case header names to their (first) value. The
    transport mode follows the Content-Type: ``application/cloudevents+json``
    is structured, ``application/cloudevents-batch`` and other
    ``application/cloudevents+<format>`` are 415, ``application/json`` is
    structured unless a ``ce-specversion`` header is present, a missing
    Content-Type without ``ce-specversion`` is structured, and everything else
    is binary. Raises EventError only.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    if not content_type:
        if "ce-specversion" in headers:
            return _parse_binary(content_type, headers, body)
        return parse_structured(body)
    media = _media_type(content_type)
    if media.startswith("application/cloudevents"):
        if media == "application/cloudevents+json":
            return parse_structured(body)
        if media.startswith("application/cloudevents-batch"):
            raise EventError(_BATCH_NOT_SUPPORTED, 415)
        if media.startswith("application/cloudevents+"):
            raise EventError(
                f"The given content-type {media} is currently not supported for structured mode.",
                415,
            )
    elif media == "application/json" and "ce-specversion" not in headers:
        return parse_structured(body)
    return _parse_binary(content_type, headers, body)


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339_utc(now: float) -> str:
    """*now* (a unix timestamp) as ``datetime.fromtimestamp(now, UTC).isoformat(
    timespec="microseconds")`` says it, with the date and time of day made once a
    second: every connect stamps two events."""
    fraction, whole = math.modf(now)
    second, micro = int(whole), round(fraction * 1e6)
    if micro < 0:
        second, micro = second - 1, micro + 1_000_000
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    return f"{_utc_second(second)}.{micro:06d}+00:00"


def _uuid4_text() -> str:
    """A random (version 4) UUID as text, in half of ``str(uuid.uuid4())``'s time:
    every connect makes two. An event id must be unique, not secret, so it comes from
    ``random`` (reseeded in a forked child) rather than a ``getrandom`` call each."""
    digits = f"{getrandbits(128):032x}"
    variant = "89ab"[int(digits[16], 16) & 3]
    return (f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-"
            f"{digits[20:]}")


def rig_event(event_type: str, data=None, *, now: float) -> CloudEvent:
    """A RIG-generated CloudEvents 1.0 event (``source`` ``rig``, fresh uuid4 id).

    *now* is a unix timestamp; ``time`` is RFC 3339 UTC with microseconds.
    Without *data* (None) the event has no ``data`` attribute.
    """
    event_id = _uuid4_text()
    document = {
        "specversion": "1.0",
        "type": event_type,
        "source": "rig",
        "id": event_id,
        "time": rfc3339_utc(now),
    }
    if data is not None:
        document["data"] = data
    try:
        encoded = jsontext.compact(document).encode("utf-8")
    except UnicodeEncodeError:
        encoded = json.dumps(document, separators=(",", ":")).encode("ascii")
    return CloudEvent("1.0", event_type, event_id, document, encoded)


@attrs.frozen(slots=True)
class RigNotice:
    """A RIG event made only to be sent to one connection (the welcome): its type, id
    and JSON, which is all a framer reads, without the decoded document and the
    filterable view a published CloudEvent carries."""

    type: str
    id: str
    json: bytes

    @property
    def document(self):
        """The decoded JSON, as a CloudEvent has it (made when asked: frames never ask)."""
        return json.loads(self.json)


def rig_notice(event_type: str, data_json: str, time_text: str) -> RigNotice:
    """The notice :func:`rig_event` would make, byte for byte, from JSON already made.

    *event_type* is one of RIG's own (plain ASCII); *data_json* is the compact JSON of
    the data, encodable as UTF-8; *time_text* is :func:`rfc3339_utc`'s, made once for
    all the events of one moment. A connect sends two notices, and building, encoding
    and checking each as a CloudEvent was a sixth of its Python.
    """
    event_id = _uuid4_text()
    text = (f'{{"specversion":"1.0","type":"{event_type}","source":"rig","id":"{event_id}",'
            f'"time":"{time_text}","data":{data_json}}}')
    return RigNotice(event_type, event_id, text.encode("utf-8"))


_UNSAFE_SSE_NAME = re.compile("[\r\n\x00\ud800-\udfff]")


def event_sse_name(event: CloudEvent) -> str:
    """The SSE ``event:`` name of *event*: its type.

    Characters that would break the SSE framing or UTF-8 encoding (CR, LF,
    NUL, lone surrogates) are replaced by U+FFFD; types never contain them in
    practice.
    """
    name = event.type
    if name.isascii() and "\n" not in name and "\r" not in name and "\x00" not in name:
        return name
    return _UNSAFE_SSE_NAME.sub("\ufffd", name)
