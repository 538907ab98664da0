"""The OpenAPI 3.1 description of txrig's HTTP API (issue 16), built from Python data.

One document for both listeners: the internal API (``API_HTTP_PORT``, 4010) is
the document's default server, and every inbound path (``INBOUND_PORT``,
4000) names its own server. It describes what the gateway answers, RIG's
quirks included: several error sentences go out without a ``Content-Type``
header, as RIG sends them; their responses carry no ``content`` (OpenAPI has
no way to say "a body without a media type") and their description says so.
``tests/test_openapi.py`` keeps it true to the routers, and
``tests/test_openapi_fuzz.py`` fuzzes the gateway against it.
"""
import copy
import json

TEXT = "text/plain"
JSON = "application/json"

INTERNAL_SERVERS = [{"url": "/", "description": "the internal API (API_HTTP_PORT, 4010)"}]
INBOUND_SERVERS = [{
    "url": "{scheme}://{host}:{port}",
    "description": "the inbound listener (INBOUND_PORT, 4000)",
    "variables": {
        "scheme": {"default": "http", "enum": ["http", "https"]},
        "host": {"default": "localhost"},
        "port": {"default": "4000"},
    },
}]


# -- building blocks ------------------------------------------------------------------

def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description, schema, headers=None):
    response = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _text(description, headers=None):
    response = {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}
    if headers:
        response["headers"] = headers
    return response


RAW = "sent without a Content-Type header, as RIG sends it"


def _raw(description):
    """A body RIG sends without a Content-Type header (a plain sentence)."""
    return {"description": f"{description} The body is a plain sentence {RAW}."}


def _empty(description, headers=None):
    response = {"description": description}
    if headers:
        response["headers"] = headers
    return response


def _header(description, schema=None):
    return {"description": description, "schema": schema or {"type": "string"}}


CORS = {"access-control-allow-origin": _header("The CORS setting (default `*`).")}
TOO_LARGE = _text("The body is over MAX_REQUEST_BYTES: `Request body too large.`")
UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
UNSUPPORTED_MEDIA = {"$ref": "#/components/responses/UnsupportedMedia"}


def _internal(operation, *, guarded=True):
    """An internal-port operation: the token schemes apply, and 401 with them."""
    if guarded:
        operation["security"] = [{}, {"bearerAuth": []}, {"basicAuth": []}]
        operation["responses"]["401"] = UNAUTHORIZED
    return operation


def _body(schema_or_content, required=True):
    content = schema_or_content if "content" in schema_or_content else {
        "content": {JSON: {"schema": schema_or_content}}}
    return dict(content, required=required)


# -- schemas --------------------------------------------------------------------------

_NON_EMPTY = {"type": "string", "minLength": 1}
# Optional fields the gateway checks the type of; null counts as absent.
_FLAG = {"type": ["boolean", "null"]}
_NAME = {"type": ["string", "null"]}

SCHEMAS = {
    "ErrorDetail": {
        "description": "The internal API's framework errors (404, 400 for a malformed body,"
                       " 415 for a body type other than JSON, urlencoded or multipart, 401).",
        "type": "object",
        "required": ["errors"],
        "properties": {"errors": {
            "type": "object", "required": ["detail"],
            "properties": {"detail": {"type": "string"}},
        }},
    },
    "ApiMessage": {
        "type": "object", "required": ["message"],
        "properties": {"message": {"type": "string"}},
        "examples": [{"message": "ok"}, {"message": "API with id=books doesn't exists."}],
    },
    "ApiValidationErrors": {
        "description": "RIG's validation map (spec Part B 7.3): a key (`api`, the API id, or"
                       " `<apiId>/<endpointId>`) to a list of `{field: message}` entries.",
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Endpoint": {
        "type": "object",
        "required": ["id", "method", "path_regex"],
        "properties": {
            "id": _NON_EMPTY,
            "method": {**_NON_EMPTY, "examples": ["GET"]},
            "path_regex": {**_NON_EMPTY, "description": "An RE2 regex matched against the"
                           " whole path, case-insensitively.", "examples": ["/books/(.+)"]},
            "path_replacement": {"type": "string", "examples": ["/v2/books/\\1"]},
            "secured": {**_FLAG, "default": False},
            "transform_request_headers": {**_FLAG, "default": False},
            "target": {"enum": ["http", "nats", "redis"], "default": "http"},
            "topic": _NAME,
            "schema": _NAME,
            "response_from": {"enum": ["http", "http_async", "nats", "redis"],
                              "default": "http"},
        },
    },
    "ApiDefinition": {
        "description": "An API definition (spec Part B 7.2). `id` may be left out of a PUT"
                       " (the path names the API).",
        "type": "object",
        "required": ["id", "name", "version_data", "proxy"],
        "properties": {
            "id": _NON_EMPTY,
            "name": _NON_EMPTY,
            "auth_type": {"enum": ["jwt", "none", None], "default": "none"},
            "auth": {
                "type": ["object", "null"],
                "properties": {
                    "use_header": _FLAG, "header_name": _NAME,
                    "use_query": _FLAG, "query_name": _NAME,
                },
            },
            "versioned": {**_FLAG, "default": False},
            "version_data": {
                "type": "object", "minProperties": 1,
                "additionalProperties": {
                    "type": "object", "required": ["endpoints"],
                    "properties": {
                        "endpoints": {"type": "array", "items": _ref("Endpoint")},
                        "transform_request_headers": {
                            "type": ["object", "null"],
                            "properties": {"add_headers": {
                                "type": ["object", "null"],
                                "additionalProperties": {"type": "string"}}},
                        },
                    },
                },
            },
            "proxy": {
                "type": "object", "required": ["target_url", "port"],
                "properties": {
                    "target_url": _NON_EMPTY,
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "use_env": {**_FLAG, "default": False},
                },
            },
        },
        "examples": [{
            "id": "books", "name": "books",
            "version_data": {"default": {"endpoints": [
                {"id": "get-book", "method": "GET", "path_regex": "/books/(.+)"}]}},
            "proxy": {"target_url": "http://backend.internal", "port": 3000},
        }],
    },
    "StoredApiDefinition": {
        "description": "A definition as stored: what was posted, with RIG's defaults and"
                       " metadata (`active`, `ref_number`, `timestamp`, `node_name`).",
        "type": "object",
        "required": ["id", "name", "version_data", "proxy"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "version_data": {"type": "object"}, "proxy": {"type": "object"},
            "active": {"type": "boolean"}, "ref_number": {"type": "integer"},
            "timestamp": {"type": ["string", "number"]}, "node_name": {"type": "string"},
        },
    },
    "CloudEvent": {
        "description": "A CloudEvent in structured mode (JSON): 1.0, 0.3 or 0.2"
                       " (`specversion`), or 0.1 (`cloudEventsVersion`). The gateway checks"
                       " the required attributes (non-empty strings); the others (`time`,"
                       " the content type, extensions such as `traceparent`) are kept and"
                       " forwarded as they are, unchecked.",
        "anyOf": [_ref("CloudEvent10"), _ref("CloudEvent03"), _ref("CloudEvent02"),
                  _ref("CloudEvent01")],
    },
    "CloudEvent10": {
        "type": "object",
        "required": ["specversion", "type", "source", "id"],
        "properties": {
            "specversion": {"const": "1.0"}, "type": _NON_EMPTY, "source": _NON_EMPTY,
            "id": _NON_EMPTY, "time": {}, "datacontenttype": {}, "data": {},
        },
        "examples": [{"specversion": "1.0", "type": "greeting", "source": "backend",
                      "id": "1", "data": {"name": "alice"}}],
    },
    "CloudEvent03": {
        "description": "0.3: `datacontentencoding: \"base64\"` (the only encoding) says"
                       " that `data` is base64 text; `schemaurl` names its schema.",
        "type": "object",
        "required": ["specversion", "type", "source", "id"],
        "properties": {
            "specversion": {"const": "0.3"}, "type": _NON_EMPTY, "source": _NON_EMPTY,
            "id": _NON_EMPTY, "time": {}, "schemaurl": {}, "datacontenttype": {},
            "datacontentencoding": {"const": "base64"}, "data": {},
        },
    },
    "CloudEvent02": {
        "type": "object",
        "required": ["specversion", "type", "id"],
        "properties": {"specversion": {"const": "0.2"}, "type": _NON_EMPTY, "id": _NON_EMPTY,
                       "source": {}, "contenttype": {}, "data": {}},
    },
    "CloudEvent01": {
        "type": "object",
        "required": ["cloudEventsVersion", "eventType", "eventID"],
        "properties": {"cloudEventsVersion": {"const": "0.1"}, "eventType": _NON_EMPTY,
                       "eventID": _NON_EMPTY, "source": {}, "contentType": {}, "data": {}},
    },
    "PublishedEvent": {
        "description": "The accepted event (as submitted in structured mode, as built from"
                       " the `ce-*` headers in binary mode).",
        "type": "object",
    },
    "Subscription": {
        "description": "An event type (exact match) and optional constraints: OR of clauses,"
                       " each an AND of field == value (spec Part B 3.1, 3.2). Aliases:"
                       " `event_type`; `one_of`, `constraints`.",
        "type": "object",
        "properties": {
            "eventType": _NON_EMPTY,
            "oneOf": {"type": "array", "items": {
                "type": "object", "propertyNames": {"minLength": 1}}},
        },
        "examples": [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}],
    },
    "Subscriptions": {
        "type": "object",
        "required": ["subscriptions"],
        "properties": {"subscriptions": {"type": "array", "items": _ref("Subscription")}},
    },
    "SessionBlacklistEntry": {
        "type": "object",
        "required": ["sessionId", "validityInSeconds"],
        "properties": {
            "sessionId": _NON_EMPTY,
            "validityInSeconds": {
                "description": "Seconds (at most ten years); a numeric string is accepted.",
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 315360000},
                    {"type": "string", "pattern": "^ *[0-9]+(\\.[0-9]+)? *$"},
                ],
            },
        },
        "examples": [{"sessionId": "a-jti", "validityInSeconds": 60}],
    },
    "ClusterView": {
        "description": "This node, the cluster's members (state, incarnation, address, last"
                       " seen), which node wants which event types, and message counters.",
        "type": "object",
        "required": ["node", "members"],
        "properties": {
            "node": {"type": "string"},
            "members": {"type": "array", "items": {"type": "object"}},
            "interest": {"type": "object"},
            "messages": {"type": "object"},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ok", "degraded", "starting"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "LongPollEvents": {
        "type": "object",
        "required": ["last_event_id", "events"],
        "properties": {
            "last_event_id": {"type": "string"},
            "events": {"type": "array", "items": {"type": "object"}},
        },
    },
}

_BY_TRANSPORT = {"type": "object", "additionalProperties": {"type": "number"},
                 "description": "By transport: `ws`, `sse`, `longpoll`."}
_BY_SOURCE = {"type": "object", "additionalProperties": {"type": "number"},
              "description": "By source: `http`, `redis`, `nats`, `cluster`."}
_MS_OR_NULL = {"type": ["number", "null"]}
SCHEMAS["DashboardData"] = {
    "description": "The dashboard's figures: totals now (`current`) and one sample a second"
                   " of the last five minutes (`samples`, rates per second).",
    "type": "object",
    "required": ["node", "started", "time", "interval", "window", "current", "samples"],
    "properties": {
        "node": {"type": "string"},
        "worker": {"type": ["integer", "null"]},
        "workers": {"type": ["object", "null"],
                    "description": "With WORKERS=N: how many workers answered, of how many."},
        "started": {"type": "number", "description": "When the sampler started (epoch s)."},
        "time": {"type": "number"},
        "interval": {"type": "number"},
        "window": {"type": "integer"},
        "latency_window": {"type": "number"},
        "current": {
            "type": "object",
            "required": ["connections", "received", "deliveries", "slow_clients", "proxy"],
            "properties": {
                "connections": _BY_TRANSPORT,
                "received": _BY_SOURCE,
                "deliveries": {"type": "integer"},
                "slow_clients": _BY_TRANSPORT,
                "proxy": {"type": "array", "items": {
                    "type": "object", "required": ["target", "requests"],
                    "properties": {
                        "target": {"type": "string"}, "requests": {"type": "integer"},
                        "rate": {"type": "number"},
                        "latency_ms": {"type": "object",
                                       "additionalProperties": _MS_OR_NULL}}}},
                "cluster": {"type": ["object", "null"]},
                "redis": {"type": ["object", "null"]},
            },
        },
        "samples": {"type": "array", "maxItems": 300, "items": {
            "type": "object", "required": ["t"],
            "properties": {
                "t": {"type": "number"}, "connections": _BY_TRANSPORT, "received": _BY_SOURCE,
                "deliveries": {"type": "number"}, "slow_clients": _BY_TRANSPORT,
                "proxy": {"type": "object"}, "redis_lag": {"type": ["integer", "null"]}}}},
    },
}

SCHEMAS["ApiDefinitionChanges"] = {
    **SCHEMAS["ApiDefinition"],
    "description": "A PUT's definition: the path names the API, a body `id` is overridden.",
    "required": ["name", "version_data", "proxy"],
    "properties": {**SCHEMAS["ApiDefinition"]["properties"],
                   "id": {"description": "Ignored: the path's id wins."}},
}

RESPONSES = {
    "Unauthorized": _json(
        "API_AUTH_TOKENS is set and the request has no valid token (`Authorization: Bearer`,"
        " or HTTP Basic with the token as the password).",
        _ref("ErrorDetail"),
        headers={"www-authenticate": _header(
            "Two challenges: `Bearer realm=\"rig internal API\"` and `Basic realm=\"rig"
            " internal API\", charset=\"UTF-8\"` (so that a browser asks).")}),
    "UnsupportedMedia": _json(
        "A body of another type than JSON, urlencoded or multipart:"
        " `{\"errors\":{\"detail\":\"Bad request\"}}`.", _ref("ErrorDetail")),
}


# -- operations -----------------------------------------------------------------------

def _publish(operation_id, summary, extra=None, check=False):
    responses = {
        "202": _json("Accepted: the event is handed to its subscribers.",
                     _ref("PublishedEvent"), headers=CORS if check else None),
        "400": _text("Not a CloudEvent: a sentence naming the missing or ill-typed"
                     " attribute (or the `ce-specversion` header in binary mode).",
                     headers=CORS if check else None),
        "413": TOO_LARGE,
        "415": _text("Batched mode, or a structured mode other than `+json`.",
                     headers=CORS if check else None),
    }
    if check:
        responses["403"] = _text("SUBMISSION_CHECK said no: `Submission denied.`",
                                 headers=CORS)
    operation = {
        "operationId": operation_id,
        "summary": summary,
        "description": "Structured mode: a JSON CloudEvent (`application/cloudevents+json`, or"
                       " `application/json` without a `ce-specversion` header). Binary mode:"
                       " the attributes in `ce-*` headers and `data` in the body (any other"
                       " content type).",
        "tags": ["events"],
        "requestBody": _body({"content": {
            "application/cloudevents+json": {"schema": _ref("CloudEvent")},
            JSON: {"schema": _ref("CloudEvent")},
        }}),
        "responses": responses,
    }
    operation.update(extra or {})
    return operation


def _blacklist_add(operation_id):
    return _internal({
        "operationId": operation_id,
        "summary": "Blacklist a session: its connections end, its JWTs are refused.",
        "tags": ["session blacklist"],
        "requestBody": _body({"content": {
            JSON: {"schema": _ref("SessionBlacklistEntry")},
            "application/x-www-form-urlencoded": {"schema": _ref("SessionBlacklistEntry")},
        }}),
        "responses": {
            "201": _json("Blacklisted (again: the validity is extended).", {"type": "object"},
                         headers={"location": _header("`<request path>/<sessionId>`"),
                                  **CORS}),
            "400": {"description": "`sessionId` or `validityInSeconds` missing or invalid:"
                                  f" a sentence naming it, {RAW}; or malformed JSON:"
                                  " `{\"errors\":{\"detail\":\"Bad request\"}}`."},
            "413": TOO_LARGE,
            "415": UNSUPPORTED_MEDIA,
        },
    })


def _blacklist_check(operation_id):
    return _internal({
        "operationId": operation_id,
        "summary": "Whether a session is blacklisted now.",
        "tags": ["session blacklist"],
        "parameters": [{"name": "sessionId", "in": "path", "required": True,
                        "description": "URL-encoded when it contains `/`.",
                        "schema": _NON_EMPTY}],
        "responses": {
            "200": _json("Blacklisted.", {"type": "object"}),
            "404": _raw("Not blacklisted (or expired): `Not found.`"),
        },
    })


_API_ID = {"name": "apiId", "in": "path", "required": True, "schema": _NON_EMPTY}
_MISSING = _json("No active API with this id: `API with id=<id> doesn't exists.`",
                 _ref("ApiMessage"))
_INVALID = _json("The definition is invalid (RIG's validation map), or the body is"
                 " malformed JSON.",
                 {"anyOf": [_ref("ApiValidationErrors"), _ref("ErrorDetail")]})
_DEFINITION_BODY = _body({"content": {JSON: {"schema": _ref("ApiDefinition")}}})
_CHANGES_BODY = _body({"content": {JSON: {"schema": _ref("ApiDefinitionChanges")}}})


def _apis(version):
    """The ``/v{2,3}/apis`` operations (the two versions behave alike)."""
    return {
        f"/{version}/apis": {
            "get": _internal({
                "operationId": f"listApis{version}",
                "summary": "The active API definitions on this node.",
                "tags": ["apis"],
                "responses": {"200": _json("The active definitions.", {
                    "type": "array", "items": _ref("StoredApiDefinition")})},
            }),
            "post": _internal({
                "operationId": f"createApi{version}",
                "summary": "Add an API definition (replaces a deactivated one of that id).",
                "tags": ["apis"],
                "requestBody": _DEFINITION_BODY,
                "responses": {
                    "201": _json("Created: `{\"message\":\"ok\"}`.", _ref("ApiMessage")),
                    "400": _INVALID,
                    "409": _json("An active API has this id: `API with id=<id> already"
                                 " exists.`", _ref("ApiMessage")),
                    "413": TOO_LARGE,
                    "415": UNSUPPORTED_MEDIA,
                },
            }),
        },
        f"/{version}/apis/{{apiId}}": {
            "parameters": [_API_ID],
            "get": _internal({
                "operationId": f"getApi{version}",
                "summary": "One active API definition.",
                "tags": ["apis"],
                "responses": {"200": _json("The definition.", _ref("StoredApiDefinition")),
                              "404": _MISSING},
            }),
            "put": _internal({
                "operationId": f"updateApi{version}",
                "summary": "Change an API definition (top-level keys of the body replace the"
                           " stored ones; the path's id wins over the body's).",
                "tags": ["apis"],
                "requestBody": _CHANGES_BODY,
                "responses": {"200": _json("Changed: `{\"message\":\"ok\"}`.",
                                           _ref("ApiMessage")),
                              "400": _INVALID, "404": _MISSING, "413": TOO_LARGE,
                              "415": UNSUPPORTED_MEDIA},
            }),
            "delete": _internal({
                "operationId": f"deleteApi{version}",
                "summary": "Deactivate an API definition (no longer routed).",
                "tags": ["apis"],
                "responses": {"204": _empty("Deactivated."), "404": _MISSING},
            }),
        },
    }


def _internal_paths():
    paths = {
        "/health": {"get": _internal({
            "operationId": "health",
            "summary": "Liveness: always `OK` (open without a token).",
            "tags": ["health"],
            "responses": {"200": _text("`OK`")},
        }, guarded=False)},
        "/metrics": {"get": _internal({
            "operationId": "metrics",
            "summary": "Prometheus exposition (text 0.0.4, or OpenMetrics when asked for);"
                       " open without a token.",
            "tags": ["health"],
            "responses": {"200": {"description": "The metrics.", "content": {
                TEXT: {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            }}},
        }, guarded=False)},
        "/v3/health": {"get": _internal({
            "operationId": "readiness",
            "summary": "Readiness: 503 until the node has every cluster peer's interest.",
            "tags": ["health"],
            "responses": {"200": _json("Ready (`ok`, or `degraded` naming the dependency).",
                                       _ref("Readiness")),
                          "503": _json("Starting.", _ref("Readiness"))},
        })},
        "/v3/cluster": {"get": _internal({
            "operationId": "cluster",
            "summary": "The cluster as this node sees it.",
            "tags": ["health"],
            "responses": {"200": _json("The view.", _ref("ClusterView"))},
        })},
        "/v3/messages": {"post": _internal(_publish(
            "publishV3", "Publish a CloudEvent to subscribers (no SUBMISSION_CHECK)."))},
        "/v3/responses": {"post": _internal({
            "operationId": "asyncResponse",
            "summary": "Answer a proxied request that waits for an `http_async` response.",
            "tags": ["proxy"],
            "parameters": [
                {"name": "rig-correlation", "in": "header", "required": True,
                 "description": "The `correlation` query parameter the backend received.",
                 "schema": {"type": "string"}},
                {"name": "rig-response-code", "in": "header", "required": True,
                 "description": "The status code for the waiting client.",
                 "schema": {"type": "integer", "minimum": 100, "maximum": 599}},
            ],
            "requestBody": _body({"content": {"*/*": {"schema": {}}}}, required=False),
            "responses": {
                "202": _raw("`message sent to correlated reverse proxy request`."),
                "400": _raw("`Failed to parse request body: <why>` (a header missing, a"
                            " code not an integer, an invalid correlation id)."),
                "413": TOO_LARGE,
            },
        })},
        "/dashboard/data": {"get": _internal({
            "operationId": "dashboardData",
            "summary": "The figures the dashboard page (`GET /dashboard`) shows; it asks"
                       " once a second. 404 with DASHBOARD_ENABLED=false.",
            "tags": ["health"],
            "parameters": [{
                "name": "since", "in": "query", "required": False,
                "description": "Only the samples after this `t` (what the page already has).",
                "schema": {"type": "number"}}],
            "responses": {
                "200": _json("The figures.", _ref("DashboardData")),
                "400": _json("`since` is not a finite number.", _ref("ErrorDetail")),
            },
        })},
        "/swagger-ui/rig_api_swagger.json": {"get": _internal({
            "operationId": "openapiDocument",
            "summary": "This document.",
            "tags": ["health"],
            "responses": {"200": _json("The OpenAPI document.", {"type": "object"})},
        })},
    }
    for version in ("v3", "v2"):
        paths[f"/{version}/session-blacklist"] = {"post": _blacklist_add(f"blacklist{version}")}
        paths[f"/{version}/session-blacklist/{{sessionId}}"] = {
            "get": _blacklist_check(f"checkBlacklist{version}")}
        paths.update(_apis(version))
    paths["/v2/messages"] = {"post": _internal(_publish(
        "publishV2", "Publish a CloudEvent (RIG 2's path, as `/v3/messages`)."))}
    return paths


# -- inbound ----------------------------------------------------------------------------

_STREAM_QUERY = [
    {"name": "jwt", "in": "query", "required": False,
     "description": "A JWT (no `Bearer `): its claims give automatic subscriptions and a"
                    " session.", "schema": {"type": "string"}},
    {"name": "subscriptions", "in": "query", "required": False,
     "description": "A JSON array of subscriptions.",
     "content": {JSON: {"schema": {"type": "array", "items": _ref("Subscription")}}}},
]
_SETUP_ERRORS = {
    "400": _raw("The subscriptions or the JWT are invalid, or SUBSCRIPTION_CHECK said no"
                " (a sentence saying which)."),
    "429": _raw("MAX_CONNECTIONS_PER_MINUTE reached: `Reached maximum number of"
                " connections`."),
    "503": _raw("The node is shutting down: `Shutting down.`"),
}


NOT_RIGS = _raw("`kind` is none of the three: the path is not RIG's, so the reverse proxy"
                " answers it (404 `{\"message\":\"Not Found\"}` when no API matches).")


def _optional(name, where):
    return {"name": name, "in": where, "required": False, "schema": {"type": "string"}}


def _sse(operation_id, method):
    return {
        "operationId": operation_id,
        "summary": f"Server-Sent Events ({method}): the welcome event, then every matching"
                   " event, with `id:` lines for `Last-Event-ID` recovery.",
        "tags": ["connections"],
        "parameters": [
            *_STREAM_QUERY, _optional("Last-Event-ID", "header"),
            _optional("lastEventId", "query"),
        ],
        "responses": {
            "200": {"description": "An endless event stream.", "headers": CORS,
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_SETUP_ERRORS,
        },
    }


def _inbound_paths():
    preflight = {"description": "CORS preflight.", "headers": {
        **CORS,
        "access-control-allow-methods": _header("The allowed method."),
        "access-control-allow-headers": _header("The allowed request headers."),
    }}
    paths = {
        "/_rig/health": {"get": {
            "operationId": "inboundHealth", "summary": "Liveness: `OK`.", "tags": ["health"],
            "responses": {"200": _text("`OK`")},
        }},
        "/_rig/v1/events": {
            "post": _publish("publishInbound",
                             "Publish a CloudEvent from a frontend (SUBMISSION_CHECK applies).",
                             check=True),
            "options": {"operationId": "publishPreflight", "summary": "CORS preflight.",
                        "tags": ["events"], "responses": {"204": preflight}},
        },
        "/_rig/v1/connection/sse": {"get": _sse("sse", "GET"),
                                    "post": _sse("ssePost", "POST")},
        "/_rig/v1/connection/ws": {"get": {
            "operationId": "websocket",
            "summary": "WebSocket (an `Upgrade: websocket` request): one text frame per event;"
                       " a refused connection is closed with RIG's reason after the upgrade.",
            "tags": ["connections"],
            "parameters": _STREAM_QUERY,
            "responses": {
                "101": {"description": "Switching protocols."},
                "426": _text("Not a WebSocket upgrade request.",
                             headers={"upgrade": _header("`websocket`")}),
            },
        }},
        "/_rig/v1/connection/longpolling": {
            "get": {
                "operationId": "longPoll",
                "summary": "Long polling: without a live session cookie a new session"
                           " (`\"ok\"` and cookies), else the events since `last_event_id`"
                           " (held up to LONGPOLL_WAIT while there are none).",
                "tags": ["connections"],
                "parameters": [
                    *_STREAM_QUERY, _optional("connection_token", "cookie"),
                    _optional("last_event_id", "cookie"),
                ],
                "responses": {
                    "200": _json("A new session (`\"ok\"`), or the events of a poll.",
                                 {"anyOf": [{"const": "ok"}, _ref("LongPollEvents")]},
                                 headers={**CORS, "set-cookie": _header(
                                     "`connection_token` and `last_event_id`.")}),
                    "400": _text("The subscriptions or the JWT are invalid.", headers=CORS),
                    "429": _text("MAX_CONNECTIONS_PER_MINUTE reached."),
                    "503": _text("The node is shutting down: `Shutting down.`",
                                 headers=CORS),
                },
            },
            "options": {"operationId": "longPollPreflight", "summary": "CORS preflight.",
                        "tags": ["connections"], "responses": {"204": preflight}},
        },
        "/_rig/v1/connection/{kind}/{token}/subscriptions": {
            "parameters": [
                {"name": "kind", "in": "path", "required": True,
                 "description": "Any of the three: a token works with every transport.",
                 "schema": {"enum": ["sse", "ws", "longpolling"]}},
                {"name": "token", "in": "path", "required": True,
                 "description": "The `connection_token` of the welcome event.",
                 "schema": _NON_EMPTY},
            ],
            "put": {
                "operationId": "putSubscriptions",
                "summary": "Replace a connection's subscriptions (the body's, plus those of"
                           " the JWTs in `Authorization: Bearer` headers).",
                "tags": ["subscriptions"],
                "security": [{}, {"frontendJwt": []}],
                "requestBody": _body({"content": {JSON: {"schema": _ref("Subscriptions")}}}),
                "responses": {
                    "204": _empty("Replaced; the connection got `rig.subscriptions_set`.",
                                  headers=CORS),
                    "400": _raw("Not JSON, no `subscriptions`, an invalid subscription or JWT,"
                                " or `Invalid connection token.` (text/plain, with CORS)."),
                    "403": _text("SUBSCRIPTION_CHECK said no: `Subscription denied.`",
                                 headers=CORS),
                    "406": _raw("The `Accept` header allows no `application/json`."),
                    "404": NOT_RIGS,
                    "410": _text("`Connection no longer exists.`", headers=CORS),
                    "413": TOO_LARGE,
                },
            },
            "options": {"operationId": "subscriptionsPreflight", "summary": "CORS preflight.",
                        "tags": ["subscriptions"],
                        "responses": {"204": preflight, "404": NOT_RIGS}},
        },
    }
    for item in paths.values():
        item["servers"] = INBOUND_SERVERS
    return paths


# What either listener answers to any request whose head is too long, before routing.
HEAD_LIMITS = {
    "414": _text("The request line is over 32 KB: `URI too long.` (then the connection"
                 " closes)."),
    "431": _text("A header line is over 32 KB, or all of them over 64 KB: `Request header"
                 " too large.` (then the connection closes)."),
}
_METHODS = ("get", "put", "post", "delete", "options")


def _paths():
    paths = {**_internal_paths(), **_inbound_paths()}
    for item in paths.values():
        for method in _METHODS:
            if method in item:
                item[method]["responses"].update(
                    {code: {"$ref": f"#/components/responses/HeadTooLong{code}"}
                     for code in HEAD_LIMITS})
    return paths


def build_document():
    """The OpenAPI document as a dict (a fresh copy each time)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "txrig: Reactive Interaction Gateway",
            "version": "3.0",
            "description": "The internal API (port 4010: management, health, metrics) and the"
                           " inbound endpoints for frontends and backends (port 4000, each"
                           " path names its server). Requests to other inbound paths go to the"
                           " reverse proxy and its API definitions.",
        },
        "servers": INTERNAL_SERVERS,
        "tags": [{"name": name} for name in (
            "connections", "subscriptions", "events", "apis", "session blacklist", "proxy",
            "health")],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {**RESPONSES, **{f"HeadTooLong{code}": response
                                          for code, response in HEAD_LIMITS.items()}},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http", "scheme": "bearer",
                    "description": "One of API_AUTH_TOKENS; only needed when that is set"
                                   " (`/health` and `/metrics` stay open).",
                },
                "basicAuth": {
                    "type": "http", "scheme": "basic",
                    "description": "One of API_AUTH_TOKENS as the password, any user name: what"
                                   " a browser sends for Swagger UI and the dashboard.",
                },
                "frontendJwt": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A frontend's JWT: its claims add subscriptions.",
                },
            },
        },
    })


def document_bytes():
    """The document as the UTF-8 JSON served at ``/swagger-ui/rig_api_swagger.json``."""
    return json.dumps(build_document(), indent=1).encode("utf-8")
