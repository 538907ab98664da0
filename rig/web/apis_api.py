"""``/v3/apis`` (and ``/v2/apis``): manage API definitions at runtime (spec Part B 7.10)."""
import json
from urllib.parse import unquote

from rig.httputil import JSON, respond
from rig.proxy.definitions import validate, with_defaults
from rig.web.params import ParamsError, body_params

OK = b'{"message":"ok"}'


def _json(request, status, value):
    return respond(request, status, json.dumps(value).encode(), JSON)


def _missing(request, api_id):
    return _json(request, 404, {"message": f"API with id={api_id} doesn't exists."})


def list_apis(store, request):
    return _json(request, 200, store.active())


def get_api(store, request, api_id):
    api_id = unquote(api_id)
    api = store.get(api_id)
    return _missing(request, api_id) if api is None else _json(request, 200, api)


def _definition(request):
    params = body_params(request)
    params.pop("_json", None)
    return params


def create_api(store, policy, request):
    try:
        api = _definition(request)
    except ParamsError as error:
        return error.respond(request)
    errors = validate(api, policy)
    if errors:
        return _json(request, 400, errors)
    if not store.create(with_defaults(api, uppercase_methods=True)):
        return _json(request, 409, {"message": f"API with id={api['id']} already exists."})
    return respond(request, 201, OK, JSON)


def update_api(store, policy, request, api_id):
    api_id = unquote(api_id)
    try:
        changes = _definition(request)
    except ParamsError as error:
        return error.respond(request)
    changes["id"] = api_id
    errors = validate(changes, policy)  # RIG validates the body as a whole definition
    if errors:
        return _json(request, 400, errors)
    if not store.update(api_id, with_defaults(changes, uppercase_methods=True)):
        return _missing(request, api_id)
    return respond(request, 200, OK, JSON)


def delete_api(store, request, api_id):
    api_id = unquote(api_id)
    if not store.deactivate(api_id):
        return _missing(request, api_id)
    return respond(request, 204)
