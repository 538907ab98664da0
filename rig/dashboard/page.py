"""``GET /dashboard`` on the internal port: the page, its script and style, and its data.

The assets are package data read once when the gateway is built (as the
example pages are), so serving them never touches the disk and no URL
reaches the file system. The routes sit in the internal router, behind the
OperatorGuard like every internal endpoint.
"""
import json
import math
from importlib.resources import files
from inspect import isawaitable

from rig.httputil import JSON, respond
from rig.web.examples import CONTENT_TYPES

PAGE = "dashboard.html"
ASSETS = ("dashboard.js", "dashboard.css")
HEADERS = [(b"cache-control", b"no-cache"), (b"x-content-type-options", b"nosniff")]
# the page runs only its own script and style, and talks only to its own origin
POLICY = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
          b" img-src 'self'; frame-ancestors 'none'")
PAGE_HEADERS = [*HEADERS, (b"content-security-policy", POLICY)]
BAD_SINCE = b'{"errors":{"detail":"since must be a number of seconds (a sample\'s t)"}}'


def load_assets(directory=None):
    """``{file name: (content type, bytes)}`` of the page and its assets."""
    directory = directory if directory is not None else files("rig") / "dashboard"
    assets = {}
    for name in (PAGE, *ASSETS):
        content_type = CONTENT_TYPES["." + name.rpartition(".")[2]]
        assets[name] = (content_type, (directory / name).read_bytes())
    return assets


def _since(request):
    """The ``since`` query parameter as a finite number, None when absent; ValueError else."""
    values = request.args.get(b"since")
    if not values:
        return None
    since = float(values[0].decode("ascii", "replace"))
    if not math.isfinite(since):
        raise ValueError(since)
    return since


class Dashboard:
    """Serves the page and the figures: ``figures.snapshot(since)`` (a sampler's, or a
    :class:`~rig.dashboard.workers.VmDashboard`'s coroutine)."""

    def __init__(self, figures, assets):
        self._figures = figures
        self._assets = dict(assets)

    def routes(self):
        """Router entries (pattern, methods) for the internal listener."""
        return [
            (r"/dashboard", {b"GET": self.page}),
            (r"/dashboard/data", {b"GET": self.data}),
            (r"/dashboard/(?P<name>dashboard\.(?:js|css))", {b"GET": self.asset}),
        ]

    def page(self, request):
        content_type, body = self._assets[PAGE]
        return respond(request, 200, body, content_type, headers=PAGE_HEADERS)

    def asset(self, request, name):
        content_type, body = self._assets[name]
        return respond(request, 200, body, content_type, headers=HEADERS)

    async def data(self, request):
        try:
            since = _since(request)
        except ValueError:
            return respond(request, 400, BAD_SINCE, JSON)
        snapshot = self._figures.snapshot(since)
        if isawaitable(snapshot):
            snapshot = await snapshot
        body = json.dumps(snapshot, separators=(",", ":")).encode()
        return respond(request, 200, body, JSON, headers=[(b"cache-control", b"no-store")])
