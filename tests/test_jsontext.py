"""The encoders made once say what ``json.dumps`` says, and the per-second time stamp
what ``datetime.isoformat`` says."""
import datetime
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rig import jsontext
from rig.events import rfc3339_utc

_SCALARS = (st.none() | st.booleans() | st.integers() | st.text()
            | st.floats(allow_nan=False, allow_infinity=False))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, derandomize=True)
@given(_VALUES)
@example("lone \ud800 surrogate")
@example({"b": 1, "a": [1.5, "ü", None, True]})
def test_each_encoder_says_what_json_dumps_says(value):
    assert jsontext.canonical(value) == json.dumps(value, sort_keys=True)
    assert jsontext.compact(value) == json.dumps(value, separators=(",", ":"),
                                                 ensure_ascii=False)
    assert jsontext.compact_sorted(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_tuples_are_arrays_and_other_types_are_refused():
    assert jsontext.canonical(["t", ({"b": 2, "a": 1},)]) == '["t", [{"a": 1, "b": 2}]]'
    with pytest.raises(TypeError):
        jsontext.compact({"when": datetime.datetime(2026, 1, 1)})


@settings(max_examples=2000, derandomize=True)
@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
@example(1553687598.43569)
@example(0.0)
@example(1.0000005)  # halfway between two microseconds
@example(1.9999996)  # rounds up into the next second
@example(-0.0000004)
@example(-1.5)
def test_rfc3339_utc_is_isoformat(now):
    expected = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).isoformat(
        timespec="microseconds")
    assert rfc3339_utc(now) == expected
