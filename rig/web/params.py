"""Request parameters on the internal API: JSON, urlencoded or multipart bodies (spec 1.3)."""
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

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
    if media == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                        errors="replace")
        return _first_values(request.args, form)
    if media == "multipart/form-data":
        return _first_values(request.args, _multipart_fields(content_type, body))
    raise ParamsError(415)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _first_values(*sources):
    """The first value of each field, as text; a later source wins (the body over the
    query, as in RIG)."""
    return {_text(name): _text(values[0])
            for source in sources for name, values in source.items() if values}


def _multipart_fields(content_type, body):
    """``{name: [value]}`` of a multipart/form-data body; ParamsError(400) if it is not one."""
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode(
        "utf-8", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ParamsError(400)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields.setdefault(name.encode("utf-8", "replace"), []).append(
                part.get_payload(decode=True) or b"")
    return fields
