"""Owner-partitioned replicated sets: each node writes only its own partition.

Used for "which event types does node N have subscribers for" and "which
sessions does node N hold connections for". A partition is a versioned
frozenset; merging keeps, per owner, the partition with the higher version,
so replicas converge whatever order updates arrive in, and only the owner
ever bumps its version. A dead or departed node's partition is dropped
(``drop``); if the node comes back it republishes with a higher version.
"""


class PartitionedSets:
    def __init__(self, owner):
        self.owner = owner
        self._partitions = {owner: (0, frozenset())}  # node -> (version, members)

    def set_local(self, members):
        """Replace this node's partition; returns the delta to send, or None if unchanged."""
        version, current = self._partitions[self.owner]
        members = frozenset(members)
        if members == current:
            return None
        self._partitions[self.owner] = (version + 1, members)
        return self.delta(self.owner)

    def local_members(self):
        return self._partitions[self.owner][1]

    def local_version(self):
        return self._partitions[self.owner][0]

    def version_of(self, owner):
        """The version of *owner*'s partition held here (-1 if none)."""
        partition = self._partitions.get(owner)
        return -1 if partition is None else partition[0]

    def delta(self, owner):
        version, members = self._partitions[owner]
        return {owner: [version, sorted(members)]}

    def merge(self, partitions):
        """Take partitions from a replica; return the owners whose partition changed."""
        changed = []
        for owner, (version, members) in partitions.items():
            if owner == self.owner:
                continue  # only the owner writes its own partition
            current = self._partitions.get(owner)
            if current is None or version > current[0]:
                self._partitions[owner] = (version, frozenset(members))
                changed.append(owner)
        return changed

    def drop(self, owner):
        if owner != self.owner:
            self._partitions.pop(owner, None)

    def digest(self):
        """Owner -> version, for anti-entropy: a peer asks only for what differs."""
        return {owner: version for owner, (version, _) in self._partitions.items()}

    def newer_than(self, digest):
        """The partitions that a replica with *digest* lacks or has older."""
        return {
            owner: [version, sorted(members)]
            for owner, (version, members) in self._partitions.items()
            if digest.get(owner, -1) < version
        }

    def owners_with(self, member):
        """The nodes whose partition contains *member* (e.g. nodes with interest in a type)."""
        return [owner for owner, (_, members) in self._partitions.items() if member in members]

    def snapshot(self):
        return {owner: (version, set(members))
                for owner, (version, members) in self._partitions.items()}
