"""SUBSCRIPTION_CHECK / SUBMISSION_CHECK: token extraction, no_check, jwt_validation, URLs."""
import jwt
import pytest
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from rig.auth.blacklist import Blacklist
from rig.auth.checks import (
    CheckRequest,
    ExternalCheck,
    JWTValidationCheck,
    NoCheck,
    authorization_tokens,
    make_check,
)
from rig.auth.jwt import JWTValidator, NoJWTValidation, load_key
from rig.tracing.context import parse_traceparent

NOW = 1_700_000_000
SECRET = "k" * 64
URL = "http://checker.local/check"


def make_clock():
    clock = Clock()
    clock.advance(NOW)
    return clock


def token(**extra):
    payload = {"sub": "alice", "exp": NOW + 3600}
    payload.update(extra)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def validator(clock=None, **kwargs):
    return JWTValidator(clock or make_clock(), algorithm="HS256",
                        key=load_key("HS256", SECRET), **kwargs)


def request(*authorization, body=b'{"subscriptions":[]}', content_type="application/json"):
    return CheckRequest(body=body, content_type=content_type, authorization=tuple(authorization))


def _peek(deferred):
    results = []

    def keep(result):
        results.append(result)
        return result

    deferred.addBoth(keep)
    return results


def result_of(deferred):
    """The result of a Deferred that must already have fired successfully."""
    results = _peek(deferred)
    assert results, "the check has not decided yet"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def pending(deferred):
    return not _peek(deferred)


class FakePost:
    """Records each POST and answers with a Deferred the test fires."""

    def __init__(self):
        self.calls = []

    def __call__(self, url, body, headers):
        answer = Deferred()
        self.calls.append((url, body, headers, answer))
        return answer

    @property
    def answer(self):
        return self.calls[-1][3]


# authorization_tokens


def test_bearer_tokens_strict():
    assert authorization_tokens(["Bearer abc"], lenient=False) == ["abc"]
    assert authorization_tokens(["Bearer   abc  "], lenient=False) == ["abc"]


@pytest.mark.parametrize("value", ["bearer abc", "BEARER abc", "BeArEr abc", "abc", "Basic abc",
                                   "Bearer", "Bearer ", "", " , ,"])
def test_strict_mode_accepts_only_case_sensitive_bearer(value):
    assert authorization_tokens([value], lenient=False) == []


def test_lenient_mode_accepts_bare_tokens_and_any_case_scheme():
    values = ["abc", "bearer def", "BEARER ghi", "Bearer jkl", "BeArEr mno"]
    assert authorization_tokens(values, lenient=True) == ["abc", "def", "ghi", "jkl", "mno"]


def test_lenient_mode_ignores_other_schemes():
    assert authorization_tokens(["Basic dXNlcjpwYXNz", "Digest x"], lenient=True) == []


def test_comma_separated_lists():
    value = "Bearer a, Bearer b,Bearer c , bare, basic x"
    assert authorization_tokens([value], lenient=False) == ["a", "b", "c"]
    assert authorization_tokens([value], lenient=True) == ["a", "b", "c", "bare"]


def test_several_header_values_keep_their_order():
    values = ["Bearer a", "Bearer b, Bearer c", "bearer d", "e"]
    assert authorization_tokens(values, lenient=False) == ["a", "b", "c"]
    assert authorization_tokens(values, lenient=True) == ["a", "b", "c", "d", "e"]


def test_no_values_no_tokens():
    assert authorization_tokens([], lenient=True) == []
    assert authorization_tokens((), lenient=False) == []
    assert authorization_tokens(["", "  ", ","], lenient=True) == []


def test_real_jwts_are_extracted_intact():
    first, second = token(jti="1"), token(jti="2")
    values = [f"Bearer {first}, {second}"]
    assert authorization_tokens(values, lenient=True) == [first, second]
    assert authorization_tokens(values, lenient=False) == [first]


# NoCheck


def test_no_check_allows():
    check = NoCheck()
    assert result_of(check.allows(request())) is True
    assert result_of(check.allows(request("Bearer garbage"))) is True


# JWTValidationCheck


def test_jwt_validation_allows_a_valid_bearer_token():
    check = JWTValidationCheck(validator())
    assert result_of(check.allows(request(f"Bearer {token()}"))) is True


def test_jwt_validation_allows_bare_and_lowercase_scheme_tokens():
    check = JWTValidationCheck(validator())
    assert result_of(check.allows(request(token()))) is True
    assert result_of(check.allows(request(f"bearer {token()}"))) is True


def test_jwt_validation_allows_when_any_token_is_valid():
    check = JWTValidationCheck(validator())
    expired = token(exp=NOW - 3600)
    values = ("Bearer garbage", f"Bearer {expired}, Basic xyz", f"Bearer {token()}")
    assert result_of(check.allows(request(*values))) is True


def test_jwt_validation_denies_when_no_token_is_valid():
    check = JWTValidationCheck(validator())
    foreign = jwt.encode({"exp": NOW + 3600}, "x" * 64, algorithm="HS256")
    values = ("Bearer garbage", f"Bearer {token(exp=NOW - 3600)}", f"Bearer {foreign}",
              f"Basic {token()}")
    assert result_of(check.allows(request(*values))) is False
    assert result_of(check.allows(request())) is False


def test_jwt_validation_denies_blacklisted_tokens():
    clock = make_clock()
    blacklist = Blacklist(clock)
    blacklist.add("j1", NOW + 60)
    check = JWTValidationCheck(validator(clock, blacklist=blacklist))
    assert result_of(check.allows(request(f"Bearer {token(jti='j1')}"))) is False
    clock.advance(60)
    assert result_of(check.allows(request(f"Bearer {token(jti='j1')}"))) is True


def test_jwt_validation_without_a_key_denies():
    check = JWTValidationCheck(NoJWTValidation())
    assert result_of(check.allows(request(f"Bearer {token()}"))) is False


# ExternalCheck


def external(timeout=5.0):
    clock = make_clock()
    post = FakePost()
    return clock, post, ExternalCheck(URL, post, clock, timeout)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_external_2xx_allows(status):
    clock, post, check = external()
    decision = check.allows(request("Bearer a"))
    assert pending(decision)
    post.answer.callback(status)
    assert result_of(decision) is True
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("status", [401, 403])
def test_external_401_403_deny(status):
    clock, post, check = external()
    decision = check.allows(request("Bearer a"))
    post.answer.callback(status)
    assert result_of(decision) is False
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("status", [500, 502, 404, 302, 100, 300, 199])
def test_external_other_statuses_deny(status):
    _, post, check = external()
    decision = check.allows(request("Bearer a"))
    post.answer.callback(status)
    assert result_of(decision) is False


@pytest.mark.parametrize(
    "error", [ConnectionRefusedError(), RuntimeError("boom"), CancelledError(), ValueError()]
)
def test_external_failure_denies(error):
    clock, post, check = external()
    decision = check.allows(request("Bearer a"))
    post.answer.errback(error)
    assert result_of(decision) is False
    assert clock.getDelayedCalls() == []


def test_external_synchronous_failure_denies():
    clock = make_clock()
    check = ExternalCheck(URL, lambda url, body, headers: fail(RuntimeError("down")), clock, 5.0)
    assert result_of(check.allows(request())) is False
    assert clock.getDelayedCalls() == []


def test_external_unanswered_post_is_denied_after_the_timeout():
    clock, post, check = external(timeout=5.0)
    decision = check.allows(request("Bearer a"))
    clock.advance(4.9)
    assert pending(decision)
    clock.advance(0.1)
    assert result_of(decision) is False
    assert clock.getDelayedCalls() == []
    # A late answer after the timeout changes nothing (the Deferred was cancelled).
    assert post.answer.called


def test_external_timeout_is_configurable():
    clock, _, check = external(timeout=0.5)
    decision = check.allows(request())
    clock.advance(0.5)
    assert result_of(decision) is False


def test_external_post_receives_url_body_content_type_and_joined_authorization():
    _, post, check = external()
    body = b'{"subscriptions":[{"eventType":"greeting"}]}'
    check.allows(request("Bearer a", "Bearer b, Bearer c", "raw", body=body,
                         content_type="application/json; charset=utf-8"))
    assert len(post.calls) == 1
    url, sent_body, headers, _ = post.calls[0]
    assert url == URL
    assert sent_body == body
    assert parse_traceparent(headers.pop("traceparent")) is not None  # a new trace
    assert headers == {
        "content-type": "application/json; charset=utf-8",
        "authorization": "Bearer a, Bearer b, Bearer c, raw",
    }


def test_external_post_carries_a_child_of_the_checked_requests_trace():
    _, post, check = external()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    check.allows(CheckRequest(b"{}", "application/json", (), parent, "congo=t61rcWkgMzE"))
    headers = post.calls[0][2]
    trace_id, span_id, flags = parse_traceparent(headers["traceparent"])
    assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331"
    assert headers["tracestate"] == "congo=t61rcWkgMzE"


def test_external_post_without_authorization_sends_none():
    _, post, check = external()
    check.allows(request(content_type="application/cloudevents+json"))
    _, _, headers, _ = post.calls[0]
    assert headers["content-type"] == "application/cloudevents+json"
    assert "authorization" not in headers


def test_external_each_request_is_asked_separately():
    _, post, check = external()
    first = check.allows(request("Bearer a"))
    second = check.allows(request("Bearer b"))
    assert len(post.calls) == 2
    post.calls[1][3].callback(403)
    post.calls[0][3].callback(200)
    assert result_of(first) is True
    assert result_of(second) is False


# make_check


def test_make_check_dispatch():
    clock = make_clock()
    post = FakePost()
    jwt_validator = validator(clock)

    def build(spec):
        return make_check(spec, validator=jwt_validator, post=post, clock=clock, timeout=2.0)

    assert isinstance(build("no_check"), NoCheck)
    jwt_check = build("jwt_validation")
    assert isinstance(jwt_check, JWTValidationCheck)
    assert jwt_check.validator is jwt_validator
    url_check = build(URL)
    assert isinstance(url_check, ExternalCheck)
    assert url_check.url == URL
    assert url_check.post is post
    assert url_check.clock is clock
    assert url_check.timeout == 2.0


def test_make_check_external_times_out_on_its_clock():
    clock = make_clock()
    post = FakePost()
    check = make_check("https://x.local/", validator=NoJWTValidation(), post=post, clock=clock,
                       timeout=2.0)
    decision = check.allows(request())
    assert post.calls[0][0] == "https://x.local/"
    clock.advance(2.0)
    assert result_of(decision) is False
