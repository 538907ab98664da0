"""Recovery of missed events: a bounded history of what this node published.

Every event published on this node gets a sequence number, and SSE frames
carry ``id: <epoch>.<seq>``: a position in this node's stream. The epoch is
random per process, so a position from another node or from before a
restart is recognised as unknown instead of being misread. WebSocket and
long-poll clients only see CloudEvents, so they name their last event by its
CloudEvent ``id``; those ids (and those of the welcome events this node sent)
are looked up here too.

A reconnecting client is sent the events after its position that match its
new subscriptions. The answer is *complete* only if none of those positions
has been evicted (by size or age) since.

So that a node still receives the events a just-disconnected client will ask
for, the event types of connections that went away keep counting as this
node's cluster interest for as long as the history keeps events.

In a cluster a CloudEvent id may also be known to a node the client was never
connected to, whose history lacks the event types nobody there subscribed to.
So there, resuming from an event id is complete only if this node has wanted
every subscribed type since (with a grace for peers to learn of it).
"""
import collections
import itertools
import os

from rig import defaults

# peers learn of a new interest before the confirmation (pushed and acknowledged); the
# grace covers interest that lingers or is refreshed without a confirmation
INTEREST_GRACE = 2.0


class History:
    """The last ``max_events`` events (none older than ``max_age`` seconds)."""

    def __init__(self, clock, *, max_events=defaults.RECOVERY_HISTORY_SIZE,
                 max_age=defaults.RECOVERY_HISTORY_AGE, epoch=None):
        self._clock = clock
        self.max_events = max_events
        self.max_age = max_age
        self.epoch = epoch or os.urandom(4).hex()
        self._prefix = self.epoch.encode("ascii") + b"."
        self._seq = itertools.count(1)
        self.last_seq = 0
        self._entries = collections.deque()  # (seq, time, event)
        self._by_event_id = {}  # CloudEvent id -> seq of its latest publication here
        self._markers = collections.deque()  # (time, id, seq): ids of welcome events
        self._evicted_upto = 0  # every seq up to this one is gone
        self._lingering = {}  # event type -> time until which it stays of interest
        self._interest_since = None  # in a cluster: event type -> since when it is wanted

    # -- recording --------------------------------------------------------

    def record(self, event):
        """Number *event* and keep it; return its position id (bytes, for SSE ``id:``)."""
        seq = self.last_seq = next(self._seq)
        if self.max_events:
            now = self._clock.seconds()
            self._entries.append((seq, now, event))
            self._by_event_id[event.id] = seq
            if len(self._entries) > self.max_events or now - self._entries[0][1] > self.max_age:
                self._trim(now)
        else:
            self._evicted_upto = seq
        return self._prefix + b"%d" % seq

    def position_id(self, seq=None):
        """The SSE id of *seq* (default: the current position)."""
        return self._prefix + b"%d" % (self.last_seq if seq is None else seq)

    def mark(self, *event_ids):
        """Remember that *event_ids* (a welcome's events) were sent at the current
        position."""
        if not self.max_events:
            return
        now, seq = self._clock.seconds(), self.last_seq
        markers, by_id = self._markers, self._by_event_id
        for event_id in event_ids:
            markers.append((now, event_id, seq))
            by_id.setdefault(event_id, seq)
        self._trim(now)

    def linger(self, event_types):
        """Keep *event_types* of interest while a client may still come back for them."""
        if self.max_events and event_types:
            until = self._clock.seconds() + self.max_age
            for event_type in event_types:
                self._lingering[event_type] = until

    def note_interest(self, event_types):
        """Record which types this node asks the cluster for (called on every refresh)."""
        since = self._interest_since
        if since is None:
            since = self._interest_since = {}
        for gone in since.keys() - event_types:
            del since[gone]
        now = self._clock.seconds()
        for event_type in event_types:
            since.setdefault(event_type, now)

    def lingering_types(self):
        now = self._clock.seconds()
        expired = [name for name, until in self._lingering.items() if until <= now]
        for name in expired:
            del self._lingering[name]
        return set(self._lingering)

    def _trim(self, now):
        entries, by_id = self._entries, self._by_event_id
        oldest = now - self.max_age
        while entries and (len(entries) > self.max_events or entries[0][1] < oldest):
            seq, _, event = entries.popleft()
            self._evicted_upto = seq
            if by_id.get(event.id) == seq:
                del by_id[event.id]
        markers = self._markers
        limit = 4 * self.max_events  # welcome ids of many short connections stay bounded too
        while markers and (len(markers) > limit or markers[0][0] < oldest
                           or markers[0][2] < self._evicted_upto):
            _, event_id, seq = markers.popleft()
            if by_id.get(event_id) == seq and not self._is_event(event_id, seq):
                del by_id[event_id]

    def _is_event(self, event_id, seq):
        entries = self._entries
        if not entries or seq < entries[0][0]:
            return False
        entry = entries[seq - entries[0][0]]
        return entry[2].id == event_id

    # -- replay -----------------------------------------------------------

    def position_of(self, last_event_id):
        """The sequence number *last_event_id* names here, or None if unknown."""
        found = self._lookup(last_event_id)
        return None if found is None else found[0]

    def _lookup(self, last_event_id):
        """``(seq, entry)``: *entry* is the history entry when the id is a CloudEvent's,
        None for this node's own positions and welcome ids."""
        if not last_event_id:
            return None
        epoch, dot, number = last_event_id.rpartition(".")
        if dot and epoch == self.epoch and number.isdigit():
            seq = int(number)
            return (seq, None) if seq <= self.last_seq else None
        seq = self._by_event_id.get(last_event_id)
        if seq is None:
            return None
        entries = self._entries
        if entries and seq >= entries[0][0]:
            entry = entries[seq - entries[0][0]]
            if entry[2].id == last_event_id:
                return seq, entry
        return seq, None

    def since(self, last_event_id, event_types=()):
        """``(complete, [(position_id, event), ...])``: what came after *last_event_id*.

        Not complete when the id is unknown here, when events after it were
        evicted, or (in a cluster, for a CloudEvent id) when this node did not
        want all of *event_types* since then.
        """
        now = self._clock.seconds()
        if self._entries and now - self._entries[0][1] > self.max_age:
            self._trim(now)
        found = self._lookup(last_event_id)
        if found is None:
            return False, []
        seq, entry = found
        complete = seq >= self._evicted_upto
        if entry is not None and self._interest_since is not None:
            complete = complete and self._wanted_all_along(event_types, entry[1])
        entries = self._entries
        start = 0 if not entries else max(0, seq + 1 - entries[0][0])
        missed = [(self._prefix + b"%d" % entry[0], entry[2])
                  for entry in itertools.islice(entries, start, None)]
        return complete, missed

    def _wanted_all_along(self, event_types, since):
        wanted = self._interest_since
        for event_type in event_types:
            began = wanted.get(event_type)
            if began is None or began + INTEREST_GRACE > since:
                return False
        return True

    def __len__(self):
        return len(self._entries)
