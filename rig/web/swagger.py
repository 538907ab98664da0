"""Swagger UI at ``/swagger-ui`` on the internal port, and the API document it shows.

The UI's files come from the ``openapi-ui-bundles`` package (Swagger UI 5,
which reads OpenAPI 3.1), read once when the gateway is built: the page loads
nothing from another host, so it works offline, and no URL reaches the file
system (a request names a dictionary key). The page is ours, not the bundle's
``index.html``, whose inline script points at a demo document elsewhere.
"""
import re

from openapi_ui_bundles.swagger_ui import static_path

from rig.httputil import JSON, TEXT, respond
from rig.web.openapi import document_bytes

PREFIX = "/swagger-ui"
DOCUMENT = PREFIX + "/rig_api_swagger.json"

CONTENT_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
}

PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>txrig API</title>
<link rel="stylesheet" href="/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="/swagger-ui/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/swagger-ui/rig-swagger-init.js"></script>
</body>
</html>
"""

# validatorUrl off: Swagger UI would otherwise show a badge loaded from its public validator.
INIT = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/swagger-ui/rig_api_swagger.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
};
"""


def load_assets(directory=None):
    """``{file name: (content type, bytes)}``: the bundle's servable files and our script."""
    directory = directory if directory is not None else static_path
    assets = {}
    for entry in directory.iterdir():
        content_type = CONTENT_TYPES.get("." + entry.name.rpartition(".")[2].lower())
        if content_type is not None and entry.is_file():
            assets[entry.name] = (content_type, entry.read_bytes())
    assets["rig-swagger-init.js"] = (CONTENT_TYPES[".js"], INIT)
    return assets


class SwaggerUI:
    """The page, its assets and the document, as Router entries."""

    def __init__(self, assets):
        self._assets = dict(assets)
        self._document = document_bytes()

    def routes(self):
        return [
            (PREFIX + "/?", {b"GET": self.page}),
            (re.escape(DOCUMENT), {b"GET": self.document}),
            (PREFIX + r"/(?P<name>[^/]+)", {b"GET": self.asset}),
        ]

    def page(self, request):
        return respond(request, 200, PAGE, b"text/html; charset=utf-8", headers=_NO_SNIFF)

    def document(self, request):
        return respond(request, 200, self._document, JSON)

    def asset(self, request, name):
        found = self._assets.get(name)
        if found is None:
            return respond(request, 404, "No such Swagger UI file.", TEXT)
        content_type, body = found
        return respond(request, 200, body, content_type, headers=[
            (b"cache-control", b"max-age=3600"), *_NO_SNIFF])


_NO_SNIFF = [(b"x-content-type-options", b"nosniff")]
