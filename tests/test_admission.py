"""What a connect is admitted with: the ``subscriptions`` parameter, parsed once per text."""
import jwt
import pytest
from twisted.internet.task import Clock

from rig.auth.authority import Authority
from rig.connections.setup import SetupError, admit_at_once
from rig.hub import Hub
from rig.settings import Settings
from rig.subscriptions.extractors import parse_extractors
from rig.subscriptions.model import Subscription
from rig.subscriptions.params import SubscriptionParams

GREETING = '[{"eventType":"greeting"},{"eventType":"greeting"},{"eventType":"chat","oneOf":[]}]'
SECRET = "admission-secret"
NOW = 1_800_000_000
EXTRACTORS = {"greeting": {"name": {"stable_field_index": 0,
                                    "event": {"json_pointer": "/data/name"},
                                    "jwt": {"json_pointer": "/username"}}}}


def _hub():
    clock = Clock()
    clock.advance(NOW)
    settings = Settings.load(None, {"JWT_SECRET_KEY": SECRET})
    return Hub(clock, auth=Authority.from_settings(settings, clock),
               extractors=parse_extractors(EXTRACTORS))


def _token(**claims):
    return jwt.encode({"exp": NOW + 3600, **claims}, SECRET, algorithm="HS256")


def _admit(hub, **args):
    return admit_at_once(hub, {name.encode(): [value.encode()] for name, value in args.items()})


def _refusal(hub, **args):
    with pytest.raises(SetupError) as refused:
        _admit(hub, **args)
    return refused.value.status, refused.value.message


def test_the_same_parameter_twice_gives_the_same_subscriptions_parsed_once():
    hub = _hub()
    first = _admit(hub, subscriptions=GREETING).subscriptions
    assert list(first) == [Subscription("greeting"), Subscription("chat")]  # duplicates dropped
    assert hub.subscription_params.known(GREETING, False) is not None
    again = _admit(hub, subscriptions=GREETING).subscriptions
    assert again is first  # from the memo, not parsed again
    assert [s.to_json() for s in again] == [{"eventType": "greeting", "oneOf": []},
                                           {"eventType": "chat", "oneOf": []}]


@pytest.mark.parametrize("text, expected", [
    ("[{", "Failed to decode subscription list"),
    ('[{"eventType": ""}]', "could not parse subscriptions: invalid subscription: event-type"),
    ('{"eventType": "x"}', "could not parse subscriptions: invalid subscription: expected a list"),
])
def test_a_bad_parameter_is_refused_alike_every_time_and_never_remembered(text, expected):
    hub = _hub()
    answers = [_refusal(hub, subscriptions=text) for _ in range(3)]
    assert answers[0][0] == 400 and answers[0][1].startswith(expected)
    assert answers[1:] == answers[:2]
    assert hub.subscription_params.known(text, False) is None


def test_a_bad_jwt_is_said_before_a_bad_subscription_and_after_a_remembered_good_one():
    hub = _hub()
    bad_list = '[{"eventType": ""}]'
    for _ in range(2):
        status, message = _refusal(hub, subscriptions=bad_list, jwt="not.a.jwt")
        assert status == 400 and "could not decode JWT" in message
    _admit(hub, subscriptions=GREETING)
    status, message = _refusal(hub, subscriptions=GREETING, jwt="not.a.jwt")
    assert "could not decode JWT" in message


def test_jwt_inferred_and_remembered_manual_subscriptions_are_joined_without_duplicates():
    hub = _hub()
    manual = '[{"eventType":"greeting","oneOf":[{"name":"alice"}]},{"eventType":"chat"}]'
    _admit(hub, subscriptions=manual)  # now remembered
    admission = _admit(hub, subscriptions=manual, jwt=_token(username="alice"))
    assert [s.to_json() for s in admission.subscriptions] == [
        {"eventType": "greeting", "oneOf": [{"name": "alice"}]},  # inferred, and asked for
        {"eventType": "chat", "oneOf": []},
    ]
    assert [s.to_json() for s in _admit(hub, subscriptions=manual).subscriptions] == [
        {"eventType": "greeting", "oneOf": [{"name": "alice"}]}, {"eventType": "chat", "oneOf": []}]


def test_the_wrapped_form_long_polling_accepts_is_remembered_apart_from_the_plain_one():
    hub = _hub()
    wrapped = '{"subscriptions": [{"eventType": "greeting"}]}'
    params = hub.subscription_params
    decoded = params.decode(wrapped, True)
    assert params.parse(wrapped, True, decoded) == (Subscription("greeting"),)
    assert params.known(wrapped, True) is not None
    status, message = _refusal(hub, subscriptions=wrapped)  # SSE and WebSocket: not a list
    assert status == 400 and "expected a list" in message


def test_the_memo_is_bounded_in_entries_and_in_text_length():
    params = SubscriptionParams(max_entries=3, max_text=40)
    texts = [f'[{{"eventType":"t{n}"}}]' for n in range(5)]
    for text in texts:
        params.parse(text, False, params.decode(text, False))
    assert [params.known(text, False) is not None for text in texts] == [
        False, False, True, True, True]  # the oldest went first
    long_text = '[{"eventType":"%s"}]' % ("x" * 40)
    assert params.parse(long_text, False, params.decode(long_text, False)) == (
        Subscription("x" * 40),)
    assert params.known(long_text, False) is None
