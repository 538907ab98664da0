"""A client that stops reading is dropped; everyone else keeps receiving everything."""
import pytest_twisted
from twisted.internet import reactor

from rig.testing import eventually as poll
from tests.support import subs_query, within

ALL = "?subscriptions=" + subs_query([{"eventType": "bulk"}])


def bulk(number):
    padding = "x" * 60_000
    return {"specversion": "1.0", "type": "bulk", "source": "s", "id": str(number),
            "data": padding}


def wait_until(predicate, seconds=10.0):
    return poll(reactor, predicate, seconds)


@pytest_twisted.ensureDeferred
async def test_slow_clients_are_dropped_without_delaying_others(make_gateway):
    gateway = make_gateway(send_queue_limit=200_000)
    slow_sse = await gateway.sse(ALL)
    slow_ws = await gateway.ws(ALL)
    reader = await gateway.ws(ALL)
    await slow_sse.welcome()
    await slow_ws.welcome()
    await reader.welcome()
    slow_sse.transport.pauseProducing()  # stop reading: the gateway's buffer for it grows
    slow_ws.protocol.transport.pauseProducing()
    assert len(gateway.hub.connections) == 3
    for number in range(200):
        await gateway.publish(bulk(number))
        assert (await reader.next_event())["id"] == str(number)
        if len(gateway.hub.connections) == 1:
            break
    await wait_until(lambda: len(gateway.hub.connections) == 1)
    (survivor,) = gateway.hub.connections.values()
    assert survivor.kind == "ws"
    await gateway.publish(bulk("last"))
    assert (await reader.next_event())["id"] == "last"
    slow_sse.transport.resumeProducing()
    await within(slow_sse.closed, 10)
