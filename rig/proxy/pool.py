"""One shared, tuned connection pool for every proxied request."""
from twisted.web.client import Agent, HTTPConnectionPool


def proxy_agent(reactor, *, per_host=64, idle_timeout=60, connect_timeout=8):
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host  # Twisted's default of 2 serialises a busy backend
    pool.cachedConnectionTimeout = idle_timeout
    pool.retryAutomatically = False  # never replay a non-idempotent request on our own
    return Agent(reactor, pool=pool, connectTimeout=connect_timeout)
