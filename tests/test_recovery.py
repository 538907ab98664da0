"""Recovery of missed events (issue 7): history, Last-Event-ID and lastEventId."""
import json

import pytest_twisted
from twisted.internet.task import Clock

from rig.events import parse_structured
from rig.recovery import History
from tests.support import greeting, subs_query, within
from tests.test_e2e_longpoll import LP, cookies_of, poll
from tests.test_metrics import metrics

ALICE = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]


def event(event_id, name="alice", event_type="greeting"):
    return parse_structured(json.dumps({
        "specversion": "1.0", "type": event_type, "source": "t", "id": event_id,
        "data": {"name": name}}).encode())


# -- the history on a clock --------------------------------------------------


def test_positions_name_this_epoch_only():
    history = History(Clock(), epoch="e1")
    assert history.record(event("a")) == b"e1.1"
    assert history.record(event("b")) == b"e1.2"
    assert history.position_of("e1.1") == 1
    assert history.position_of("e2.1") is None  # another node, or before a restart
    assert history.position_of("e1.3") is None  # not yet published here
    assert history.position_of("a") == 1  # a CloudEvent id (WebSocket, long polling)
    assert history.position_of("nope") is None


def test_since_returns_what_followed_in_order():
    history = History(Clock(), epoch="e1")
    for name in "abcd":
        history.record(event(name))
    complete, missed = history.since("e1.2")
    assert complete
    assert [(position, e.id) for position, e in missed] == [(b"e1.3", "c"), (b"e1.4", "d")]
    assert history.since("e1.4") == (True, [])
    assert history.since("b")[1][0][1].id == "c"


def test_size_bound_makes_older_positions_incomplete():
    history = History(Clock(), max_events=2, epoch="e1")
    for name in "abcd":
        history.record(event(name))
    assert len(history) == 2
    complete, missed = history.since("e1.1")  # b was evicted: cannot be complete
    assert not complete and [e.id for _, e in missed] == ["c", "d"]
    assert history.since("e1.2")[0]  # everything after b is still here
    assert history.since("a") == (False, [])  # its id is forgotten with it


def test_age_bound_evicts_old_events():
    clock = Clock()
    history = History(clock, max_age=10.0, epoch="e1")
    history.record(event("a"))
    clock.advance(6)
    history.record(event("b"))
    clock.advance(6)
    complete, missed = history.since("e1.0")
    assert not complete and [e.id for _, e in missed] == ["b"]
    assert history.since("e1.1") == (True, [missed[0]])


def test_welcome_ids_are_positions_and_expire():
    clock = Clock()
    history = History(clock, max_age=10.0, epoch="e1")
    history.record(event("a"))
    history.mark("welcome-1")
    history.record(event("b"))
    complete, missed = history.since("welcome-1")
    assert complete and [e.id for _, e in missed] == ["b"]
    clock.advance(11)
    history.record(event("c"))
    assert history.since("welcome-1") == (False, [])


def test_the_two_ids_of_a_welcome_are_marked_at_once_at_the_same_position():
    clock = Clock()
    history = History(clock, max_age=10.0, epoch="e1")
    history.record(event("a"))
    history.mark("created", "subscribed")
    history.record(event("b"))
    assert history.since("created") == history.since("subscribed")
    assert [e.id for _, e in history.since("created")[1]] == ["b"]


def test_zero_size_keeps_nothing():
    history = History(Clock(), max_events=0, epoch="e1")
    history.record(event("a"))
    history.mark("w")
    assert history.since("e1.1") == (True, [])  # nothing came after it
    assert history.since("e1.0") == (False, [])
    assert history.since("w") == (False, [])


def test_types_of_closed_connections_linger_for_the_history_age():
    clock = Clock()
    history = History(clock, max_age=10.0)
    history.linger({"greeting"})
    clock.advance(9)
    assert history.lingering_types() == {"greeting"}
    clock.advance(2)
    assert history.lingering_types() == set()


def test_in_a_cluster_an_event_id_needs_interest_in_every_type_all_along():
    """Another node may know the event id yet lack the types nobody there wanted."""
    clock = Clock()
    history = History(clock, epoch="e1")
    history.note_interest({"greeting"})
    clock.advance(3)
    history.record(event("a"))
    history.mark("welcome-1")
    history.record(event("b"))
    assert history.since("a", {"greeting"}) == (True, history.since("e1.1")[1])
    assert history.since("a", {"greeting", "news"})[0] is False  # never wanted here
    assert history.since("e1.1", {"news"})[0] is True  # this node's own position
    assert history.since("welcome-1", {"news"})[0] is True  # and its own welcome id
    history.note_interest({"greeting", "news"})
    clock.advance(1)
    history.record(event("c", event_type="news"))
    assert history.since("c", {"news"})[0] is False  # peers may not have known yet
    clock.advance(3)
    history.record(event("d", event_type="news"))
    assert history.since("d", {"news", "greeting"})[0] is True
    history.note_interest({"news"})
    assert history.since("d", {"greeting"})[0] is False  # interest ended: gap possible


# -- end to end ---------------------------------------------------------------


async def publish_names(gateway, *names):
    for name in names:
        await gateway.publish(greeting(name, f"{name}-id"))


@pytest_twisted.ensureDeferred
async def test_sse_reconnect_with_last_event_id_gets_exactly_the_missed_events(gateway):
    query = "?subscriptions=" + subs_query(ALICE)
    first = await gateway.sse(query)
    await first.welcome()
    await gateway.publish(greeting("alice", "a1"))
    seen = await first.next_message()
    assert seen["data"]["id"] == "a1"
    first.disconnect()
    await within(first.closed)
    await gateway.publish(greeting("alice", "a2"))
    await gateway.publish(greeting("bob", "b1"))  # does not match: not replayed
    await gateway.publish(greeting("alice", "a3"))
    second = await gateway.sse(query, headers=[("Last-Event-ID", seen["id"])])
    created = await second.next_event()
    assert created["type"] == "rig.connection.create"
    assert created["data"]["recovered"] is True
    assert (await second.next_event())["type"] == "rig.subscriptions_set"
    replayed = [await second.next_message() for _ in range(2)]
    assert [m["data"]["id"] for m in replayed] == ["a2", "a3"]
    assert replayed[1]["id"] == gateway.hub.history.position_id().decode()
    await gateway.publish(greeting("alice", "a4"))  # then live events, nothing twice
    assert (await second.next_event())["id"] == "a4"
    assert second.body.count(b'"id": "a3"') == 1
    scraped = await metrics(gateway)
    assert scraped.value("rig_recoveries_total", outcome="complete") == 1
    assert scraped.value("rig_recoveries_total", outcome="incomplete") == 0
    assert scraped.value("rig_replayed_events_total") == 2
    assert scraped.value("rig_history_events") == 5


@pytest_twisted.ensureDeferred
async def test_sse_reconnect_after_nothing_but_the_welcome(gateway):
    query = "?subscriptions=" + subs_query(ALICE)
    first = await gateway.sse(query)
    await first.next_message()
    subscriptions_set = await first.next_message()  # what a browser remembers
    first.disconnect()
    await gateway.publish(greeting("alice", "a1"))
    second = await gateway.sse(query, headers=[("Last-Event-ID", subscriptions_set["id"])])
    created = await second.next_event()
    assert created["data"]["recovered"] is True
    await second.next_event()
    assert (await second.next_event())["id"] == "a1"


@pytest_twisted.ensureDeferred
async def test_an_id_older_than_the_history_is_not_recovered(make_gateway):
    gateway = make_gateway(recovery_history_size=2)
    query = "?subscriptions=" + subs_query(ALICE)
    first = await gateway.sse(query)
    await first.welcome()
    await gateway.publish(greeting("alice", "a1"))
    last = (await first.next_message())["id"]
    first.disconnect()
    for name, event_id in (("alice", "a2"), ("bob", "b1"), ("alice", "a3")):
        await gateway.publish(greeting(name, event_id))  # three: a2 falls out
    second = await gateway.sse(query, headers=[("Last-Event-ID", last)])
    created = await second.next_event()
    assert created["data"]["recovered"] is False
    await second.next_event()
    # what the history still has is sent anyway: the client may deduplicate
    assert (await second.next_event())["id"] == "a3"


@pytest_twisted.ensureDeferred
async def test_unknown_id_is_not_recovered_and_a_plain_connect_says_nothing(gateway):
    query = "?subscriptions=" + subs_query(ALICE)
    resumed = await gateway.sse(query + "&lastEventId=someone-elses.7")
    created = await resumed.next_event()
    assert created["data"]["recovered"] is False
    plain = await gateway.sse(query)
    created = await plain.next_event()
    assert "recovered" not in created["data"]  # RIG's welcome, byte for byte


@pytest_twisted.ensureDeferred
async def test_websocket_resumes_from_a_cloudevent_id(gateway):
    query = "?subscriptions=" + subs_query(ALICE)
    first = await gateway.ws(query)
    await first.welcome()
    await gateway.publish(greeting("alice", "w1"))
    assert (await first.next_event())["id"] == "w1"
    first.disconnect()
    await publish_names(gateway, "bob", "alice")
    second = await gateway.ws(query + "&lastEventId=w1")
    created = await second.next_event()
    assert created["data"]["recovered"] is True
    await second.next_event()
    assert (await second.next_event())["id"] == "alice-id"


@pytest_twisted.ensureDeferred
async def test_websocket_resumes_from_its_welcome_event_id(gateway):
    query = "?subscriptions=" + subs_query(ALICE)
    first = await gateway.ws(query)
    await first.next_event()
    subscriptions_set = await first.next_event()
    first.disconnect()
    await publish_names(gateway, "alice")
    second = await gateway.ws(query + "&lastEventId=" + subscriptions_set["id"])
    assert (await second.next_event())["data"]["recovered"] is True
    await second.next_event()
    assert (await second.next_event())["id"] == "alice-id"


@pytest_twisted.ensureDeferred
async def test_long_polling_new_session_resumes_from_last_event_id(gateway):
    await gateway.publish(greeting("alice", "l1"))
    await publish_names(gateway, "bob", "alice")
    query = "?subscriptions=" + subs_query(ALICE) + "&lastEventId=l1"
    response = await gateway.request("GET", LP + query)
    assert response.code == 200
    await within(response.text())
    body, _ = await poll(gateway, cookies_of(response))
    created, subscriptions, replayed = body["events"]
    assert created["data"]["recovered"] is True
    assert subscriptions["type"] == "rig.subscriptions_set"
    assert replayed["id"] == "alice-id"


# -- resuming on another node ---------------------------------------------------


class RecordingConnection:
    coalesce = False
    kind = "sse"

    def __init__(self, hub):
        self.local_id = hub.new_local_id()
        self.token = hub.token_for(self.local_id)
        self.received = []  # rig event types, and (position, event id) of events

    def framer(self, event, position):
        return (position, event.id)

    def deliver(self, frame):
        self.received.append(frame)

    write_frame = deliver

    def send_rig_event(self, *rig_events):
        for rig_event in rig_events:
            self.received.append((rig_event.type, rig_event.document.get("data")))


class FakeRemoteHistory:
    """The node a client left: its positions start with ``gone.``; answers on demand."""

    def __init__(self):
        from twisted.internet.defer import Deferred

        self.asked = []
        self._deferred = Deferred

    def owner_of(self, last_event_id):
        return "peer:1" if last_event_id.startswith("gone.") else None

    def fetch(self, address, last_event_id, event_types):
        waiting = self._deferred()
        self.asked.append((address, last_event_id, sorted(event_types), waiting))
        return waiting


def test_a_position_of_another_node_is_replayed_from_there_plus_what_came_here_meanwhile():
    from rig.hub import Hub
    from rig.subscriptions.model import Subscription

    clock = Clock()
    hub = Hub(clock, history=History(clock, epoch="here"))
    hub.remote_history = remote = FakeRemoteHistory()
    hub.publish(event("old"))  # before the client came back: not for it
    connection = RecordingConnection(hub)
    pending = hub.register(connection, [Subscription("greeting")], resume="gone.5")
    assert [asked[:3] for asked in remote.asked] == [("peer:1", "gone.5", ["greeting"])]
    assert connection.received == []  # nothing before the answer
    hub.publish(event("meanwhile"))  # while the question was on its way
    hub.publish(event("other", name="bob", event_type="news"))
    remote.asked[0][3].callback((True, [(b"gone.6", event("away")),
                                        (b"gone.7", event("meanwhile"))]))
    assert pending.called
    create, subscriptions_set, *events = connection.received
    assert create == ("rig.connection.create",
                      {"connection_token": connection.token, "recovered": True})
    assert subscriptions_set[0] == "rig.subscriptions_set"
    assert events == [(b"gone.6", "away"), (b"gone.7", "meanwhile")]  # each once
    hub.publish(event("live"))
    clock.advance(0)  # live frames go out at the end of the reactor turn
    assert connection.received[-1] == (b"here.4", "live")


def test_a_node_that_does_not_answer_gives_what_came_here_and_recovered_false():
    from rig.hub import Hub
    from rig.subscriptions.model import Subscription

    clock = Clock()
    hub = Hub(clock, history=History(clock, epoch="here"))
    hub.remote_history = remote = FakeRemoteHistory()
    connection = RecordingConnection(hub)
    hub.register(connection, [Subscription("greeting")], resume="gone.5")
    hub.publish(event("meanwhile"))
    remote.asked[0][3].callback(None)  # timed out
    create, _subscriptions_set, *events = connection.received
    assert create[1]["recovered"] is False
    assert events == [(b"here.1", "meanwhile")]
    other = RecordingConnection(hub)
    hub.register(other, [Subscription("greeting")], resume="elsewhere.5")  # nobody's: local
    assert other.received[0][1]["recovered"] is False and len(remote.asked) == 1
