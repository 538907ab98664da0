"""The API description (issue 16): served, shown by Swagger UI from local files, and true
to the routers, both ways (every served route documented, every documented path served)."""
import json
import re

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from twisted.internet import reactor

from rig.dashboard.page import Dashboard, load_assets
from rig.service import RigService
from rig.settings import Settings
from rig.web.examples import ExamplePages
from rig.web.inbound import inbound_resource
from rig.web.internal import internal_resource
from rig.web.openapi import INBOUND_SERVERS, build_document
from rig.web.swagger import SwaggerUI

# Routes that are HTML pages and their files, not API: the document leaves them out.
# (Swagger UI's and the dashboard's pages and assets; the example pages of EXAMPLES_ENABLED.)
NOT_API = {
    "internal": {pattern for pattern, _methods in SwaggerUI({}).routes()
                 if "rig_api_swagger" not in pattern}
    | {pattern for pattern, _methods in Dashboard(None, {}).routes()
       if pattern != "/dashboard/data"},
    "inbound": {pattern for pattern, _methods in ExamplePages({}).routes()},
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def routers():
    """Both routers, built as the gateway builds them, with every optional route on."""
    configured = Settings(inbound_listen="tcp:0:interface=127.0.0.1",
                          api_listen="tcp:0:interface=127.0.0.1", examples_enabled=True)
    service = RigService.build(configured, reactor)
    return {
        "internal": internal_resource(service.hub, configured, None, None, None,
                                      dashboard=Dashboard(None, load_assets())),
        "inbound": inbound_resource(service.hub, configured, None),
    }


ROUTERS = routers()
DOCUMENT = build_document()


def listener(path_item):
    return "inbound" if path_item.get("servers") == INBOUND_SERVERS else "internal"


def documented(name):
    """``{path template: (regex, {METHOD, ...}, path item)}`` of one listener."""
    found = {}
    for template, item in DOCUMENT["paths"].items():
        if listener(item) != name:
            continue
        methods = {method.upper().encode() for method in METHODS if method in item}
        found[template] = (_template_regex(template, item), methods, item)
    return found


def _parameter_schema(item, name):
    """A path parameter's schema (at the path's level or any operation's)."""
    levels = [item] + [item[method] for method in METHODS if method in item]
    for parameter in (p for level in levels for p in level.get("parameters", ())):
        if parameter["in"] == "path" and parameter["name"] == name:
            return parameter["schema"]
    raise AssertionError(f"path parameter {name} is not described")


def _template_regex(template, item):
    parts = re.split(r"\{(\w+)\}", template)
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
            continue
        enum = _parameter_schema(item, part).get("enum")
        regex += f"(?:{'|'.join(map(re.escape, enum))})" if enum else "[^/]+"
    return re.compile(regex)


def _samples(template, item):
    """Concrete paths for a template: every enum value, ``x`` for a free parameter."""
    paths = [template]
    for name in re.findall(r"\{(\w+)\}", template):
        values = _parameter_schema(item, name).get("enum") or ["x"]
        paths = [path.replace(f"{{{name}}}", value) for path in paths for value in values]
    return paths


def _served(router, path, method):
    """The pattern that serves ``method path`` as the Router resolves it (None: fallback)."""
    for pattern, methods in router.routes():
        if re.fullmatch(pattern, path) and (method in methods or b"*" in methods):
            return pattern
    return None


@pytest.mark.parametrize("name", ["internal", "inbound"])
def test_every_documented_operation_is_served(name):
    missing = []
    for template, (_regex, methods, item) in documented(name).items():
        for path in _samples(template, item):
            for method in methods:
                pattern = _served(ROUTERS[name], path, method)
                if pattern is None or pattern in NOT_API[name]:
                    missing.append((method.decode(), path))
    assert not missing, f"documented on {name} but not served: {missing}"


@pytest.mark.parametrize("name", ["internal", "inbound"])
def test_every_served_method_is_documented_on_some_path(name):
    """Each route's methods, on paths the document names (the pattern-level check)."""
    unmatched = []
    for pattern, methods in ROUTERS[name].routes():
        if pattern in NOT_API[name]:
            continue
        hits = {
            method
            for template, (_regex, doc_methods, item) in documented(name).items()
            for path in _samples(template, item)
            for method in doc_methods
            if _served(ROUTERS[name], path, method) == pattern
        }
        if set(methods) - hits - {b"HEAD"}:
            unmatched.append((pattern, sorted(set(methods) - hits)))
    assert not unmatched, f"served on {name} but not documented: {unmatched}"


def _api_routes():
    return [(name, pattern, methods) for name, router in ROUTERS.items()
            for pattern, methods in router.routes() if pattern not in NOT_API[name]]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_served_path_is_documented(data):
    """Any path a route's pattern matches (``/v2/...`` as well as ``/v3/...``) is in the
    document with the route's methods. The router's tolerated trailing slash
    (``/v3/apis/``, as RIG) is the same path as without it."""
    name, pattern, methods = data.draw(st.sampled_from(_api_routes()))
    path = data.draw(st.from_regex(pattern, fullmatch=True))
    path = path[:-1] if len(path) > 1 and path.endswith("/") else path
    for _template, (regex, doc_methods, _item) in documented(name).items():
        if regex.fullmatch(path) and set(methods) - {b"HEAD"} <= doc_methods:
            return
    raise AssertionError(f"{name} serves {sorted(methods)} {path!r} (route {pattern!r}),"
                         " which the document does not describe")


def test_not_api_exclusions_are_served():
    """The exclusions name real routes: a renamed page cannot hide an undocumented route."""
    for name, patterns in NOT_API.items():
        served = {pattern for pattern, _methods in ROUTERS[name].routes()}
        assert patterns <= served, (name, patterns - served)


def test_document_shape():
    validate_openapi(DOCUMENT)  # against the OpenAPI 3.1 meta-schema
    assert DOCUMENT["openapi"] == "3.1.0"
    operation_ids = [item[method]["operationId"] for item in DOCUMENT["paths"].values()
                     for method in METHODS if method in item]
    assert len(operation_ids) == len(set(operation_ids))
    assert "bearerAuth" in DOCUMENT["components"]["securitySchemes"]
    text = json.dumps(DOCUMENT)
    for ref in set(re.findall(r'"#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in DOCUMENT["components"][ref[0]], ref


async def _get(gateway, path, **kwargs):
    response = await gateway.request("GET", path, internal=True, **kwargs)
    return response, await response.content()


@pytest_twisted.ensureDeferred
async def test_document_is_served_as_json(gateway):
    response, body = await _get(gateway, "/swagger-ui/rig_api_swagger.json")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    assert json.loads(body) == build_document()


@pytest_twisted.ensureDeferred
async def test_swagger_ui_loads_only_local_files(gateway):
    """Offline: every file the page and our script name is on this host, and is served."""
    for page in ("/swagger-ui", "/swagger-ui/"):
        response, html = await _get(gateway, page)
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/html")
    html = html.decode()
    assert "//" not in html.replace("<!DOCTYPE html>", "")  # no URL of another host
    names = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(names) >= {"/swagger-ui/swagger-ui-bundle.js", "/swagger-ui/rig-swagger-init.js",
                          "/swagger-ui/swagger-ui.css"}
    for name in names:
        response, body = await _get(gateway, name)
        assert response.code == 200, name
        assert body, name
    _response, script = await _get(gateway, "/swagger-ui/rig-swagger-init.js")
    assert b'url: "/swagger-ui/rig_api_swagger.json"' in script
    assert b"validatorUrl: null" in script  # no badge from the public validator
    response, _body = await _get(gateway, "/swagger-ui/nothing.js")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_swagger_ui_needs_credentials_when_the_api_does(make_gateway):
    gateway = make_gateway(api_auth_tokens=("s3cret",))
    for path in ("/swagger-ui", "/swagger-ui/rig_api_swagger.json"):
        response, _body = await _get(gateway, path)
        assert response.code == 401, path
    response, _body = await _get(gateway, "/swagger-ui/rig_api_swagger.json",
                                 headers={"authorization": "Bearer s3cret"})
    assert response.code == 200
