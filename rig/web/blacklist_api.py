"""``/v3/session-blacklist`` (and ``/v2``) on the internal API (spec Part B 6.2)."""
import json
import math
from urllib.parse import unquote

from rig.httputil import JSON, respond
from rig.web.params import ParamsError, body_params


class _Invalid(Exception):
    pass


def _session_id(params):
    if "sessionId" not in params or params["sessionId"] is None:
        raise _Invalid('Missing value for "sessionId"')
    value = params["sessionId"]
    if not isinstance(value, str) or not value:
        raise _Invalid(f"Expected non-empty string, got {_shown(value)}")
    return value


MAX_VALIDITY = 10 * 365 * 86400  # ten years, in seconds


def _shown(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:36] + "..."


def _validity(params):
    if "validityInSeconds" not in params or params["validityInSeconds"] is None:
        raise _Invalid('Missing value for "validityInSeconds"')
    value = params["validityInSeconds"]
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid(f"Expected a number, got {_shown(value)}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    else:
        raise _Invalid(f"Expected a number, got {_shown(value)}")
    if (isinstance(number, float) and not math.isfinite(number)) or number <= 0:
        raise _Invalid(f"Expected a positive number, got {_shown(value)}")
    if number > MAX_VALIDITY:
        raise _Invalid(f"Expected at most {MAX_VALIDITY} seconds (ten years),"
                       f" got {_shown(value)}")
    return number


def add_to_blacklist(hub, request):
    try:
        params = body_params(request)
    except ParamsError as error:
        return error.respond(request)
    try:
        session = _session_id(params)
        validity = _validity(params)
    except _Invalid as error:
        return respond(request, 400, str(error), content_type=None)
    expires_at = hub.reactor.seconds() + validity
    hub.auth.blacklist.add(session, expires_at)
    location = request.path.rstrip(b"/") + b"/" + session.encode("utf-8").replace(b"/", b"%2F")
    return respond(request, 201, b"{}", JSON, headers=[
        (b"location", location), (b"access-control-allow-origin", b"*"),
    ])


def check_blacklist(hub, request, session):
    if unquote(session) in hub.auth.blacklist:
        return respond(request, 200, b"{}", JSON)
    return respond(request, 404, "Not found.", content_type=None)
