"""The WebSocket opening handshake's checks, on twisted.web's parsed request."""
from types import SimpleNamespace

import pytest
from twisted.web.http_headers import Headers

from rig.connections.upgrade import accept_value, refusal

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example
GOOD = {b"host": [b"gw"], b"upgrade": [b"websocket"], b"connection": [b"Upgrade"],
        b"sec-websocket-version": [b"13"], b"sec-websocket-key": [KEY]}


def request(version=b"HTTP/1.1", method=b"GET", **changes):
    headers = dict(GOOD)
    for argument, values in changes.items():
        name = argument.replace("_", "-").encode()
        if values is None:
            del headers[name]
        else:
            headers[name] = values
    return SimpleNamespace(method=method, clientproto=version, requestHeaders=Headers(headers))


def test_the_accept_value_is_rfc_6455s():
    assert accept_value(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("changes", [
    {},
    {"connection": [b"keep-alive, Upgrade"]},
    {"connection": [b"keep-alive", b"upgrade"]},
    {"sec_websocket_version": [b" 13 "]},
    {"sec_websocket_key": [b"  " + KEY]},
])
def test_a_valid_handshake_is_accepted(changes):
    assert refusal(request(**changes)) is None


@pytest.mark.parametrize("version, changes, status", [
    (b"HTTP/1.0", {}, 505),
    (b"HTTP/1.1", {"host": None}, 400),
    (b"HTTP/1.1", {"host": [b"a", b"b"]}, 400),
    (b"HTTP/1.1", {"connection": None}, 400),
    (b"HTTP/1.1", {"connection": [b"keep-alive"]}, 400),
    (b"HTTP/1.1", {"connection": [b"upgraded"]}, 400),
    (b"HTTP/1.1", {"sec_websocket_key": None}, 400),
    (b"HTTP/1.1", {"sec_websocket_key": [b"short"]}, 400),
    (b"HTTP/1.1", {"sec_websocket_key": [b"dGhlIHNhbXBsZSBub25jZQ"]}, 400),  # no padding
    (b"HTTP/1.1", {"sec_websocket_key": [b"dGhlIHNhbXBsZSBub25jZ!=="]}, 400),
    (b"HTTP/1.1", {"sec_websocket_key": [KEY, KEY]}, 400),
])
def test_a_bad_handshake_is_refused(version, changes, status):
    refused = refusal(request(version, **changes))
    assert refused is not None and refused[0] == status


@pytest.mark.parametrize("versions", [None, [b"7"], [b"13", b"13"], [b"thirteen"]])
def test_another_version_is_refused_naming_the_one_supported(versions):
    status, _reason, headers = refusal(request(sec_websocket_version=versions))
    assert (status, headers) == (400, ((b"sec-websocket-version", b"13"),))


def test_only_get_opens_a_websocket():
    assert refusal(request(method=b"HEAD")) == (405, "A WebSocket opens with GET.",
                                                ((b"allow", b"GET"),))
