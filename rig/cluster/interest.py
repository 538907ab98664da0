"""Interest: the event types each node has subscribers for (an owner-partitioned set).

A published event crosses to a node only if that node's partition holds the
event's type, and is matched there; so each subscriber gets it exactly once.
"""
from rig.cluster.replicas import PartitionedReplica


class InterestReplica(PartitionedReplica):
    key = "interest"

    def __init__(self, hub, interval=0.5):
        super().__init__(hub.interest_types, interval)

    def describe(self):
        return {owner: sorted(types) for owner, (_, types) in self.sets.snapshot().items()}
