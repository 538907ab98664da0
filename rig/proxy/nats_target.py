"""Proxy endpoints with ``target: "nats"``: the request becomes a CloudEvent on a subject.

As RIG (spec Part B 7.7): the event, with its ``rig`` request metadata, is
published to the endpoint's ``topic``, and the client gets ``202 Accepted.``;
with ``response_from: "nats"`` it is a NATS request, and the first reply's
payload is the answer (``200``, JSON), or ``504`` after
``PROXY_NATS_RESPONSE_TIMEOUT``. Where RIG would wait out the timeout with
nobody subscribed, the server tells at once (no responders) and the client
gets a 503 at once.
"""
import json

from twisted.internet import defer
from twisted.web.server import NOT_DONE_YET

from rig.httputil import JSON, respond
from rig.nats.client import NatsUnavailable, NoResponders, PayloadTooLarge
from rig.proxy.event_target import event_of_request, request_metadata, target_headers
from rig.proxy.gateway import Outcome

TIMED_OUT = "Timed out while waiting for the response."


class NatsTarget:
    """Publishes proxied requests to NATS subjects, or sends them as NATS requests."""

    def __init__(self, client, *, cors, timeout):
        self._client = client
        self._cors = cors
        self._timeout = timeout

    async def handle(self, request, route, outcome=None, trace=None):
        """Publish (or request) the request's event; *outcome* is told how it ended."""
        outcome = outcome if outcome is not None else Outcome()
        headers = target_headers(self._cors)
        if request.method == b"OPTIONS":
            return respond(request, 204, headers=headers)
        event, refused = event_of_request(request, outcome, headers)
        if event is None:
            return refused
        event["rig"] = request_metadata(request, route)
        event.pop("tracestate", None)
        if trace is not None:
            event.update(trace.attributes())
        payload = json.dumps(event).encode("utf-8")
        subject = route.endpoint["topic"]
        waiting = route.endpoint.get("response_from") == "nats"
        try:
            if not waiting:
                self._client.publish(subject, payload)
                return respond(request, 202, "Accepted.", headers=headers)
            answered = self._client.request(subject, payload, self._timeout)
        except PayloadTooLarge as error:
            outcome.status = "bad_request"
            return respond(request, 413, f"Request entity too large: {error}.", headers=headers)
        except NatsUnavailable:
            outcome.status = "unreachable"
            return respond(request, 503, "NATS is unavailable.", headers=headers)
        request.notifyFinish().addErrback(lambda _failure: answered.cancel())
        try:
            reply = await answered
        except defer.TimeoutError:
            outcome.status = "response_timeout"
            return respond(request, 504, TIMED_OUT, headers=headers)
        except NoResponders:
            outcome.status = "unreachable"
            return respond(request, 503, f"Nothing answers on the NATS subject {subject!r}.",
                           headers=headers)
        except NatsUnavailable:
            outcome.status = "unreachable"
            return respond(request, 503, "The NATS connection was lost before the response.",
                           headers=headers)
        except defer.CancelledError:  # the client went away
            outcome.status = None
            return NOT_DONE_YET
        return respond(request, 200, reply, JSON, headers=headers)
