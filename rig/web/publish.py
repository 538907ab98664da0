"""Event submission over HTTP, shared by ``/_rig/v1/events`` and ``/v3/messages``."""
from rig.events import EventError, parse_http
from rig.web.http import JSON, header, headers_as_text, request_body, respond


def publish_event(hub, request, extra_headers=()):
    """Parse the CloudEvent in *request*, hand it to the hub, answer 202 with it."""
    try:
        event = parse_http(
            header(request, b"content-type"), headers_as_text(request), request_body(request)
        )
    except EventError as error:
        return respond(request, error.status, str(error), headers=extra_headers)
    hub.publish(event)
    return respond(request, 202, event.json, JSON, headers=extra_headers)
