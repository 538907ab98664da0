"""Calls to the node that owns a connection or a waiting request, by operation name.

A connection token or a correlation id names its node and that node's boot;
any node can then ask the owner to run an operation (apply a subscriptions
PUT, answer a long poll, hand over an async proxy response) and wait for the
reply. Operations are registered by the composition root, so the cluster
depends on nothing that the operations touch.
"""
import hashlib
import itertools

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.delegate import IClusterPart
from rig.cluster.membership import ALIVE, SUSPECT

CALL = "rig.call"
REPLY = "rig.reply"


def token_boot(boot):
    """The 8 bytes of a member's boot id that its tokens carry."""
    return hashlib.sha256(boot.encode("utf-8")).digest()[:8]


@implementer(IClusterPart)
class OwnerCalls:
    log = Logger()

    def __init__(self, clock, timeout=5.0):
        self._clock = clock
        self._timeout = timeout
        self._operations = {}
        self._waiting = {}
        self._ids = itertools.count(1)
        self.cluster = None

    def register(self, op, operation):
        """Run ``operation(args)`` (a result or a Deferred of one) when a peer calls *op*."""
        self._operations[op] = operation

    def attach(self, cluster):
        self.cluster = cluster
        cluster.handle(CALL, self._on_call)
        cluster.handle(REPLY, self._on_reply)

    def detach(self):
        self.cluster = None

    def owner_address(self, ref):
        """The address of the live member *ref* (a token's node and boot) names, or None."""
        cluster = self.cluster
        member = cluster.member(ref.node) if cluster is not None else None
        if member is None or member.state not in (ALIVE, SUSPECT):
            return None
        if token_boot(member.boot) != ref.boot_id or member.name == cluster.node_name:
            return None  # a restarted node, or our own previous life: that connection is gone
        return member.address

    def call_owner(self, ref, op, args, timeout=None):
        """Ask the owning node to run *op*; a Deferred of its reply, or of None if it
        is gone or does not answer in time (callers answer like a closed connection)."""
        address = self.owner_address(ref)
        if address is None:
            return defer.succeed(None)
        return self.call(address, op, args, timeout)

    def call(self, address, op, args, timeout=None):
        """Ask the member at *address* to run *op*; a Deferred of its reply (None on timeout)."""
        call_id = next(self._ids)
        waiting = defer.Deferred(lambda _d: self._waiting.pop(call_id, None))
        self._waiting[call_id] = waiting
        waiting.addTimeout(timeout or self._timeout, self._clock)
        waiting.addErrback(lambda _failure: self._waiting.pop(call_id, None) and None)
        self.cluster.send(address, {"type": CALL, "id": call_id, "op": op, "args": args})
        return waiting

    def _on_call(self, address, message):
        call_id = message["id"]
        operation = self._operations.get(message["op"])
        if operation is None:
            raise ValueError(f"unknown call {message['op']!r}")
        running = defer.maybeDeferred(operation, message["args"])

        def reply(result):
            if self.cluster is not None:
                self.cluster.send(address, {"type": REPLY, "id": call_id, "result": result})

        running.addCallbacks(reply, self._failed, errbackArgs=(message["op"], address))

    def _failed(self, failure, op, address):
        if failure.check(defer.CancelledError):
            return
        if failure.check(KeyError, TypeError, ValueError, AttributeError):
            self.log.warn("Bad cluster call {op!r} from {address}: {error}", op=op,
                          address=address, error=repr(failure.value))
            return
        self.log.failure("cluster call {op!r} from {address}", failure, op=op, address=address)

    def _on_reply(self, address, message):
        waiting = self._waiting.pop(int(message["id"]), None)
        if waiting is not None:
            waiting.callback(message["result"])
