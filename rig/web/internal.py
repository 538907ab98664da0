"""The internal API listener's resource tree (:4010): health and management."""
import json
from functools import partial

from rig.httputil import JSON, TEXT, respond
from rig.web.apis_api import create_api, delete_api, get_api, list_apis, update_api
from rig.web.blacklist_api import add_to_blacklist, check_blacklist
from rig.web.http import RigSite, Router
from rig.web.metrics_api import serve_metrics
from rig.web.operators import OperatorGuard
from rig.web.publish import publish_event
from rig.web.responses_api import post_response
from rig.web.swagger import SwaggerUI, load_assets


def not_found(request, **_groups):
    return respond(request, 404, b'{"errors":{"detail":"Not found"}}', JSON)


def cluster_view(hub, cluster, request):
    """Members with state, incarnation, address and last-seen; a lone node lists itself."""
    if cluster is None:
        view = {"node": hub.codec.node, "members": [], "interest": {}, "messages": {}}
    else:
        view = cluster.describe()
    return respond(request, 200, json.dumps(view).encode(), JSON)


def readiness(cluster, brokers, request):
    """``/health`` stays RIG's plain ``OK``; this says whether the node is ready (503
    until it has learnt every cluster peer's interest) and which dependency is degraded
    (*brokers*: ``{name: something with .healthy}``, the configured Redis and NATS)."""
    checks = {}
    if cluster is not None:
        checks["cluster"] = "ok" if cluster.synced else "syncing"
    for name, broker in brokers.items():
        checks[name] = "ok" if broker.healthy else "unavailable"
    if checks.get("cluster") == "syncing":
        status, code = "starting", 503
    else:
        degraded = any(state != "ok" for state in checks.values())
        status, code = "degraded" if degraded else "ok", 200
    body = {"status": status, "checks": checks}
    return respond(request, code, json.dumps(body).encode(), JSON)


def health(request):
    return respond(request, 200, b"OK", TEXT)


def internal_resource(hub, settings, store, correlations, metrics, *, cluster=None,
                      redis=None, nats=None, backplane=None, target_policy=None,
                      dashboard=None):
    publish = {b"POST": partial(publish_event, hub)}
    routes = [
        (r"/health", {b"GET": health}),
        (r"/metrics", {b"GET": partial(serve_metrics, metrics)}),
        (r"/v3/messages", publish),
        (r"/v2/messages", publish),
        (r"/v[23]/session-blacklist", {b"POST": partial(add_to_blacklist, hub)}),
        (r"/v[23]/session-blacklist/(?P<session>[^/]+)", {b"GET": partial(check_blacklist, hub)}),
        (r"/v[23]/apis/?", {
            b"GET": partial(list_apis, store),
            b"POST": partial(create_api, store, target_policy),
        }),
        (r"/v[23]/apis/(?P<api_id>[^/]+)", {
            b"GET": partial(get_api, store),
            b"PUT": partial(update_api, store, target_policy),
            b"DELETE": partial(delete_api, store),
        }),
        (r"/v3/responses", {b"POST": partial(post_response, correlations)}),
        (r"/v3/cluster", {b"GET": partial(cluster_view, hub, cluster)}),
        (r"/v3/health", {b"GET": partial(readiness, cluster, {
            name: broker for name, broker in (
                ("redis", redis), ("nats", nats), ("backplane", backplane))
            if broker is not None})}),
    ]
    if dashboard is not None:  # DASHBOARD_ENABLED; without it /dashboard is an unknown path
        routes += dashboard.routes()
    routes += SwaggerUI(load_assets()).routes()
    return Router(routes, fallback=not_found)


def internal_site(hub, settings, store, correlations, metrics, *, cluster=None,
                  redis=None, nats=None, backplane=None, target_policy=None, dashboard=None):
    router = internal_resource(hub, settings, store, correlations, metrics, cluster=cluster,
                               redis=redis, nats=nats, backplane=backplane,
                               target_policy=target_policy, dashboard=dashboard)
    guard = OperatorGuard(router, tokens=settings.api_auth_tokens,
                          client_certificates=bool(settings.api_https_client_ca))
    return RigSite(guard, max_request_bytes=settings.max_request_bytes,
                   header_timeout=settings.http_header_timeout,
                   idle_timeout=settings.http_idle_timeout)
