"""The live dashboard in headless Chromium (issue 16): traffic in, the page's numbers move.

The node shown is one of two cluster members and consumes a Redis stream, so
events arrive from all three sources and every part of the page has figures.

Uses the browser fixtures of :mod:`tests.test_browser` (Debian's chromium and
chromedriver, Selenium calls in threads, a screenshot per test in
``artifacts/screenshots/``).
"""
import json

import pytest_twisted
from selenium.webdriver.common.by import By
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from rig.service import RigService
from rig.settings import Settings
from rig.streams.source import parse_redis_url
from rig.testing import eventually
from tests.support import greeting, subs_query, within
from tests.test_browser import RECONNECT_WAIT, driver, page  # noqa: F401  (fixtures)
from tests.test_cluster import start_node
from tests.test_e2e_proxy import api, echo, endpoint

RATE_IDS = ("received-rate", "deliveries-rate", "proxy-rate")


class Traffic:
    """A few times a second: an event published on each node and added to Redis, and a
    request proxied by the node shown; until stopped."""

    def __init__(self, shown, peer, redis):
        self.shown, self.peer, self.redis = shown, peer, redis
        self.sent = 0
        self._loop = LoopingCall(self._send)
        self._loop.clock = reactor

    def start(self):
        self._done = self._loop.start(0.2)

    async def _send(self):
        self.sent += 1
        for copy in range(2):  # different rates from each source: three lines on the chart
            await self.shown.publish(greeting("alice", f"http-{self.sent}-{copy}"))
        await self.peer.publish(greeting("bob", f"cluster-{self.sent}"))
        if self.sent % 2:
            await self.redis.execute_command("XADD", "rig", "*", "event", json.dumps(
                greeting("carol", f"redis-{self.sent}")))
        response = await self.shown.request("GET", "/books")
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
async def test_dashboard_numbers_move_with_traffic(make_gateway, stub_server,
                                                   redis_server, page):  # noqa: F811
    backend = stub_server(echo)
    gateway = start_node(make_gateway, redis_url=parse_redis_url(redis_server.url),
                         proxy_config=(api(backend.port.getHost().port,
                                           endpoint("list", "GET", "/books")),))
    await eventually(reactor, lambda: gateway.service.cluster.membership is not None)
    await deferToThread(page.chrome.get, gateway.url("/dashboard", internal=True))
    assert await page.text_containing("status", "live") == "live"
    assert await page.text("connections-total") == "0"
    assert await page.text("received-total") == "0"
    assert "no proxied requests yet" in await page.text("proxy-table")
    assert "this node" in await page.text("members-table")

    peer = start_node(make_gateway, seeds=[gateway.service.cluster.links.address])
    await page.until(lambda chrome: chrome.find_element(By.ID, "members-table").text.count(
        "alive") == 2, "two alive members listed")
    await eventually(reactor, lambda: gateway.service.cluster.synced and peer.service.cluster
                     .synced, what="both nodes synced")

    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    sse = await gateway.sse(query)
    await sse.welcome()
    for _ in range(2):
        await (await gateway.ws(query)).welcome()
    # (the welcomes above come once the peer routes greetings here)
    redis = await redis_server.client()
    traffic = Traffic(gateway, peer, redis)
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
        assert figures["deliveries-total"] >= 3 * figures["received-total"] - 9
        await page.until(lambda chrome: all(number(chrome.find_element(
            By.ID, f"received-{source}").text) for source in ("http", "cluster", "redis")),
            "events per second from every source")
        assert await page.text("redis-lag") != "?"
        rows = await page.text("proxy-table")
        assert "\nhttp " in rows
        await page.until(lambda chrome: number(chrome.find_element(
            By.ID, "received-total").text) > figures["received-total"], "more events counted")
        # a few seconds of history in the charts for the screenshot
        await page.until(lambda chrome: chrome.execute_script(
            "return state.samples.length") >= 5, "five samples charted", timeout=12)
    finally:
        await traffic.stop()
        await redis.disconnect()
    path = await page.screenshot("dashboard")
    assert path.stat().st_size > 10_000


@pytest_twisted.ensureDeferred
async def test_dashboard_recovers_when_the_gateway_restarts(make_gateway, page):  # noqa: F811
    gateway = make_gateway()
    port = gateway.service.address("internal").port
    await deferToThread(page.chrome.get, gateway.url("/dashboard", internal=True))
    assert await page.text_containing("status", "live") == "live"
    await gateway.publish(greeting("before", "b1"))
    await page.text_containing("received-total", "1")
    started = await deferToThread(page.chrome.execute_script, "return state.started")

    await gateway.service.stopService()
    await page.text_containing("status", "no data")
    again = RigService.build(Settings(inbound_listen="tcp:0:interface=127.0.0.1",
                                      api_listen=f"tcp:{port}:interface=127.0.0.1"), reactor)
    again.startService()
    try:
        assert await page.text_containing("status", "live", timeout=RECONNECT_WAIT) == "live"
        assert await page.text("received-total") == "0"  # the new process's figures
        assert await deferToThread(page.chrome.execute_script,
                                   "return state.started") != started
        await page.screenshot("dashboard-after-restart")
    finally:
        await deferToThread(page.chrome.get, "about:blank")
        await again.stopService()
