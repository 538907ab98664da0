"""``SUBSCRIPTION_CHECK`` and ``SUBMISSION_CHECK`` (spec Part B 5.3, 5.4).

A check decides from the request's body, content type and ``Authorization``
values. ``no_check`` allows, ``jwt_validation`` allows when at least one
token is valid, and a URL is asked with a non-blocking POST whose status
decides: 2xx allows, anything else (or no answer within the timeout) denies.
"""
import attrs
from twisted.internet.defer import succeed
from twisted.logger import Logger

from rig.auth.jwt import InvalidJWT
from rig.tracing.tracer import CLIENT, Tracing


@attrs.frozen
class CheckRequest:
    body: bytes
    content_type: str
    authorization: tuple  # the raw Authorization values, in order
    traceparent: str | None = None  # of the request being checked, passed on to a URL check
    tracestate: str | None = None


def authorization_tokens(values, *, lenient):
    """Tokens in Authorization values: ``Bearer x`` entries (and bare tokens when lenient).

    Several headers and comma-separated lists are allowed. For claims only
    ``Bearer `` counts (case-sensitive); the jwt_validation check is lenient.
    """
    tokens = []
    for value in values:
        for raw_entry in value.split(","):
            entry = raw_entry.strip()
            if not entry:
                continue
            scheme, _, rest = entry.partition(" ")
            if rest and (scheme == "Bearer" or (lenient and scheme.lower() == "bearer")):
                tokens.append(rest.strip())
            elif lenient and not rest:
                tokens.append(entry)
    return tokens


class NoCheck:
    def allows(self, request):
        return succeed(True)


@attrs.define
class JWTValidationCheck:
    validator: object

    def allows(self, request):
        for token in authorization_tokens(request.authorization, lenient=True):
            try:
                self.validator.claims(token)
            except InvalidJWT:
                continue
            return succeed(True)
        return succeed(False)


@attrs.define
class ExternalCheck:
    """Asks an external service; its status code decides. The POST carries a
    ``traceparent`` that is a child of the checked request's (a new trace without one)."""

    log = Logger()
    url: str
    post: object  # (url, body, headers) -> Deferred of status code
    clock: object
    timeout: float = 5.0
    tracing: object = attrs.Factory(lambda self: Tracing(self.clock), takes_self=True)
    name: str = "check"

    def allows(self, request):
        trace = self.tracing.start(self.name, request.traceparent, request.tracestate,
                                   kind=CLIENT,
                                   attributes={"url.full": self.url, "http.request.method": "POST"}
                                   if self.tracing.exporting else None)
        headers = {"content-type": request.content_type, **trace.headers()}
        if request.authorization:
            headers["authorization"] = ", ".join(request.authorization)
        asking = self.post(self.url, request.body, headers)
        asking.addTimeout(self.timeout, self.clock)
        return asking.addCallbacks(self._decide, self._unanswered, callbackArgs=(trace,),
                                   errbackArgs=(trace,))

    def _decide(self, status, trace):
        trace.end(status)
        if 200 <= status < 300:
            return True
        if status not in (401, 403):
            self.log.warn("Authorization check {url} answered {status}; denying",
                          url=self.url, status=status)
        return False

    def _unanswered(self, failure, trace):
        why = failure.getErrorMessage() or failure.type.__name__
        trace.end(error=why)
        self.log.warn("Authorization check {url} failed ({why}); denying", url=self.url, why=why)
        return False


def make_check(spec, *, validator, post, clock, timeout, tracing=None, name="check"):
    """The check named by a setting value: no_check, jwt_validation or a URL."""
    if spec == "no_check":
        return NoCheck()
    if spec == "jwt_validation":
        return JWTValidationCheck(validator)
    return ExternalCheck(spec, post, clock, timeout, tracing or Tracing(clock), name)
