"""Keys from a JWKS URL, fetched in the background and refreshed on an unknown ``kid``.

Validation never waits for the network: a token whose key id is unknown is
refused at once and triggers a (rate-limited) refetch, so the client's retry
finds the new key.
"""

import jwt
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rig import jsonbounds


class JWKSKeys:
    log = Logger()

    def __init__(self, clock, http_get, url, *, refresh_interval=600.0, min_interval=10.0):
        self._clock = clock
        self._http_get = http_get  # url -> Deferred of (status, body bytes)
        self.url = url
        self._keys = {}
        self._fetching = None
        self._last_attempt = None
        self._min_interval = min_interval
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock
        self._refresh_interval = refresh_interval

    def key(self, kid):
        jwk = self._keys.get(kid)
        if jwk is None:
            self.request_refresh()
        return jwk

    def request_refresh(self):
        now = self._clock.seconds()
        if self._last_attempt is not None and now - self._last_attempt < self._min_interval:
            return
        self.refresh()

    def refresh(self):
        """Fetch the key set; on any failure keep the keys we have and log why."""
        if self._fetching is not None:
            return self._fetching
        self._last_attempt = self._clock.seconds()
        fetching = self._http_get(self.url)
        fetching.addCallback(self._received)
        fetching.addErrback(self._failed)
        fetching.addBoth(self._done)
        if not fetching.called:
            self._fetching = fetching
        return fetching

    def _received(self, response):
        status, body = response
        if not 200 <= status < 300:
            raise ValueError(f"HTTP status {status}")
        document = jsonbounds.loads(body)
        key_set = jwt.PyJWKSet.from_dict(document)
        keys = {
            jwk.key_id: jwk for jwk in key_set.keys
            if jwk.key_id is not None and jwk.key_type != "oct"
        }
        self._keys = keys
        self.log.info("Loaded {count} JWKS keys from {url}", count=len(keys), url=self.url)

    def _failed(self, failure):
        self.log.warn("Could not load JWKS keys from {url}: {why}", url=self.url,
                      why=failure.getErrorMessage())

    def _done(self, _):
        self._fetching = None

    def start(self):
        self._loop.start(self._refresh_interval, now=True).addErrback(
            lambda failure: self.log.failure("JWKS refresh loop died", failure)
        )

    def stop(self):
        if self._loop.running:
            self._loop.stop()
