"""A small HTTP backend for the proxy benchmark: ``GET /hello`` answers a short JSON body.

    python benchmarks/backend.py 5000
"""
import sys

from twisted.internet import reactor
from twisted.web import resource, server


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return b'{"hello":"world"}'


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    site = server.Site(Hello())
    site.log = lambda request: None
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
