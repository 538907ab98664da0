"""Request parameters on the internal API: JSON, urlencoded or multipart bodies (spec 1.3)."""

from rig import jsonbounds
from rig.httputil import JSON, header, request_body, respond

BAD_REQUEST = b'{"errors":{"detail":"Bad request"}}'


class ParamsError(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status

    def respond(self, request):
        return respond(request, self.status, BAD_REQUEST, JSON)


def body_params(request):
    """The request's parameters as a dict, or ParamsError (400 malformed, 415 other types).

    A body without a content type counts as no parameters, as in RIG.
    """
    content_type = header(request, b"content-type")
    body = request_body(request)
    if content_type is None or not body.strip():
        return {}
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            value = jsonbounds.loads(body)
        except ValueError:
            raise ParamsError(400) from None
        return value if isinstance(value, dict) else {"_json": value}
    if media in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {
            name.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for name, values in request.args.items() if values
        }
    raise ParamsError(415)
