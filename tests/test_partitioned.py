"""Owner-partitioned sets converge under any delivery order, duplication and loss of old updates."""
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.cluster.partitioned import PartitionedSets

NODES = ["a", "b", "c"]


def test_local_updates_produce_deltas_and_bump_versions():
    sets = PartitionedSets("a")
    assert sets.set_local({"greeting"}) == {"a": [1, ["greeting"]]}
    assert sets.set_local({"greeting"}) is None
    assert sets.set_local({"greeting", "news"}) == {"a": [2, ["greeting", "news"]]}
    assert sets.digest() == {"a": 2}


def test_merge_keeps_higher_versions_and_ignores_own_partition():
    sets = PartitionedSets("a")
    assert sets.merge({"b": [2, ["x"]]}) == ["b"]
    assert sets.merge({"b": [1, ["old"]]}) == []
    assert sets.merge({"a": [99, ["forged"]]}) == []
    assert sets.owners_with("x") == ["b"]
    assert sets.newer_than({"b": 1}) == {"a": [0, []], "b": [2, ["x"]]}
    assert sets.newer_than({"a": 0, "b": 2}) == {}
    sets.drop("b")
    assert sets.owners_with("x") == []
    sets.drop("a")
    assert "a" in sets.digest()


@settings(derandomize=True, deadline=None, database=None, max_examples=60)
@given(
    updates=st.lists(st.tuples(st.sampled_from(NODES), st.sets(st.sampled_from("wxyz"))),
                     max_size=12),
    order=st.randoms(use_true_random=False),
    duplicates=st.integers(min_value=0, max_value=3),
)
def test_replicas_converge_whatever_the_delivery_order(updates, order, duplicates):
    nodes = {name: PartitionedSets(name) for name in NODES}
    deltas = [replica.delta(name) for name, replica in nodes.items()]  # the join-time sync
    for owner, members in updates:
        delta = nodes[owner].set_local(members)
        if delta is not None:
            deltas.append(delta)
    deliveries = deltas * (1 + duplicates)
    for replica in nodes.values():
        shuffled = list(deliveries)
        order.shuffle(shuffled)
        for delta in shuffled:
            replica.merge(delta)
    snapshots = [replica.snapshot() for replica in nodes.values()]
    assert all(snapshot == snapshots[0] for snapshot in snapshots)
    last = {owner: set(members) for owner, members in updates}  # each owner's latest write
    for owner, members in last.items():
        assert snapshots[0][owner][1] == members
