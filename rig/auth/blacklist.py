"""The session blacklist: session id -> expiry, ready for replication.

A state-based CRDT in its simplest form: merging two maps keeps, per session,
the later expiry (a max-register), so merges commute, associate and are
idempotent, and re-adding a session can only extend it. Expiry is absolute
time from the reactor clock, so replicas agree on what "expired" means.
"""
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class Blacklist:
    log = Logger()

    def __init__(self, clock):
        self._clock = clock
        self._expiry = {}
        self._listeners = []
        self.added = 0  # entries ever added here or merged in from a replica (a metric)
        self._purge = LoopingCall(self.purge)
        self._purge.clock = clock

    def on_add(self, listener):
        """Call ``listener(session)`` whenever a session is (re-)blacklisted."""
        self._listeners.append(listener)

    def add(self, session, expires_at):
        """Blacklist *session* until *expires_at* (or longer if already so)."""
        if expires_at > self._expiry.get(session, float("-inf")):
            self._expiry[session] = expires_at
        self.added += 1
        self._notify(session)

    def merge(self, entries):
        """Take a replica's entries; sessions that became blacklisted are announced."""
        for session, expires_at in entries.items():
            was_live = session in self
            if expires_at > self._expiry.get(session, float("-inf")):
                self._expiry[session] = expires_at
                if not was_live and session in self:
                    self.added += 1
                    self._notify(session)

    def expires_at(self, session):
        expires_at = self._expiry.get(session)
        if expires_at is None or expires_at <= self._clock.seconds():
            return None
        return expires_at

    def __contains__(self, session):
        return self.expires_at(session) is not None

    def __len__(self):
        now = self._clock.seconds()
        return sum(1 for expires_at in self._expiry.values() if expires_at > now)

    def snapshot(self):
        return dict(self._expiry)

    def purge(self):
        now = self._clock.seconds()
        for session in [s for s, expires_at in self._expiry.items() if expires_at <= now]:
            del self._expiry[session]

    def start(self, interval=60.0):
        self._purge.start(interval, now=False).addErrback(
            lambda failure: self.log.failure("blacklist purge loop died", failure)
        )

    def stop(self):
        if self._purge.running:
            self._purge.stop()

    def _notify(self, session):
        for listener in self._listeners:
            try:
                listener(session)
            except Exception:
                self.log.failure("blacklist listener for {session}", session=session)
