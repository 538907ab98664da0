"""The live dashboard in headless Chromium (issue 16): traffic in, the page's numbers move.

Uses the browser fixtures of :mod:`tests.test_browser` (Debian's chromium and
chromedriver, Selenium calls in threads, a screenshot per test in
``artifacts/screenshots/``).
"""
import pytest_twisted
from selenium.webdriver.common.by import By
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from tests.support import greeting, subs_query, within
from tests.test_browser import driver, page  # noqa: F401  (fixtures)
from tests.test_e2e_proxy import api, echo, endpoint

RATE_IDS = ("received-rate", "deliveries-rate", "proxy-rate")


class Traffic:
    """Events published and requests proxied a few times a second, until stopped."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.sent = 0
        self._loop = LoopingCall(self._send)
        self._loop.clock = reactor

    def start(self):
        self._done = self._loop.start(0.2)

    async def _send(self):
        self.sent += 1
        await self.gateway.publish(greeting("alice", f"e{self.sent}"))
        response = await self.gateway.request("GET", "/books")
        await within(response.content())

    async def stop(self):
        self._loop.stop()
        await self._done


def number(text):
    """A figure as the page writes it ("12", "3.5", "1.2k"); None for a dash."""
    text = text.strip()
    if text in ("", "\u2013"):  # an en dash: no figure yet
        return None
    scale = {"k": 1e3, "M": 1e6}.get(text[-1], 1)
    return float(text.rstrip("kM")) * scale


@pytest_twisted.ensureDeferred
async def test_dashboard_numbers_move_with_traffic(make_gateway, stub_server, page):  # noqa: F811
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("list", "GET", "/books")),))
    await deferToThread(page.chrome.get, gateway.url("/dashboard", internal=True))
    assert await page.text_containing("status", "live") == "live"
    assert await page.text("connections-total") == "0"
    assert await page.text("received-total") == "0"
    assert "no proxied requests yet" in await page.text("proxy-table")
    assert "single node" in await page.text("members-table")

    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    sse = await gateway.sse(query)
    await sse.welcome()
    for _ in range(2):
        await (await gateway.ws(query)).welcome()
    traffic = Traffic(gateway)
    traffic.start()
    try:
        await page.text_containing("connections-total", "3")
        assert (await page.text("connections-ws"), await page.text("connections-sse")) == (
            "2", "1")

        def moving(chrome):
            figures = {name: number(chrome.find_element(By.ID, name).text)
                       for name in ("received-total", "deliveries-total", "proxy-total",
                                    *RATE_IDS)}
            return figures if all(figures.values()) else None

        figures = await page.until(moving, "the rates and totals to move")
        assert figures["deliveries-total"] >= 3 * figures["received-total"] - 3
        rows = await page.text("proxy-table")
        assert "\nhttp " in rows
        await page.until(lambda chrome: number(chrome.find_element(
            By.ID, "received-total").text) > figures["received-total"], "more events counted")
        # a few seconds of history in the charts for the screenshot
        await page.until(lambda chrome: chrome.execute_script(
            "return state.samples.length") >= 6, "six samples charted", timeout=12)
    finally:
        await traffic.stop()
    path = await page.screenshot("dashboard")
    assert path.stat().st_size > 10_000
