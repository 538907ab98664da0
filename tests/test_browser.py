"""The example pages in a real browser (issue 8): headless Chromium driven by Selenium.

The gateway runs in-process on the reactor, like in every end-to-end test, so
a test can publish over HTTP and reach into the gateway (the recovery test
ends a stream from the server side). Selenium's API blocks: each browser call
runs in the reactor's thread pool (``deferToThread``) and the test awaits it,
so the reactor keeps serving the browser while the test waits on the page.
Only the test coroutine touches the gateway, always on the reactor thread.

The browser is Debian's ``chromium`` and ``chromedriver``, given by path, so
Selenium Manager never searches for (or downloads) anything. A missing browser
is a failure (``.ci/run`` installs it); ``RIG_SKIP_BROWSER=1`` skips these
tests on purpose. One browser serves the whole module; each test ends with a
screenshot in ``artifacts/screenshots/`` (``RIG_ARTIFACTS`` moves the folder).
"""
import json
import os
import pathlib
import re
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from rig.testing import eventually
from rig.web.h2 import H2Channel
from tests.certs import make_certificate
from tests.support import greeting, make_jwt, subs_query

CHROMIUM = os.environ.get("RIG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RIG_CHROMEDRIVER", "/usr/bin/chromedriver")
ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = pathlib.Path(os.environ.get("RIG_ARTIFACTS") or ROOT / "artifacts")
WAIT = 10.0  # seconds any one expectation on a page may take
RECONNECT_WAIT = 15.0  # EventSource waits about 3 s before it reconnects


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium for the module (starting one takes about a second)."""
    if os.environ.get("RIG_SKIP_BROWSER") == "1":
        pytest.skip("RIG_SKIP_BROWSER=1")
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the browser tests need {' and '.join(missing)}: apt-get install chromium "
            "chromium-driver (.ci/run does), or set RIG_SKIP_BROWSER=1 to skip them",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --ignore-certificate-errors: the HTTPS test's certificate is self-signed
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1000,1300", "--disable-gpu", "--ignore-certificate-errors"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # belt and braces: the driver path skips the manager
        chrome = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(WAIT)
    yield chrome
    chrome.quit()


class Page:
    """The browser, seen from the reactor: every WebDriver call runs in a thread."""

    def __init__(self, chrome, gateway=None):
        self.chrome = chrome
        self.gateway = gateway

    async def open(self, gateway, name):
        self.gateway = gateway
        await deferToThread(self.chrome.get, gateway.url(f"/_rig/examples/{name}"))

    async def until(self, condition, what, timeout=WAIT):
        """Poll ``condition(chrome)`` until it is truthy, and return its value."""

        def wait():
            try:
                return WebDriverWait(
                    self.chrome, timeout, poll_frequency=0.05,
                    ignored_exceptions=(StaleElementReferenceException,),
                ).until(condition)
            except TimeoutException:
                status = self.chrome.execute_script(
                    "const s = document.getElementById('status'); return s && s.textContent;")
                raise AssertionError(
                    f"waited {timeout} s for {what}; the page's status: {status!r}") from None

        return await deferToThread(wait)

    async def text_containing(self, element_id, expected, timeout=WAIT):
        def condition(chrome):
            text = chrome.find_element(By.ID, element_id).text
            return text if expected in text else None

        return await self.until(condition, f"#{element_id} to contain {expected!r}", timeout)

    async def text(self, element_id):
        return await deferToThread(lambda: self.chrome.find_element(By.ID, element_id).text)

    async def fill(self, element_id, value):
        def fill():
            element = self.chrome.find_element(By.ID, element_id)
            element.clear()
            element.send_keys(value)

        await deferToThread(fill)

    async def click(self, element_id):
        await deferToThread(lambda: self.chrome.find_element(By.ID, element_id).click())

    def events_now(self, chrome, event_type):
        """The ``data`` of each listed event of *event_type*, in page order."""
        texts = chrome.execute_script(
            "return Array.from(document.querySelectorAll("
            "`#events li[data-type='${arguments[0]}'] code`), (code) => code.textContent);",
            event_type)
        return [json.loads(text) for text in texts]

    async def events(self, event_type, count, timeout=WAIT):
        """Wait until *count* events of *event_type* are listed; return them all."""

        def condition(chrome):
            found = self.events_now(chrome, event_type)
            return found if len(found) >= count else None

        return await self.until(condition, f"{count} {event_type} events listed", timeout)

    async def subscribe(self, event_type, field, value):
        """Use the page's form; return once the PUT answered and the new set is shown."""
        await self.fill("event-type", event_type)
        await self.fill("field", field)
        await self.fill("value", value)
        await self.click("subscribe")
        assert (await self.text_containing("subscribe-status", "204")).startswith("204")
        clause = json.dumps({field: value}, separators=(",", ":"))
        await self.text_containing("subscriptions", clause)

    async def screenshot(self, name):
        folder = ARTIFACTS / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (re.sub(r"[^\w.-]+", "-", name).strip("-") + ".png")
        await deferToThread(self.chrome.save_screenshot, str(path))
        return path


@pytest_twisted.async_yield_fixture
async def page(driver, make_gateway, request):
    """The module's browser for one test; afterwards a screenshot, then a blank page,
    so no connection outlives the test's gateway (stopped after this teardown)."""
    browser = Page(driver)
    yield browser
    try:
        await browser.screenshot(request.node.name)
        await deferToThread(driver.delete_all_cookies)  # no long-poll session leaks onward
        await deferToThread(driver.get, "about:blank")
    except WebDriverException as error:  # do not hide the test's own failure
        print(f"browser teardown failed: {error}")


def names(events):
    return [event["name"] for event in events]


def quickstart_event():
    """The event the README's quick start publishes with curl."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    match = re.search(r"-d '(\{[^']*\})' http://localhost:4000/_rig/v1/events", readme)
    assert match, "README.rst: no quick-start curl publish line found"
    return json.loads(match.group(1))


@pytest.mark.parametrize("name", ["sse", "ws", "longpolling"])
@pytest_twisted.ensureDeferred
async def test_transport_page_subscribes_and_lists_matching_events(make_gateway, page, name):
    gateway = make_gateway(examples_enabled=True)
    await page.open(gateway, f"{name}.html")
    assert (await page.text_containing("subscriptions", "greeting")) == (
        '[{"eventType":"greeting","oneOf":[]}]')
    assert await page.text("token") != "(none yet)"
    assert await page.text("status") in ("connected", "polling", "session created, polling")

    # The page's default subscription takes the README's quick-start event.
    await gateway.publish(quickstart_event())
    assert names(await page.events("greeting", 1)) == ["alice"]

    await page.subscribe("greeting", "name", "bob")
    await gateway.publish(greeting("carol", "c1"))  # no longer subscribed
    await gateway.publish(greeting("bob", "b1"))
    # Events arrive in order, so carol's would be listed before bob's.
    assert names(await page.events("greeting", 2)) == ["alice", "bob"]


@pytest_twisted.ensureDeferred
async def test_jwt_page_shows_the_inferred_subscriptions(make_gateway, page):
    gateway = make_gateway(examples_enabled=True, jwt_secret_key="mysecret")
    await page.open(gateway, "jwt.html")

    await page.fill("jwt", make_jwt({"username": "mallory"}, secret="not-the-secret"))
    await page.click("connect")
    refusal = await page.text_containing("status", "refused")
    assert refusal.startswith("refused: 400 could not parse subscriptions: could not decode JWT")

    await page.fill("jwt", make_jwt({"username": "alice"}))
    await page.click("connect")
    inferred = await page.text_containing("subscriptions", "alice")
    assert json.loads(inferred) == [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
    assert json.loads(await page.text("claims"))["username"] == "alice"
    assert await page.text("status") == "connected"

    await gateway.publish(greeting("bob", "b1"))
    await gateway.publish(greeting("alice", "a1"))
    assert names(await page.events("greeting", 1)) == ["alice"]


@pytest_twisted.ensureDeferred
async def test_publish_page_reaches_an_sse_client(make_gateway, page):
    gateway = make_gateway(examples_enabled=True)
    client = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await client.welcome()
    await page.open(gateway, "publish.html")

    await page.fill("event-id", "from-the-browser")
    await page.fill("data", '{"name": "zoe"}')
    await page.click("publish")
    assert (await page.text_containing("publish-status", "202")) == "202 Accepted"

    event = await client.next_event()
    assert (event["type"], event["source"], event["id"], event["data"]) == (
        "greeting", "examples", "from-the-browser", {"name": "zoe"})
    assert json.loads(await page.text("response"))["id"] == "from-the-browser"
    assert "curl -i" in await page.text("curl")
    assert await page.text("event-id") != "from-the-browser"  # a fresh id for the next one


@pytest_twisted.ensureDeferred
async def test_index_page_links_every_example(make_gateway, page):
    gateway = make_gateway(examples_enabled=True)
    await page.open(gateway, "")
    links = await deferToThread(lambda: [
        link.get_attribute("href")
        for link in page.chrome.find_elements(By.CSS_SELECTOR, "#examples a")])
    assert [link.rsplit("/", 1)[1] for link in links] == [
        "sse.html", "ws.html", "longpolling.html", "jwt.html", "publish.html", "recovery.html"]
    for link in links:
        response = await gateway.request("GET", urlsplit(link).path)
        assert response.code == 200, link
    assert gateway.url("/_rig/v1/events") in await page.text("quickstart")


@pytest_twisted.ensureDeferred
async def test_recovery_page_resumes_with_last_event_id(make_gateway, page):
    gateway = make_gateway(examples_enabled=True)
    await page.open(gateway, "recovery.html")
    await page.events("rig.subscriptions_set", 1)
    assert await page.text("connects") == "1"
    await gateway.publish(greeting("before", "r1"))
    assert names(await page.events("greeting", 1)) == ["before"]

    streams = [c for c in gateway.hub.connections.values() if c.kind == "sse"]
    assert len(streams) == 1
    streams[0].close()  # the server ends the stream; the browser will reconnect
    await gateway.publish(greeting("missed-1", "r2"))
    await gateway.publish(greeting("missed-2", "r3"))

    await page.text_containing("connects", "2", timeout=RECONNECT_WAIT)
    assert await page.text("recovered") == "true"
    assert names(await page.events("greeting", 3)) == ["before", "missed-1", "missed-2"]
    await gateway.publish(greeting("after", "r4"))
    assert names(await page.events("greeting", 4)) == ["before", "missed-1", "missed-2", "after"]


@pytest_twisted.ensureDeferred
async def test_swagger_ui_shows_every_operation_from_local_files(make_gateway, page):
    """Swagger UI (issue 16) reads the OpenAPI 3.1 document and lists every operation;
    everything the page loaded came from the gateway itself, so it works offline."""
    from rig.web.openapi import build_document

    gateway = make_gateway()
    await deferToThread(page.chrome.get, gateway.url("/swagger-ui", internal=True))
    expected = sorted(
        (method.upper(), path) for path, item in build_document()["paths"].items()
        for method in ("get", "put", "post", "delete", "options") if method in item)

    def operations(chrome):
        blocks = chrome.find_elements(By.CSS_SELECTOR, ".opblock-summary")
        shown = sorted(
            (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
             block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
                 "data-path"))
            for block in blocks)
        return shown if len(shown) == len(expected) else None

    assert await page.until(operations, "every operation listed") == expected
    origin = gateway.url("", internal=True)
    loaded = await deferToThread(page.chrome.execute_script, (
        "return performance.getEntriesByType('resource').map((entry) => entry.name);"))
    assert loaded and all(url.startswith(origin + "/swagger-ui/") for url in loaded), loaded
    errors = await deferToThread(page.chrome.find_elements, By.CSS_SELECTOR, ".errors-wrapper")
    assert not errors


@pytest_twisted.ensureDeferred
async def test_ten_sse_pages_of_one_https_origin_all_receive_events(make_gateway, page,
                                                                    tmp_path):
    """Over HTTP/1.1 a browser holds six connections per origin: the seventh page would
    not even load while six SSE streams are open. Over HTTP/2 (ALPN on the HTTPS
    listener) the ten streams share a connection."""
    cert = make_certificate(tmp_path)
    gateway = make_gateway(examples_enabled=True, inbound_https_listen="tcp:0:interface=127.0.0.1",
                           https_certfile=cert.certfile, https_keyfile=cert.keyfile)
    port = gateway.service.address("inbound_https").port
    url = f"https://127.0.0.1:{port}/_rig/examples/sse.html"
    chrome = page.chrome
    handles = []

    def open_tabs():
        for number in range(10):
            if number:
                chrome.switch_to.new_window("tab")
            chrome.get(url)
            handles.append(chrome.current_window_handle)

    try:
        await deferToThread(open_tabs)
        await eventually(reactor, lambda: len(gateway.hub.connections) == 10,
                         what="ten SSE connections")
        site = gateway.service.getServiceNamed("inbound").factory
        channels = list(site._channels)  # Chromium may open a spare connection or two
        assert {type(channel) for channel in channels} == {H2Channel}
        assert len(channels) < 6  # fewer than the streams, fewer than HTTP/1.1's limit
        await gateway.publish(quickstart_event())
        for handle in handles:
            await deferToThread(chrome.switch_to.window, handle)
            assert names(await page.events("greeting", 1)) == ["alice"]
    finally:
        def close_tabs():
            for handle in handles[1:]:
                chrome.switch_to.window(handle)
                chrome.close()
            if handles:
                chrome.switch_to.window(handles[0])

        await deferToThread(close_tabs)
