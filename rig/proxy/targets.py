"""Which backends an API definition may point at.

Two doors an API definition could otherwise open:

- ``proxy.use_env`` names an environment variable that holds the backend's
  host. Only variables that ``PROXY_USE_ENV_ALLOWED`` lists (exact names, or
  prefixes ending in ``*``) may be read, and never one of the gateway's own
  secrets, so that a definition posted at runtime cannot send ``JWT_SECRET_KEY``
  out as a DNS lookup.
- A target that is this gateway's own listener (or a cluster peer's internal
  port) would publish the internal API on the public port.
"""
import ipaddress
import socket

import attrs

# the gateway's own secrets: never a backend's host, whatever the allow-list says
SECRET_VARIABLES = frozenset((
    "JWT_SECRET_KEY", "NODE_COOKIE", "HTTPS_KEYFILE_PASS", "REDIS_URL", "API_AUTH_TOKENS",
    "NATS_SERVERS", "CLUSTER_BACKPLANE",
))
LOCAL_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))


class TargetRefused(ValueError):
    """An API's backend may not be used; ``str()`` says why (never a variable's value)."""


def env_allowed(name, allowed):
    """Whether ``use_env`` may read variable *name* under the allow-list *allowed*."""
    if not isinstance(name, str) or not name or name in SECRET_VARIABLES:
        return False
    return any(name.startswith(entry[:-1]) if entry.endswith("*") else name == entry
               for entry in allowed)


def split_target(target):
    """``(scheme, host)`` of a ``target_url`` (``http://host``, ``https://host`` or ``host``)."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        scheme, rest = "http", target
    host = rest.split("/", 1)[0]
    if host.startswith("["):  # [::1]
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return scheme.lower(), host.lower()


@attrs.frozen
class TargetPolicy:
    """What ``PROXY_USE_ENV_ALLOWED`` allows and where this gateway listens.

    *own_ports* returns the ports of this node's listeners, and *peer_hosts*
    the hosts of its cluster peers (whose internal ports are taken to be this
    node's: a cluster shares its settings); both are read at check time, since
    a listener on port 0 only gets its port once it is bound.
    """

    env_allowed: tuple = ()
    environ: dict = attrs.field(factory=dict, repr=False)
    own_ports: object = dict  # returns {port: listener name}
    internal_ports: object = set
    peer_hosts: object = set
    local_names: frozenset = frozenset()
    nats_enabled: bool = True  # whether a ``nats`` target can work (NATS_SERVERS set)

    def host_of(self, proxy):
        """The backend host of an API's ``proxy`` object; TargetRefused if it may not be read."""
        target = proxy["target_url"]
        if proxy.get("use_env"):
            if not env_allowed(target, self.env_allowed):
                raise TargetRefused(
                    f"names the environment variable {target!r}, which PROXY_USE_ENV_ALLOWED"
                    " does not allow")
            target = self.environ.get(target) or "localhost"
        return split_target(target)

    def errors(self, proxy):
        """RIG-style ``[{field: message}]`` for an API's valid ``proxy`` object."""
        try:
            _scheme, host = self.host_of(proxy)
        except TargetRefused as refused:
            return [{"target_url": str(refused)}]
        port = proxy["port"]
        listener = self.own_ports().get(port)
        if listener is not None and self._is_local(host):
            return [{"target_url": f"is this gateway's own {listener} listener (port {port})"}]
        if port in self.internal_ports() and host in self.peer_hosts():
            return [{"target_url": f"is a cluster peer's internal port ({host}:{port})"}]
        return []

    def _is_local(self, host):
        if host in LOCAL_NAMES or host in self.local_names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or address.is_unspecified or host in self.local_names


def local_names(*names):
    """This machine's names and the addresses the settings name, lower-cased."""
    found = {name.lower() for name in names if name}
    found.add(socket.gethostname().lower())
    return frozenset(found)


def peer_hosts(cluster):
    """The hosts of a cluster node's live peers."""
    if cluster is None:
        return set()
    return {member.address.rpartition(":")[0].strip("[]").lower()
            for member in cluster.live_peers()}
