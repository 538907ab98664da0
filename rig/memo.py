"""A dict of the newest entries: memos of what clients send, bounded against any client."""


class Memo(dict):
    """Keeps at most *entries* keys; the oldest goes when a new one comes. A dict, so a
    lookup costs what a dict's does (these memos sit on the connect path)."""

    def __init__(self, entries):
        super().__init__()
        self.entries = entries

    def remember(self, key, value):
        if len(self) >= self.entries:
            del self[next(iter(self))]
        self[key] = value
