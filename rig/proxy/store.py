"""The API definition store: a last-writer-wins map with tombstones, ready for replication.

Each entry carries its version ``(ref_number, timestamp, node)``; a merge keeps
the higher version per API id, so replicas converge whatever order updates
arrive in. Deleting deactivates (a tombstone with ``active: false``), which
is what RIG's management API shows, and lets a later POST revive the id.
"""
from twisted.logger import Logger

from rig.proxy.definitions import routes_of


def version_of(api):
    return (api.get("ref_number", 0), api.get("timestamp", 0.0), api.get("node_name", ""))


class ApiStore:
    log = Logger()

    def __init__(self, clock, node):
        self._clock = clock
        self._node = node
        self._apis = {}  # id -> definition with metadata, tombstones included
        self._routes = []
        self.on_change = []  # callables(api): the cluster replicates local writes

    # -- reads -------------------------------------------------------------

    def get(self, api_id):
        """The active definition *api_id*, or None."""
        api = self._apis.get(api_id)
        return api if api is not None and api.get("active", True) else None

    def active(self):
        return [api for api in self._apis.values() if api.get("active", True)]

    def routes(self):
        return self._routes

    def snapshot(self):
        return dict(self._apis)

    # -- writes ------------------------------------------------------------

    def create(self, api):
        """Add a new API, or revive a deactivated one; False if an active one exists."""
        old = self._apis.get(api["id"])
        if old is not None and old.get("active", True):
            return False
        ref_number = old["ref_number"] + 1 if old is not None else 0
        self._put(dict(api, active=True, ref_number=ref_number))
        return True

    def update(self, api_id, changes):
        """Shallow-merge *changes* into the active API; False if there is none."""
        old = self.get(api_id)
        if old is None:
            return False
        merged = {**old, **changes, "id": api_id, "active": True,
                  "ref_number": old["ref_number"] + 1}
        self._put(merged)
        return True

    def deactivate(self, api_id):
        old = self.get(api_id)
        if old is None:
            return False
        self._put(dict(old, active=False, ref_number=old["ref_number"] + 1))
        return True

    def merge(self, apis):
        """Take a replica's definitions: per id, the higher version wins."""
        changed = False
        for api_id, api in apis.items():
            old = self._apis.get(api_id)
            if old is None or version_of(api) > version_of(old):
                self._apis[api_id] = api
                changed = True
        if changed:
            self._rebuild()

    def _put(self, api):
        api["timestamp"] = self._clock.seconds()
        api["node_name"] = self._node
        self._apis[api["id"]] = api
        self._rebuild()
        for listener in self.on_change:
            listener(api)

    def _rebuild(self):
        routes = []
        for api in self._apis.values():
            routes.extend(routes_of(api))
        self._routes = routes
