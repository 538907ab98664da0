"""Everything the gateway needs to decide who may do what, built from settings."""
import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import succeed
from twisted.web.client import Agent, HTTPConnectionPool

from rig.auth.blacklist import Blacklist
from rig.auth.checks import NoCheck, make_check
from rig.auth.jwks import JWKSKeys
from rig.auth.jwt import JWTValidator, NoJWTValidation, load_key


@attrs.define
class Authority:
    validator: object
    blacklist: Blacklist
    subscription_check: object = attrs.Factory(NoCheck)
    submission_check: object = attrs.Factory(NoCheck)
    jwks: JWKSKeys | None = None
    http: object = None  # the OutboundHTTP the checks and JWKS use (closed at shutdown)

    @classmethod
    def unconfigured(cls, clock):
        """No key: every JWT is refused, every check allows."""
        return cls(NoJWTValidation(), Blacklist(clock))

    @classmethod
    def from_settings(cls, settings, clock, http=None, tracing=None):
        blacklist = Blacklist(clock)
        http = http or outbound_http(clock)
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JWKSKeys(clock, http.get_body, settings.jwt_jwks_url)
        if jwks is not None or settings.jwt_secret_key:
            key = load_key(settings.jwt_alg, settings.jwt_secret_key) if jwks is None else None
            validator = JWTValidator(
                clock, algorithm=settings.jwt_alg, key=key, jwks=jwks, blacklist=blacklist,
                session_pointer=settings.jwt_session_field, leeway=settings.jwt_leeway,
            )
        else:
            validator = NoJWTValidation()
            validator.session_pointer = settings.jwt_session_field

        def check(spec, name):
            return make_check(spec, validator=validator, post=http.post_status, clock=clock,
                              timeout=settings.auth_check_timeout, tracing=tracing, name=name)

        return cls(validator, blacklist, check(settings.subscription_check, "subscription check"),
                   check(settings.submission_check, "submission check"), jwks, http)

    def start(self):
        self.blacklist.start()
        if self.jwks is not None:
            self.jwks.start()

    def stop(self):
        self.blacklist.stop()
        if self.jwks is not None:
            self.jwks.stop()

    def close_connections(self):
        """Close the kept-alive connections to checkers and the JWKS endpoint (once no
        request is in progress: at the end of a shutdown); a Deferred."""
        return self.http.close() if self.http is not None else succeed(None)


@attrs.define
class OutboundHTTP:
    """The small HTTP client surface auth needs, over one private connection pool."""

    client: HTTPClient
    timeout: float = 5.0
    pool: HTTPConnectionPool | None = None

    def close(self):
        """Close the pool's idle connections; a Deferred."""
        return self.pool.closeCachedConnections() if self.pool is not None else succeed(None)

    def get_body(self, url):
        getting = self.client.get(url, timeout=self.timeout)
        return getting.addCallback(
            lambda response: treq.content(response).addCallback(
                lambda body: (response.code, body)
            )
        )

    def post_status(self, url, body, headers):
        posting = self.client.post(url, data=body, headers=headers, timeout=self.timeout)
        return posting.addCallback(
            lambda response: treq.content(response).addCallback(lambda _body: response.code)
        )


def outbound_http(reactor):
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    return OutboundHTTP(HTTPClient(Agent(reactor, pool=pool)), pool=pool)
