"""The /v3/apis management API end to end: changes apply to the next request (spec 7.10)."""
import json

import pytest_twisted

from tests.support import within
from tests.test_e2e_proxy import api, echo, endpoint


async def call(gateway, method, path, body=None):
    kwargs = {} if body is None else {"data": json.dumps(body).encode(),
                                      "headers": {"content-type": "application/json"}}
    response = await gateway.request(method, path, internal=True, **kwargs)
    text = await within(response.text())
    return response.code, (json.loads(text) if text else None)


@pytest_twisted.ensureDeferred
async def test_lifecycle_takes_effect_without_restart(make_gateway, stub_server):
    backend = stub_server(echo)
    port = backend.port.getHost().port
    gateway = make_gateway()
    assert (await gateway.request("GET", "/books/1")).code == 404
    definition = api(port, endpoint("get", "get", "/books/(.+)"))
    assert await call(gateway, "POST", "/v3/apis", definition) == (201, {"message": "ok"})
    response = await gateway.request("GET", "/books/1")
    assert response.code == 200  # the method was uppercased
    status, listed = await call(gateway, "GET", "/v3/apis")
    assert status == 200 and [entry["id"] for entry in listed] == ["books"]
    assert listed[0]["active"] is True and listed[0]["ref_number"] == 0
    assert await call(gateway, "POST", "/v3/apis", definition) == (
        409, {"message": "API with id=books already exists."})
    changed = api(port, endpoint("get", "GET", "/novels/(.+)"))
    assert await call(gateway, "PUT", "/v2/apis/books", changed) == (200, {"message": "ok"})
    assert (await gateway.request("GET", "/books/1")).code == 404
    assert (await gateway.request("GET", "/novels/1")).code == 200
    status, stored = await call(gateway, "GET", "/v3/apis/books")
    assert status == 200 and stored["ref_number"] == 1
    assert await call(gateway, "DELETE", "/v3/apis/books") == (204, None)
    assert (await gateway.request("GET", "/novels/1")).code == 404
    missing = (404, {"message": "API with id=books doesn't exists."})
    assert await call(gateway, "GET", "/v3/apis/books") == missing
    assert await call(gateway, "DELETE", "/v3/apis/books") == missing
    assert await call(gateway, "PUT", "/v3/apis/books", changed) == missing
    assert await call(gateway, "GET", "/v3/apis") == (200, [])
    assert await call(gateway, "POST", "/v3/apis", definition) == (201, {"message": "ok"})
    status, stored = await call(gateway, "GET", "/v3/apis/books")
    assert stored["ref_number"] == 3 and stored["active"] is True


@pytest_twisted.ensureDeferred
async def test_validation_errors_use_rigs_map(make_gateway):
    gateway = make_gateway()
    assert await call(gateway, "PUT", "/v3/apis/invalid-config", {}) == (400, {"api": [
        {"name": "must be string"}, {"name": "must have a length of at least 1"},
        {"proxy": "must be present"}, {"version_data": "must be present"}]})
    definition = api(80, {}, api_id="invalid-config")
    status, errors = await call(gateway, "POST", "/v3/apis", definition)
    assert status == 400
    assert errors == {"invalid-config/": [
        {"id": "must be string"}, {"id": "must have a length of at least 1"},
        {"path_regex": "must be string"}, {"path_regex": "must have a length of at least 1"},
        {"method": "must be string"}, {"method": "must have a length of at least 1"}]}
    status, errors = await call(gateway, "POST", "/v3/apis", {"name": "x"})
    assert status == 400 and {"id": "must be string"} in errors["api"]
    bad_regex = api(80, endpoint("e", "GET", "/books/(unclosed"), api_id="r")
    status, errors = await call(gateway, "POST", "/v3/apis", bad_regex)
    assert status == 400 and "path_regex" in errors["r/e"][0]
    secured = api(80, endpoint("e", "GET", "/x", secured=True), api_id="s")
    status, errors = await call(gateway, "POST", "/v3/apis", secured)
    assert (status, errors) == (400, {"s/e": [{"auth_type": 'must be one of ["jwt"]'}]})
    kafka = api(80, endpoint("e", "POST", "/x", target="kafka"), api_id="k")
    status, errors = await call(gateway, "POST", "/v3/apis", kafka)
    assert status == 400 and "k/e" in errors
    response = await gateway.request("POST", "/v3/apis", internal=True, data=b"{nope",
                                     headers={"content-type": "application/json"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_fields_the_proxy_reads_must_have_their_type(make_gateway):
    """Found by the schemathesis fuzz (issue 16): ``use_env: {}``, a list of
    ``add_headers`` or a number as ``query_name`` were accepted, and every request the
    API then matched got a 500. Now a 400 names the field; null still counts as absent."""
    gateway = make_gateway()
    get = endpoint("e", "GET", "/x", transform_request_headers=True)
    cases = [
        (api(80, get, proxy={"target_url": "B", "port": 80, "use_env": {}}),
         "api", {"use_env": "must be boolean"}),
        (api(80, get, version_data={"default": {
            "endpoints": [get], "transform_request_headers": {"add_headers": ["x"]}}}),
         "api", {"add_headers": "must be an object of strings"}),
        (api(80, get, auth_type="jwt", auth={"use_query": True, "query_name": 5}),
         "books", {"query_name": "must be string"}),
        (api(80, endpoint("e", "GET", "/x", secured="yes"), auth_type="jwt"),
         "books/e", {"secured": "must be boolean"}),
        (api(80, get, versioned=[]), "api", {"versioned": "must be boolean"}),
    ]
    for definition, key, error in cases:
        status, errors = await call(gateway, "POST", "/v3/apis", definition)
        assert status == 400 and error in errors[key], (definition, errors)
        assert (await gateway.request("GET", "/x")).code == 404  # nothing was stored
    nulls = api(80, get, versioned=None, proxy={"target_url": "B", "port": 80, "use_env": None})
    assert await call(gateway, "POST", "/v3/apis", nulls) == (201, {"message": "ok"})
