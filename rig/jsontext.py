"""JSON encoders made once, for short texts made on every connect.

``json.dumps`` with any option builds a new ``JSONEncoder`` on every call, and
``JSONEncoder.encode`` builds a new C encoder on every call: for a text of a
few dozen bytes that is most of the cost (3.8 us against 1.0 us for a
subscription's key). These encoders are built once. They skip the check for
circular references, which only values built in Python could have: every value
encoded here was decoded from JSON, or is one of txrig's own.
"""
import json
from json import encoder as _stdlib


def _made_once(*, sort_keys, ensure_ascii, separators):
    """``json.dumps(value, **options)``, as a function of *value* that builds nothing."""
    fallback = json.JSONEncoder(sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                                separators=separators)
    make = _stdlib.c_make_encoder
    if make is None:  # no C accelerator (another Python): the stdlib's own way
        return fallback.encode
    item_separator, key_separator = separators
    strings = _stdlib.encode_basestring_ascii if ensure_ascii else _stdlib.encode_basestring
    encoder = make(None, fallback.default, strings, None, key_separator, item_separator,
                   sort_keys, False, True)

    def encode(value):
        if isinstance(value, str):
            return strings(value)
        return "".join(encoder(value, 0))

    return encode


canonical = _made_once(sort_keys=True, ensure_ascii=True, separators=(", ", ": "))
"""As ``json.dumps(value, sort_keys=True)``: equal values, equal texts."""

compact = _made_once(sort_keys=False, ensure_ascii=False, separators=(",", ":"))
"""As ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``: encode the
result as UTF-8 (lone surrogates in a string then raise UnicodeEncodeError)."""

compact_sorted = _made_once(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
"""As :data:`compact`, with the keys of every object sorted."""


def utf8_compact(value):
    """:data:`compact`, or with every non-ASCII character escaped where a lone surrogate
    would make the text unencodable as UTF-8 (as :func:`rig.events.rig_event` does)."""
    text = compact(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text
