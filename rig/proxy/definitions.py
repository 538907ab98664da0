"""API definitions in RIG's format: validation with RIG's error map, defaults, compilation.

Validation returns the map RIG returns (spec Part B 7.3): a key (``api``,
the API id, or ``<apiId>/<endpointId>``) to a list of ``{field: message}``
entries. Compilation turns a valid definition into the routes the matcher
uses; a path regex that does not compile is a validation error too.
"""
import copy

import attrs
import re2

from rig.nats.protocol import check_subject

TARGETS = ("http", "kafka", "kinesis", "nats", "redis")
RESPONSE_FROM = ("http", "kafka", "http_async", "kinesis", "nats", "redis")
SUPPORTED_TARGETS = ("http", "nats", "redis")
SUPPORTED_RESPONSE_FROM = ("http", "http_async", "nats", "redis")
_DEFAULT_AUTH = {"use_header": False, "header_name": "", "use_query": False, "query_name": ""}


def _string_errors(value, field):
    if not isinstance(value, str):
        return [{field: "must be string"}, {field: "must have a length of at least 1"}]
    if not value:
        return [{field: "must have a length of at least 1"}]
    return []


def _typed_errors(container, fields, expected):
    """``{field: "must be <expected>"}`` for each optional field of *container* that is
    present but of another type (null counts as absent): the proxy reads these fields
    when it forwards, where a list for a boolean or a number for a name would crash."""
    kinds = {"boolean": bool, "string": str, "object": dict}
    return [{field: f"must be {expected}"} for field in fields
            if container.get(field) is not None
            and not isinstance(container[field], kinds[expected])]


def _version_errors(version):
    transform = version.get("transform_request_headers")
    found = _typed_errors(version, ("transform_request_headers",), "object")
    if isinstance(transform, dict):
        add = transform.get("add_headers")
        if add is not None and (not isinstance(add, dict) or not all(
                isinstance(value, str) for value in add.values())):
            found.append({"add_headers": "must be an object of strings"})
    return found


def validate(api, policy=None):
    """RIG's error map for *api* (a dict); empty when the definition is valid.

    With a :class:`~rig.proxy.targets.TargetPolicy`, a backend it refuses (a
    ``use_env`` variable not allowed, this gateway itself) is an error too.
    """
    if not isinstance(api, dict):
        return {"api": [{"api": "must be an object"}]}
    errors = {}
    top = _string_errors(api.get("id"), "id") + _string_errors(api.get("name"), "name")
    top += _typed_errors(api, ("versioned",), "boolean")
    proxy = api.get("proxy")
    if not isinstance(proxy, dict) or not proxy:
        top.append({"proxy": "must be present"})
    else:
        top += _string_errors(proxy.get("target_url"), "target_url")
        top += _typed_errors(proxy, ("use_env",), "boolean")
        port = proxy.get("port")
        if isinstance(port, bool) or not isinstance(port, int):
            top.append({"port": "must be integer"})
        elif not 0 < port < 65536:
            top.append({"port": "must be between 1 and 65535"})
        elif policy is not None and not top:
            top += policy.errors(proxy)
    versions = api.get("version_data")
    if versions is None:
        top.append({"version_data": "must be present"})
    elif not isinstance(versions, dict) or not versions:
        top.append({"version_data": "must be present"})
        top.append({"version_data": "must have at least one version, e.g. default"})
    else:
        for version in versions.values():
            if not isinstance(version, dict) or not isinstance(version.get("endpoints"), list):
                top.append({"endpoints": "must be list"})
                break
            top += _version_errors(version)
    if top:
        errors["api"] = top
    api_id = api.get("id") if isinstance(api.get("id"), str) else ""
    auth_errors = _auth_errors(api)
    if auth_errors:
        errors[api_id] = auth_errors
    if isinstance(versions, dict):
        for version in versions.values():
            if isinstance(version, dict) and isinstance(version.get("endpoints"), list):
                for endpoint in version["endpoints"]:
                    _endpoint_errors(api, api_id, endpoint, errors, policy)
    return errors


def _auth_errors(api):
    auth = api.get("auth")
    auth_type = api.get("auth_type", "none")
    found = []
    if auth_type not in ("jwt", "none", None):
        found.append({"auth_type": 'must be one of ["jwt", "none"]'})
    if isinstance(auth, dict):
        found += _typed_errors(auth, ("use_header", "use_query"), "boolean")
        found += _typed_errors(auth, ("header_name", "query_name"), "string")
        if auth.get("use_header") and not auth.get("header_name"):
            found.append({"header_name": "must be present"})
        if auth.get("use_query") and not auth.get("query_name"):
            found.append({"query_name": "must be present"})
        if (auth.get("use_header") or auth.get("use_query")) and auth_type != "jwt":
            found.append({"auth_type": 'must be one of ["jwt"]'})
    elif auth is not None:
        found.append({"auth": "must be an object"})
    return found


def _endpoint_errors(api, api_id, endpoint, errors, policy=None):
    if not isinstance(endpoint, dict):
        errors.setdefault(f"{api_id}/", []).append({"endpoint": "must be an object"})
        return
    endpoint_id = endpoint.get("id") if isinstance(endpoint.get("id"), str) else ""
    found = []
    for field in ("id", "path_regex", "method"):
        found += _string_errors(endpoint.get(field), field)
    found += _typed_errors(endpoint, ("secured", "transform_request_headers"), "boolean")
    found += _typed_errors(endpoint, ("topic", "schema"), "string")
    if endpoint.get("secured") and api.get("auth_type") != "jwt":
        found.append({"auth_type": 'must be one of ["jwt"]'})
    target = endpoint.get("target", "http")
    if target not in TARGETS:
        found.append({"target": f"must be one of {list(TARGETS)}"})
    elif target not in SUPPORTED_TARGETS:
        found.append({"target": f"{target} targets are not supported by this gateway yet"})
    if target in ("kafka", "kinesis", "nats", "redis") and not endpoint.get("topic"):
        found.append({"topic": "must be present"})
    if target == "nats":
        found += _nats_errors(endpoint, policy)
    elif endpoint.get("response_from") == "nats":
        found.append({"response_from": 'nats needs target "nats"'})
    if "schema" in endpoint and "target" not in endpoint:
        found.append({"target": "must be present"})
    response_from = endpoint.get("response_from", "http")
    if response_from not in RESPONSE_FROM:
        found.append({"response_from": f"must be one of {list(RESPONSE_FROM)}"})
    elif response_from not in SUPPORTED_RESPONSE_FROM:
        found.append({"response_from": f"{response_from} is not supported by this gateway yet"})
    if "path_replacement" in endpoint and not isinstance(endpoint["path_replacement"], str):
        found.append({"path_replacement": "must be string"})
    if isinstance(endpoint.get("path_regex"), str) and endpoint["path_regex"]:
        try:
            compile_path(endpoint["path_regex"])
        except re2.error as error:
            reason = error.args[0] if error.args else error
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            found.append({"path_regex": f"is not a valid regular expression: {reason}"})
    if found:
        errors.setdefault(f"{api_id}/{endpoint_id}", []).extend(found)


def _nats_errors(endpoint, policy):
    """A ``nats`` target publishes to one subject and answers 202 or the NATS reply."""
    found = []
    topic = endpoint.get("topic")
    if isinstance(topic, str) and topic:
        try:
            check_subject(topic)
        except ValueError as error:
            found.append({"topic": str(error)})
    if endpoint.get("response_from", "http") not in ("http", "nats"):
        found.append({"response_from": 'must be one of ["http", "nats"] for a nats target'})
    if policy is not None and not policy.nats_enabled:
        found.append({"target": "nats needs NATS_SERVERS (NATS is off on this gateway)"})
    return found


def _path_options():
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a bad pattern is the caller's error, not a stderr line
    return options


_PATH_OPTIONS = _path_options()


def compile_path(path_regex):
    """RIG anchors the regex and matches case-insensitively.

    RE2 matches in time linear in the path, so no pattern posted to
    ``/v3/apis`` can stall the reactor; patterns it cannot run in linear time
    (backreferences, lookaround) are refused as invalid, with RE2's reason.
    """
    pattern = path_regex
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    if not pattern.endswith("$"):
        pattern = pattern + "$"
    return re2.compile(pattern, _PATH_OPTIONS)


def with_defaults(api, *, uppercase_methods):
    """A copy of a valid *api* with RIG's defaults applied (spec 7.2)."""
    api = copy.deepcopy(api)
    api.setdefault("auth_type", "none")
    api.setdefault("versioned", False)
    auth = dict(_DEFAULT_AUTH)
    auth.update(api.get("auth") or {})
    if api["auth_type"] == "jwt":
        auth["use_header"] = True
        auth["header_name"] = "Authorization"
    api["auth"] = auth
    api["proxy"].setdefault("use_env", False)
    for version in api["version_data"].values():
        for endpoint in version["endpoints"]:
            if uppercase_methods and isinstance(endpoint.get("method"), str):
                endpoint["method"] = endpoint["method"].upper()
            endpoint.setdefault("secured", False)
            endpoint.setdefault("target", "http")
            endpoint.setdefault("response_from", "http")
    return api


@attrs.frozen
class Route:
    """One endpoint, ready for matching and forwarding."""

    api: dict
    endpoint: dict
    method: str
    pattern: object  # a compiled RE2 pattern (match, sub)

    @property
    def secured(self):
        return bool(self.endpoint.get("secured")) and self.api.get("auth_type") == "jwt"


def routes_of(api):
    """The routes of an active, unversioned API (only ``version_data.default`` routes)."""
    if not api.get("active", True) or api.get("versioned"):
        return []
    default = api.get("version_data", {}).get("default") or {}
    return [
        Route(api, endpoint, endpoint["method"], compile_path(endpoint["path_regex"]))
        for endpoint in default.get("endpoints", [])
    ]
