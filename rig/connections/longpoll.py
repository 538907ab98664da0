"""HTTP long polling: ``/_rig/v1/connection/longpolling`` (spec Part B 2.5).

A session lives on the node that created it; the ``connection_token`` cookie
names it and ``last_event_id`` is the client's cursor into the session's
bounded buffer. A poll with nothing new is parked and answered as soon as an
event arrives, or with an empty list when the wait runs out.
"""
import collections
import json

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from rig import jsonbounds
from rig.connections.frames import longpoll_frame
from rig.connections.setup import SetupError, admit
from rig.httputil import JSON, cors_headers, preflight, respond
from rig.hub.interface import IConnection
from rig.hub.token import InvalidToken
from rig.tracing.context import request_trace_context

FIRST_EVENT = "first_event"


@implementer(IConnection)
class LongPollSession:
    kind = "longpoll"
    framer = staticmethod(longpoll_frame)
    coalesce = False
    log = Logger()

    def __init__(self, hub, local_id, *, buffer_size, wait, ttl, cors):
        self.hub = hub
        self.local_id = local_id
        self.token = hub.token_for(local_id)
        self.buffer = collections.deque(maxlen=buffer_size)
        self.last_active = hub.reactor.seconds()
        self._wait = wait
        self._ttl = ttl
        self._cors = cors
        self._next_id = 1
        self._parked = None  # (request, cursor, timeout call)
        self._answer_call = None
        self._seen = 0  # the newest event id handed to the client
        self._overflowed = False

    def __repr__(self):
        return f"<LongPollSession {self.local_id}>"

    # -- hub connection --------------------------------------------------

    def deliver(self, frame):
        self.write_frame(frame)  # a buffer append: nothing to coalesce

    def write_frame(self, frame):
        buffer = self.buffer
        if len(buffer) == buffer.maxlen and buffer[0][0] > self._seen and not self._overflowed:
            self._overflowed = True  # an event the client has not seen is lost: say so once
            self.hub.slow_client(self, len(buffer), buffer.maxlen, "oldest events dropped",
                                 unit="events")
        buffer.append((self._next_id, frame))
        self._next_id += 1
        if self._parked is not None and self._answer_call is None:
            # answer at the end of this reactor turn, so a burst goes out in one response
            self._answer_call = self.hub.reactor.callLater(0, self._answer_parked)

    def send_rig_event(self, *events):
        for event in events:
            self.deliver(event.json)

    def heartbeat(self):
        """Expire the session an hour (``ttl``) after its last poll."""
        idle = self.hub.reactor.seconds() - self.last_active
        if self._parked is None and idle > self._ttl:
            self.log.debug("Long-poll session {local_id} expired", local_id=self.local_id)
            self.close()

    def close(self, reason=None):
        self.hub.unregister(self)
        self._answer_parked()

    # -- polls -----------------------------------------------------------

    def wait(self, cursor):
        """A Deferred of ``(events, last_id)``: at once when there are events newer than
        *cursor*, else as soon as one arrives, else empty when the wait runs out."""
        self.last_active = self.hub.reactor.seconds()
        events, last_id = self._after(cursor)
        if events:
            return defer.succeed((events, last_id))
        self._answer_parked()  # an older parked poll of the same session gets an empty answer
        waiting = defer.Deferred(self._cancelled)
        timeout = self.hub.reactor.callLater(self._wait, self._answer_parked)
        self._parked = (waiting, cursor, timeout)
        return waiting

    def poll(self, request, cursor):
        """Answer a poll made on this node."""
        waiting = self.wait(cursor)
        request.notifyFinish().addErrback(lambda _failure: waiting.cancel())
        waiting.addCallback(lambda result: self._respond(request, *result))
        waiting.addErrback(lambda failure: failure.trap(defer.CancelledError) and NOT_DONE_YET)
        return waiting

    def _after(self, cursor):
        """The buffered frames newer than *cursor*, and the newest id; all of them now
        count as seen (a client that lost the answer asks again with an older cursor)."""
        since = _event_number(cursor)
        events = [frame for event_id, frame in self.buffer if event_id > since]
        last_id = str(self.buffer[-1][0]) if self.buffer else cursor
        self._seen = max(since, self.buffer[-1][0]) if self.buffer else since
        return events, last_id

    def _answer_parked(self):
        if self._answer_call is not None:
            if self._answer_call.active():
                self._answer_call.cancel()
            self._answer_call = None
        parked, self._parked = self._parked, None
        if parked is None:
            return
        waiting, cursor, timeout = parked
        if timeout.active():
            timeout.cancel()
        self.last_active = self.hub.reactor.seconds()
        waiting.callback(self._after(cursor))

    def _cancelled(self, waiting):
        """The poller went away: forget its parked poll (the session stays)."""
        if self._parked is not None and self._parked[0] is waiting:
            _waiting, _cursor, timeout = self._parked
            self._parked = None
            if timeout.active():
                timeout.cancel()
        self.last_active = self.hub.reactor.seconds()

    def _respond(self, request, events, last_id):
        return poll_response(request, self.token, self._cors, events, last_id)


def _event_number(cursor):
    """A client's cursor as an event id (0 before the first event)."""
    try:
        return int(cursor)
    except (TypeError, ValueError):
        return 0


def poll_response(request, token, cors, events, last_id):
    set_session_cookies(request, token, last_id)
    with_cors(request, cors)
    encoded_id = json.dumps(last_id).encode()
    body = b'{"last_event_id":%s,"events":[%s]}' % (encoded_id, b",".join(events))
    return respond(request, 200, body, JSON, headers=[(b"cache-control", b"no-cache")])


def set_session_cookies(request, token, last_id):
    request.addCookie(b"connection_token", token.encode("ascii"), path=b"/", httpOnly=True)
    request.addCookie(
        b"last_event_id", json.dumps(last_id).encode(), path=b"/", httpOnly=True
    )


def with_cors(request, cors):
    for name, value in cors_headers(cors, credentials=True):
        request.setHeader(name, value)


def _cursor(request):
    raw = request.getCookie(b"last_event_id")
    if raw is None:
        return FIRST_EVENT
    try:
        value = jsonbounds.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return FIRST_EVENT
    return value if isinstance(value, str) else FIRST_EVENT


def _session_ref(hub, request):
    raw = request.getCookie(b"connection_token")
    if not raw:
        return None, None
    token = raw.decode("ascii", "replace")
    try:
        return token, hub.codec.decode(token)
    except InvalidToken:
        return None, None  # an undecodable cookie starts a new session (spec A9)


def serve_longpoll(hub, settings, cors, request):
    """A poll for a live session (here or on the node that owns it), or a new session."""
    token, ref = _session_ref(hub, request)
    if ref is not None:
        session = hub.find(ref)
        if isinstance(session, LongPollSession):
            return session.poll(request, _cursor(request))
        if not hub.codec.is_local(ref) and hub.remote is not None:
            return _remote_poll(hub, settings, cors, request, (token, ref))
    return _new_session(hub, settings, cors, request)


def poll_from_peer(hub, args):
    """The cluster call ``poll``: a poll for a session of ours that landed on another node."""
    session = hub.connections.get(int(args["local_id"]))
    if not isinstance(session, LongPollSession):
        return {"gone": True}

    def answer(result):
        events, last_id = result
        return {"events": [event.decode("utf-8") for event in events], "last_id": last_id}

    return session.wait(str(args["cursor"])).addCallback(answer)


async def _remote_poll(hub, settings, cors, request, session):
    """Polls may land on any node: the owner answers (no sticky sessions needed)."""
    token, ref = session
    calling = hub.remote.call_owner(ref, "poll", {"local_id": ref.local_id,
                                                  "cursor": _cursor(request)},
                                    timeout=settings.longpoll_wait + 5.0)
    request.notifyFinish().addErrback(lambda _failure: calling.cancel())
    try:
        reply = await calling
    except defer.CancelledError:
        return NOT_DONE_YET
    if not reply or reply.get("gone"):
        return await _new_session(hub, settings, cors, request)
    events = [event.encode("utf-8") for event in reply["events"]]
    return poll_response(request, token, cors, events, reply["last_id"])


async def _new_session(hub, settings, cors, request):
    try:
        admission = await admit(hub, request.args, longpoll=True,
                                trace=request_trace_context(request))
    except SetupError as error:
        if error.status != 429:
            with_cors(request, cors)
        return respond(request, error.status, error.message)
    session = LongPollSession(
        hub, hub.new_local_id(),
        buffer_size=settings.longpoll_buffer_size, wait=settings.longpoll_wait,
        ttl=settings.longpoll_session_ttl, cors=cors,
    )
    confirming = admission.join(hub, session)
    if confirming is not None:
        await confirming  # the answer is the client's confirmation
    set_session_cookies(request, session.token, FIRST_EVENT)
    with_cors(request, cors)
    return respond(request, 200, b'"ok"', JSON, headers=[(b"cache-control", b"no-cache")])


def longpoll_preflight(cors, request):
    return preflight(request, cors, methods=b"GET", allow=b"*", credentials=True)
