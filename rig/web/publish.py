"""Event submission over HTTP, shared by ``/_rig/v1/events`` and ``/v3/messages``."""
from rig.auth.checks import CheckRequest
from rig.events import EventError, parse_http
from rig.httputil import JSON, authorization_values, header, headers_as_text, request_body, respond
from rig.tracing.context import request_trace_context


async def publish_event(hub, request, extra_headers=(), check=None):
    """Parse the CloudEvent in *request*, hand it to the hub, answer 202 with it.

    With a *check* (``SUBMISSION_CHECK`` on the inbound port) the submission
    must be allowed first: 403 ``Submission denied.`` otherwise.
    """
    try:
        event = parse_http(
            header(request, b"content-type"), headers_as_text(request), request_body(request)
        )
    except EventError as error:
        return respond(request, error.status, str(error), headers=extra_headers)
    if check is not None:
        allowed = await check.allows(CheckRequest(
            event.json, "application/json; charset=utf-8", authorization_values(request),
            *request_trace_context(request)
        ))
        if not allowed:
            return respond(request, 403, "Submission denied.", headers=extra_headers)
    hub.stats.received["http"] += 1
    hub.publish(event)
    return respond(request, 202, event.json, JSON, headers=extra_headers)
