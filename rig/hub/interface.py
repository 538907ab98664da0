"""What the hub needs of a connection, whatever its transport (WebSocket, SSE, long polling).

Transports differ only in framing and in how they write; the hub keeps its
own bookkeeping (subscriptions, sessions, expiry) in its records, never on
the connection.
"""
from zope.interface import Attribute, Interface


class IConnection(Interface):
    local_id = Attribute("This node's number for the connection (an int).")
    token = Attribute("The connection token the client uses for the subscriptions PUT.")
    kind = Attribute('"ws", "sse" or "longpoll": metrics and logs group by it.')
    framer = Attribute(
        "``framer(event, position) -> bytes``: one function per transport kind, so a"
        " broadcast frames an event once per kind (*position* is the SSE ``id:``).")
    coalesce = Attribute(
        "True when frames queued in one reactor turn may be joined into one write.")

    def deliver(frame):
        """Queue *frame* (from ``framer``) for this connection."""

    def write_frame(data):
        """Write frames now (the outbox's flush); a slow client is dropped here."""

    def send_rig_event(*events):
        """Send RIG's own events (``rig.connection.create``, ...), in order: where the
        transport allows, in one frame (a welcome is two)."""

    def heartbeat():
        """Called every heartbeat interval: ping, comment, or expire an idle session."""

    def close(reason):
        """Close with a ``rig.hub.closing`` reason; a Deferred that fires once it is gone
        (WebSockets wait for the closing handshake), or None."""
