"""Recovery across nodes: a reconnecting client may land on any node (or worker).

An SSE position is ``<epoch>.<seq>`` and, in a cluster, a node's epoch is
derived from its boot id, so any node can tell which live member a position
belongs to and ask that member (the ``replay`` call) for what came after it.
The asking node adds what it received itself meanwhile, so that nothing
published while the question was on its way is lost.
"""
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.calls import token_boot
from rig.cluster.delegate import IClusterPart
from rig.cluster.membership import ALIVE, SUSPECT
from rig.events import EventError, parse_structured

REPLAY_CALL = "replay"


def history_epoch(boot):
    """The epoch of a member's history positions, from its boot id."""
    return token_boot(boot)[:4].hex()


@implementer(IClusterPart)
class RemoteHistory:
    log = Logger()

    def __init__(self, history, calls, timeout=2.0):
        self._history = history
        self._calls = calls
        self._timeout = timeout
        self.cluster = None
        calls.register(REPLAY_CALL, self._replay)

    def attach(self, cluster):
        self.cluster = cluster

    def detach(self):
        self.cluster = None

    def owner_of(self, last_event_id):
        """The address of the live member whose position *last_event_id* is, or None."""
        epoch, dot, number = (last_event_id or "").rpartition(".")
        cluster = self.cluster
        if not dot or not number.isdigit() or cluster is None or epoch == self._history.epoch:
            return None
        for member in cluster.live_peers():
            if member.state in (ALIVE, SUSPECT) and history_epoch(member.boot) == epoch:
                return member.address
        return None

    def fetch(self, address, last_event_id, event_types):
        """A Deferred of ``(complete, [(position, event)])`` from the member at *address*,
        or None when it does not answer in time."""
        asking = self._calls.call(address, REPLAY_CALL, {
            "since": last_event_id, "types": sorted(event_types)}, timeout=self._timeout)
        return asking.addCallback(self._events)

    def _events(self, reply):
        if reply is None:
            return None
        events = []
        for position, text in reply["events"]:
            try:
                events.append((position.encode("ascii"), parse_structured(text.encode())))
            except EventError as error:
                self.log.warn("Dropped a replayed event: {error}", error=str(error))
        return bool(reply["complete"]), events

    def _replay(self, args):
        """The ``replay`` call: what this node's history holds after a position of ours
        (events of the asked types only; the asker matches them to the connection)."""
        types = {str(name) for name in args["types"]}
        complete, missed = self._history.since(str(args["since"]), types)
        return defer.succeed({
            "complete": complete,
            "events": [[position.decode("ascii"), event.json.decode("utf-8")]
                       for position, event in missed if event.type in types]})
