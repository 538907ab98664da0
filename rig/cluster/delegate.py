"""What a part of the cluster looks like to :class:`~rig.cluster.node.ClusterNode`.

As in memberlist, the node core does membership and links and knows nothing of
what is replicated; each replicated structure is a *delegate*: it sends its
own deltas, and answers the node's generic full-state and anti-entropy
exchanges. Parts that replicate nothing (event routing, calls to owning
nodes) only attach and detach.
"""
import hashlib
import json

from zope.interface import Attribute, Interface


class IClusterPart(Interface):
    """Something that talks over the cluster once the node has a name."""

    def attach(cluster):
        """The node listens and has a name: register message handlers, start timers.

        *cluster* provides ``node_name``, ``clock``, ``send(address, message)``,
        ``broadcast(message)`` (alive peers), ``member(name)``, ``live_peers()``
        (alive and suspect members) and ``handle(kind, handler)``.
        """

    def detach():
        """The node stops: stop timers (messages can no longer be sent)."""


class IReplicated(IClusterPart):
    """One replicated structure: the node exchanges its state with every peer."""

    key = Attribute("The structure's name in ``rig.state`` and ``rig.digest`` messages.")

    def full_state():
        """The whole structure, JSON-ready (sent to a member that just joined)."""

    def digest():
        """A small JSON summary; a peer answers it with :meth:`missing`."""

    def missing(digest):
        """The state a replica whose summary is *digest* lacks, or None if nothing."""

    def merge(state, address):
        """Take state (full, partial or a delta) that the peer at *address* sent."""

    def member_gone(member):
        """*member* died or left: forget what only it wrote."""


def state_hash(mapping):
    """A digest of a whole map: equal maps hash alike on every node."""
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()
