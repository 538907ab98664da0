"""The example pages as files and as HTTP resources (issue 8); tests/test_browser.py runs them."""
import pathlib
import re

import pytest_twisted

from rig.settings import Settings
from rig.web.examples import load_pages
from tests.support import RawHTTPClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ("index.html", "sse.html", "ws.html", "longpolling.html", "jwt.html", "publish.html",
         "recovery.html")


def test_the_package_holds_every_page():
    pages = load_pages()
    assert set(PAGES) | {"examples.css"} <= set(pages)
    assert pages["sse.html"][0] == b"text/html; charset=utf-8"
    assert pages["examples.css"][0] == b"text/css; charset=utf-8"


def test_pages_load_nothing_from_elsewhere():
    """No CDN, no build step: every link and script stays on the gateway."""
    for name, (_type, body) in load_pages().items():
        text = body.decode("utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name


def test_etc_examples_toml_sets_up_every_page():
    settings = Settings.load(str(ROOT / "etc" / "examples.toml"), {})
    assert settings.examples_enabled
    assert settings.jwt_secret_key
    field, = settings.extractors.fields("greeting")
    assert (field.name, field.jwt_pointer is not None) == ("name", True)


def test_examples_enabled_from_the_environment():
    assert Settings.from_mapping({}, {"EXAMPLES_ENABLED": "true"}).examples_enabled
    assert not Settings.from_mapping({}, {"EXAMPLES_ENABLED": "0"}).examples_enabled
    assert not Settings().examples_enabled


async def get(gateway, path, method="GET"):
    client = await RawHTTPClient.open(gateway.inbound_port, method, path,
                                      headers=[("Connection", "close")])
    body = await client.response_body()
    return client.status, client.headers, body


@pytest_twisted.ensureDeferred
async def test_disabled_by_default(gateway):
    status, _headers, _body = await get(gateway, "/_rig/examples/")
    assert status == 404  # falls through to the proxy, which knows no API here


@pytest_twisted.ensureDeferred
async def test_served_when_enabled(make_gateway):
    gateway = make_gateway(examples_enabled=True)
    status, headers, body = await get(gateway, "/_rig/examples/")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert body == load_pages()["index.html"][1]
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, _body = await get(gateway, "/_rig/examples/examples.css")
    assert (status, headers["content-type"]) == (200, "text/css; charset=utf-8")
    status, headers, body = await get(gateway, "/_rig/examples/sse.html", method="HEAD")
    assert (status, body) == (200, b"")
    status, headers, _body = await get(gateway, "/_rig/examples")
    assert (status, headers["location"]) == (301, "/_rig/examples/")


@pytest_twisted.ensureDeferred
async def test_only_the_pages_are_served(make_gateway):
    gateway = make_gateway(examples_enabled=True)
    for path in ("/_rig/examples/missing.html", "/_rig/examples/../../setup.cfg",
                 "/_rig/examples/..%2f..%2fsetup.cfg", "/_rig/examples/%2e%2e/settings.py",
                 "/_rig/examples/__init__.py", "/_rig/examples/sub/index.html"):
        status, _headers, body = await get(gateway, path)
        assert status == 404, path
        assert b"[options]" not in body
