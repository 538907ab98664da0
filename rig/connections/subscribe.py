"""``PUT /_rig/v1/connection/{sse|ws|longpolling}/{token}/subscriptions`` (spec Part B 2.6).

Replace semantics: the new set is what this request's Bearer tokens infer
plus the body's subscriptions; the connection then gets ``rig.subscriptions_set``.
Checks run in RIG's order so every failure gets RIG's status and sentence.
"""
from urllib.parse import unquote

from rig import jsonbounds
from rig.auth.checks import CheckRequest, authorization_tokens
from rig.auth.jwt import InvalidJWT
from rig.httputil import (
    authorization_values,
    cors_headers,
    header,
    preflight,
    request_body,
    respond,
)
from rig.hub.token import InvalidToken
from rig.subscriptions.model import SubscriptionError, parse_subscriptions
from rig.tracing.context import request_trace_context

SUPPORTED = "The following media types are supported by this endpoint: application/json"


def _accepts_json(accept):
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/json", "*/*", "application/*"):
            return True
    return False


def _is_json_content_type(value):
    return value is not None and value.split(";")[0].strip().lower() == "application/json"


async def put_subscriptions(hub, cors, request, kind, token):
    accept = header(request, b"accept")
    if accept is not None and not _accepts_json(accept):
        return respond(request, 406, f"Not acceptable: {accept}. {SUPPORTED}", content_type=None)
    content_type = header(request, b"content-type")
    raw_body = request_body(request)
    try:
        if not _is_json_content_type(content_type):
            raise ValueError("the content-type must be application/json")
        body = jsonbounds.loads(raw_body)
    except ValueError as error:  # includes UnicodeDecodeError and JSONDecodeError
        return respond(request, 400, f"Expected JSON encoded body. ({error})", content_type=None)
    if not isinstance(body, dict) or "subscriptions" not in body:
        return respond(
            request, 400,
            'Expected field "subscriptions" is not present. '
            'Send {"subscriptions": [...]} with content-type application/json.',
            content_type=None,
        )
    cors_header = cors_headers(cors)
    authorization = authorization_values(request)
    if not await hub.auth.subscription_check.allows(
        CheckRequest(raw_body, content_type, authorization, *request_trace_context(request))
    ):
        return respond(request, 403, "Subscription denied.", headers=cors_header)
    try:
        ref = hub.codec.decode(unquote(token))  # a browser's encodeURIComponent sends = as %3D
    except InvalidToken:
        return respond(request, 400, "Invalid connection token.", headers=cors_header)
    bearers = authorization_tokens(authorization, lenient=False)
    if hub.codec.is_local(ref) or hub.remote is None:
        status, text = await apply_subscriptions(hub, ref.local_id, body["subscriptions"],
                                                 bearers)
    else:  # the connection lives on another node: it decides there
        reply = await hub.remote.call_owner(ref, "put-subscriptions", {
            "local_id": ref.local_id, "subscriptions": body["subscriptions"],
            "bearers": bearers,
        })
        status, text = (reply["status"], reply["text"]) if reply else (410, GONE)
    return respond(request, status, text, headers=cors_header)


GONE = "Connection no longer exists."


async def apply_subscriptions(hub, local_id, subscriptions, bearers):
    """Steps 6-9 of the PUT on the node that owns the connection: (status, text).

    The 204 is the client's confirmation, so it waits, as ``rig.subscriptions_set``
    does, until the cluster routes new event types here.
    """
    connection = hub.connections.get(local_id)
    if connection is None:
        return 410, GONE
    claims_list = []
    try:
        for bearer in bearers:
            claims_list.append(hub.auth.validator.claims(bearer))
    except InvalidJWT as error:
        return 400, ("cannot accept subscription request: invalid authorization header: "
                     f"could not decode JWT: {error}")
    try:
        manual = parse_subscriptions(subscriptions)
    except SubscriptionError as error:
        return 400, ("cannot accept subscription request: could not parse given subscriptions: "
                     f"{error}")
    merged = {}
    for claims in claims_list:
        merged.update(claims)
    hub.join_sessions(connection, claims_list)
    confirming = hub.set_subscriptions(connection, hub.subscriptions_from_claims(merged) + manual)
    if confirming is not None and not await confirming:
        return 410, GONE
    return 204, ""


async def put_from_peer(hub, args):
    """The cluster call ``put-subscriptions``: a PUT that another node received."""
    status, text = await apply_subscriptions(
        hub, int(args["local_id"]), args["subscriptions"],
        [str(bearer) for bearer in args["bearers"]])
    return {"status": status, "text": text}


def subscriptions_preflight(cors, request, kind=None, token=None):
    return preflight(request, cors, methods=b"PUT", allow=b"content-type,authorization")
