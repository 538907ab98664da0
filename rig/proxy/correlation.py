"""Requests waiting for an asynchronous answer (``response_from: http_async``).

A correlation id is a token like a connection token (node, boot id, local
id, authenticated with ``NODE_COOKIE``) but keyed for this purpose only, so a
connection token can never be passed off as a correlation id.
"""
import base64
import itertools

from twisted.internet import defer


class Correlations:
    def __init__(self, reactor, codec):
        self._reactor = reactor
        self.codec = codec
        self._waiting = {}
        self._ids = itertools.count(1)
        self.remote = None  # calls to other nodes, in a cluster (see join_cluster)

    def join_cluster(self, calls):
        """Answers for requests waiting on other nodes go through *calls*."""
        self.remote = calls

    def open(self, timeout):
        """A new correlation id and a Deferred of its answer (TimeoutError after *timeout*)."""
        local_id = next(self._ids)
        answered = defer.Deferred(lambda _d: self._waiting.pop(local_id, None))
        self._waiting[local_id] = answered
        answered.addTimeout(timeout, self._reactor)
        answered.addBoth(self._forget, local_id)
        return self.codec.encode(local_id), answered

    def deliver(self, ref, answer):
        """Hand *answer* to the request *ref* names; False if it is not waiting (any more)."""
        if not self.codec.is_local(ref):
            return False
        answered = self._waiting.pop(ref.local_id, None)
        if answered is None:
            return False
        answered.callback(answer)
        return True

    def answer(self, ref, answer):
        """Hand *answer* to the waiting request *ref* names, here or on its owning node
        (answers arriving for a gone request are dropped: that client timed out)."""
        if self.deliver(ref, answer) or self.codec.is_local(ref) or self.remote is None:
            return
        routing = self.remote.call_owner(ref, "async-response", {
            "local_id": ref.local_id, "status": answer.status,
            "headers": [[name.decode("latin-1"), value.decode("latin-1")]
                        for name, value in answer.headers],
            "body": base64.b64encode(answer.body).decode("ascii"),
        })
        routing.addErrback(lambda _failure: None)

    def answer_from_peer(self, args):
        """The cluster call ``async-response``: an answer another node received for
        one of our waiting requests."""
        from rig.proxy.gateway import AsyncAnswer

        answered = self._waiting.pop(int(args["local_id"]), None)
        if answered is None:
            return {"delivered": False}
        headers = tuple((name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in args["headers"])
        answered.callback(AsyncAnswer(int(args["status"]), headers,
                                      base64.b64decode(args["body"])))
        return {"delivered": True}

    def cancel(self, correlation_id):
        try:
            ref = self.codec.decode(correlation_id)
        except ValueError:
            return
        answered = self._waiting.pop(ref.local_id, None)
        if answered is not None:
            answered.cancel()

    def __len__(self):
        return len(self._waiting)

    def _forget(self, result, local_id):
        self._waiting.pop(local_id, None)
        return result
