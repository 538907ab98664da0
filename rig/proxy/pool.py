"""One shared, tuned connection pool for every proxied request."""
from twisted.web import client

from rig.connections.outbox import no_delay


class _NoDelayClientFactory(client._HTTP11ClientFactory):
    """Backend connections send each request at once (no Nagle wait for an ACK)."""

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        made = protocol.connectionMade

        def connection_made():
            no_delay(protocol.transport)
            made()

        protocol.connectionMade = connection_made
        return protocol


class ProxyPool(client.HTTPConnectionPool):
    _factory = _NoDelayClientFactory


def proxy_agent(reactor, *, per_host=64, idle_timeout=60, connect_timeout=8):
    pool = ProxyPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host  # Twisted's default of 2 serialises a busy backend
    pool.cachedConnectionTimeout = idle_timeout
    pool.retryAutomatically = False  # never replay a non-idempotent request on our own
    return client.Agent(reactor, pool=pool, connectTimeout=connect_timeout)
