"""The hub: every live connection of this node, their subscriptions, and publishing.

Its own parts live here too: the write path (``outbox``), the reasons a
connection closes (``closing``), the token codec (``token``) and the declared
connection interface (``interface``). Transports depend on the hub, never the
reverse.
"""
from rig.hub.hub import ConnectionRateLimit, Hub

__all__ = ["ConnectionRateLimit", "Hub"]
