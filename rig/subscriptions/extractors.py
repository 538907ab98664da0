"""The extractor configuration (``EXTRACTORS``): which event fields can be constrained.

For each event type, a field name maps to a JSON pointer into the event (and
optionally one into JWT claims). ``stable_field_index`` orders the fields like
protobuf field numbers: unique per event type, never reused.
"""
import attrs

from rig.jsonsource import load_path_or_json
from rig.subscriptions.pointer import parse_pointer


@attrs.frozen
class ExtractorField:
    name: str
    index: int
    event_pointer: tuple
    jwt_pointer: tuple | None = None


@attrs.frozen
class ExtractorConfig:
    """Fields per event type, each tuple sorted by ``stable_field_index``."""

    by_type: dict = attrs.field(factory=dict)

    def fields(self, event_type):
        return self.by_type.get(event_type, ())

    def field_names(self, event_type):
        return frozenset(field.name for field in self.fields(event_type))


def parse_extractors(value):
    """Build an ExtractorConfig from a file path, a JSON text or a decoded object.

    Raises ValueError with a sentence naming the event type and field at fault.
    """
    if value is None or value == "":
        return ExtractorConfig()
    if isinstance(value, str):
        value = load_path_or_json(value)
    if not isinstance(value, dict):
        raise ValueError("the extractor config must be a JSON object keyed by event type")
    by_type = {}
    for event_type, fields in value.items():
        if not isinstance(fields, dict):
            raise ValueError(f"extractor config for event type {event_type!r} must be an object")
        parsed = [_parse_field(event_type, name, spec) for name, spec in fields.items()]
        seen = {}
        for field in parsed:
            if field.index in seen:
                raise ValueError(
                    f"event type {event_type!r}: fields {seen[field.index]!r} and "
                    f"{field.name!r} share stable_field_index {field.index}"
                )
            seen[field.index] = field.name
        by_type[event_type] = tuple(sorted(parsed, key=lambda field: field.index))
    return ExtractorConfig(by_type)


def _parse_field(event_type, name, spec):
    where = f"event type {event_type!r}, field {name!r}"
    if not name:
        raise ValueError(f"event type {event_type!r}: field names must be non-empty")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: the field config must be an object")
    index = spec.get("stable_field_index")
    if index is None:
        raise ValueError(f"{where}: stable_field_index is missing")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"{where}: stable_field_index must be an integer >= 0")
    event = spec.get("event")
    if not isinstance(event, dict):
        raise ValueError(f"{where}: event.json_pointer is missing")
    try:
        event_pointer = parse_pointer(event.get("json_pointer"))
    except ValueError as error:
        raise ValueError(f"{where}: event.json_pointer: {error}") from None
    jwt_pointer = None
    jwt = spec.get("jwt")
    if jwt is not None:
        if not isinstance(jwt, dict):
            raise ValueError(f"{where}: jwt must be an object with a json_pointer")
        try:
            jwt_pointer = parse_pointer(jwt.get("json_pointer"))
        except ValueError as error:
            raise ValueError(f"{where}: jwt.json_pointer: {error}") from None
    return ExtractorField(name, index, event_pointer, jwt_pointer)
