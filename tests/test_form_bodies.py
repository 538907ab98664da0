"""Form bodies (urlencoded, multipart) are read by the internal API only, never by Twisted.

Found by the schemathesis fuzz (issue 16): Twisted parsed every multipart POST
itself, on both ports, and answered one it could not parse with a bare
``400 Bad Request`` (no body) and a dropped connection, before any handler: a
proxied upload never reached its backend, and an event or internal API request
got no RIG answer.
"""
import pytest_twisted

from tests.support import within
from tests.test_e2e_proxy import api, echo, endpoint

MULTIPART = "multipart/form-data; boundary=xyz"
NOT_MULTIPART = b'{"sessionId": "s"}'  # what a client may well send under that type


def multipart(**fields):
    parts = [f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields.items()]
    return ("".join(parts) + "--xyz--\r\n").encode()


@pytest_twisted.ensureDeferred
async def test_the_internal_api_reads_multipart_and_refuses_a_malformed_one(gateway):
    response = await gateway.request(
        "POST", "/v3/session-blacklist", internal=True, headers={"content-type": MULTIPART},
        data=multipart(sessionId="multi", validityInSeconds="30"))
    assert response.code == 201
    assert "multi" in gateway.hub.auth.blacklist
    for content_type in (MULTIPART, "multipart/form-data"):
        response = await gateway.request("POST", "/v3/session-blacklist", internal=True,
                                         headers={"content-type": content_type},
                                         data=NOT_MULTIPART)
        assert response.code == 400
        assert await within(response.json()) == {"errors": {"detail": "Bad request"}}


@pytest_twisted.ensureDeferred
async def test_an_event_under_a_multipart_type_gets_rigs_answer(gateway):
    response = await gateway.request("POST", "/_rig/v1/events", data=NOT_MULTIPART,
                                     headers={"content-type": MULTIPART})
    assert response.code == 400  # binary mode without ce-specversion, as RIG says
    assert "ce-specversion" in await within(response.text())
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]


@pytest_twisted.ensureDeferred
async def test_a_proxied_multipart_body_goes_to_the_backend_as_it_is(make_gateway, stub_server):
    backend = stub_server(echo)
    definition = api(backend.port.getHost().port, endpoint("up", "POST", "/upload"))
    gateway = make_gateway(proxy_config=(definition,))
    for body in (NOT_MULTIPART, multipart(file="contents")):
        response = await gateway.request("POST", "/upload?x=1", data=body,
                                         headers={"content-type": MULTIPART})
        assert response.code == 200
        seen = await within(response.json())
        assert seen["body"] == body.decode()


@pytest_twisted.ensureDeferred
async def test_a_form_with_bytes_that_are_not_utf8_is_read_leniently(gateway):
    """The fuzz's own finding on this change: ``urllib``'s ``parse_qs`` of bytes raised
    on non-ASCII names (a 500)."""
    response = await gateway.request(
        "POST", "/v3/session-blacklist", internal=True,
        headers={"content-type": "application/x-www-form-urlencoded"},
        data="%C3%87=\u00e9&\xff=1&sessionId=s%C3%A9&validityInSeconds=+9+".encode("latin-1"))
    assert response.code == 201
    assert "s\u00e9" in gateway.hub.auth.blacklist
