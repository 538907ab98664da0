"""One shared, tuned connection pool for every proxied request.

Backend connections send each request at once (TCP_NODELAY: no Nagle wait for
an ACK). The option is set on the connection as its endpoint hands it over,
with Twisted's public endpoint API only.
"""
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web import client
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from rig.hub.outbox import no_delay


@implementer(IStreamClientEndpoint)
class _NoDelayEndpoint:
    def __init__(self, endpoint):
        self._endpoint = endpoint

    def connect(self, factory):
        return self._endpoint.connect(factory).addCallback(self._tuned)

    @staticmethod
    def _tuned(protocol):
        transport = protocol.transport
        no_delay(getattr(transport, "transport", None) or transport)  # under TLS: the TCP one
        return protocol


@implementer(IAgentEndpointFactory)
class NoDelayEndpoints:
    """``http`` and ``https`` backends, as Agent reaches them, with TCP_NODELAY on."""

    def __init__(self, reactor, connect_timeout, tls_policy=None):
        self._reactor = reactor
        self._timeout = connect_timeout
        self._tls_policy = tls_policy or client.BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri):
        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port),
                                     endpoint)
        elif uri.scheme != b"http":
            raise client.SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return _NoDelayEndpoint(endpoint)


def proxy_agent(reactor, *, per_host=64, idle_timeout=60, connect_timeout=8):
    pool = client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host  # Twisted's default of 2 serialises a busy backend
    pool.cachedConnectionTimeout = idle_timeout
    pool.retryAutomatically = False  # never replay a non-idempotent request on our own
    return client.Agent.usingEndpointFactory(
        reactor, NoDelayEndpoints(reactor, connect_timeout), pool=pool)
