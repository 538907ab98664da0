"""The example pages under ``/_rig/examples/`` (issue 8), when EXAMPLES_ENABLED is set.

The pages are package data (``rig/examples/``), read once when the gateway
is built: serving them never touches the disk on the reactor, and a request
can only name a file that was found then (a dictionary lookup), so no URL
reaches the file system and there is no traversal to guard against.
"""
from importlib.resources import files

from twisted.logger import Logger

from rig.httputil import TEXT, respond

PREFIX = "/_rig/examples"

# Only these kinds of files are served, each with its content type.
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
}

log = Logger()


def load_pages(directory=None):
    """``{file name: (content type, bytes)}`` for the servable files of *directory*."""
    directory = directory if directory is not None else files("rig") / "examples"
    pages = {}
    for entry in directory.iterdir():
        content_type = CONTENT_TYPES.get("." + entry.name.rpartition(".")[2].lower())
        if content_type is not None and entry.is_file():
            pages[entry.name] = (content_type, entry.read_bytes())
    if "index.html" not in pages:
        log.warn("No example pages found in {directory}", directory=str(directory))
    return pages


class ExamplePages:
    """Serves the loaded pages; the directory URL answers with ``index.html``."""

    def __init__(self, pages):
        self._pages = dict(pages)

    def routes(self):
        """Router entries (pattern, methods) for the inbound listener."""
        return [
            (PREFIX, {b"GET": self.redirect}),
            (PREFIX + r"/(?P<name>[^/]*)", {b"GET": self.serve}),
        ]

    def redirect(self, request):
        """Without the trailing slash the pages' relative links would miss the directory."""
        return respond(request, 301, b"", headers=[(b"location", PREFIX.encode() + b"/")])

    def serve(self, request, name):
        page = self._pages.get(name or "index.html")
        if page is None:
            return respond(request, 404, "No such example page.", TEXT)
        content_type, body = page
        return respond(request, 200, body, content_type, headers=[
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ])
