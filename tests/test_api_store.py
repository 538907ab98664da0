"""The API definition store is an LWW map with tombstones: replicas converge (issue 4/5)."""
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from rig.proxy.store import ApiStore


def definition(api_id, port):
    return {"id": api_id, "name": api_id, "auth_type": "none",
            "proxy": {"target_url": "127.0.0.1", "port": port},
            "version_data": {"default": {"endpoints": [
                {"id": "e", "method": "GET", "path_regex": f"/{api_id}"}]}}}


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]),            # the node that writes
    st.sampled_from(["create", "update", "delete"]),
    st.sampled_from(["x", "y"]),                 # the API id
    st.integers(min_value=1, max_value=9),       # a port, so values differ
), max_size=15)


def replicas():
    clock = Clock()
    stores = {name: ApiStore(clock, name) for name in "abc"}
    deltas = []
    for store in stores.values():
        store.on_change.append(lambda api, deltas=deltas: deltas.append({api["id"]: dict(api)}))
    return clock, stores, deltas


def apply(clock, stores, operations):
    for node, operation, api_id, port in operations:
        clock.advance(1)
        store = stores[node]
        if operation == "create":
            store.create(definition(api_id, port))
        elif operation == "update":
            store.update(api_id, {"proxy": {"target_url": "127.0.0.1", "port": port}})
        else:
            store.deactivate(api_id)


@settings(derandomize=True, deadline=None, database=None, max_examples=80)
@given(operations=OPERATIONS, order=st.randoms(use_true_random=False))
def test_deltas_in_any_order_equal_state_merge(operations, order):
    clock, stores, deltas = replicas()
    apply(clock, stores, operations)
    by_deltas = ApiStore(clock, "d")
    shuffled = list(deltas) * 2  # duplicated, reordered
    order.shuffle(shuffled)
    for delta in shuffled:
        by_deltas.merge(delta)
    by_state = ApiStore(clock, "s")
    for store in (stores["c"], stores["a"], stores["b"], stores["a"]):  # any order, repeated
        by_state.merge(store.snapshot())
    assert by_deltas.snapshot() == by_state.snapshot()
    assert {api["id"] for api in by_deltas.active()} == {api["id"] for api in by_state.active()}


def test_deactivated_apis_are_tombstones_that_a_later_create_revives():
    clock, stores, _ = replicas()
    store = stores["a"]
    assert store.create(definition("x", 1))
    assert not store.create(definition("x", 2))
    clock.advance(1)
    assert store.deactivate("x")
    assert store.get("x") is None and store.routes() == []
    clock.advance(1)
    assert store.create(definition("x", 3))
    assert store.get("x")["ref_number"] == 2
    other = stores["b"]
    other.merge({"x": dict(store.snapshot()["x"], ref_number=1, active=False)})
    other.merge(store.snapshot())
    assert other.get("x")["proxy"]["port"] == 3
