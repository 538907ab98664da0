"""JWT validation with pyjwt, on the reactor's clock.

The configured algorithm is the only one a static key accepts, keys are
loaded once with the type the algorithm needs (so an RSA public key can never
be used as an HMAC secret), ``alg: none`` never verifies, and time claims are
checked against the injected clock (pyjwt's own checks use the wall clock).
"""
import math
import os

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from rig.auth.hmac_fast import HmacFastPath
from rig.subscriptions.pointer import MISSING, resolve

SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
ALGORITHMS = SYMMETRIC + ASYMMETRIC
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_SKIP_PYJWT_CLAIM_CHECKS = {
    "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False,
}
MAX_TOKEN_BYTES = 16384
LAST_EXPIRY = 253402300799  # 9999-12-31T23:59:59Z: later has no calendar date


class InvalidJWT(ValueError):
    """A token that must not be trusted; str() is the reason RIG reports."""


def load_key(algorithm, material):
    """The verification key for *algorithm* from a secret, PEM text or a PEM file path.

    Raises ValueError with a sentence when the material does not fit the algorithm.
    """
    if algorithm not in ALGORITHMS:
        names = ", ".join(ALGORITHMS)
        raise ValueError(f"unsupported algorithm {algorithm!r} (use one of {names})")
    if algorithm in SYMMETRIC:
        if not material:
            raise ValueError(f"{algorithm} needs a non-empty secret")
        if "-----BEGIN" in material or material.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-")):
            raise ValueError(f"{algorithm} needs a shared secret, not a public key")
        return material.encode("utf-8")
    text = material.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN") and os.path.isfile(text):
        with open(text, encoding="utf-8") as pem_file:
            text = pem_file.read()
    key = _public_key(text.encode("utf-8"))
    _check_key_type(algorithm, key)
    return key


def _public_key(data):
    try:
        return x509.load_pem_x509_certificate(data).public_key()
    except ValueError:
        pass
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key or certificate") from None


def _check_key_type(algorithm, key):
    family = algorithm[:2]
    if family == "RS" and isinstance(key, rsa.RSAPublicKey):
        return
    if family == "ES" and isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, _EC_CURVES[algorithm]):
            return
        raise ValueError(f"{algorithm} needs a {_EC_CURVES[algorithm].name} key")
    if algorithm == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return
    raise ValueError(f"the key does not fit {algorithm}")


class JWTValidator:
    """Turns a token into trusted claims, or raises InvalidJWT with RIG's reason."""

    def __init__(self, clock, *, algorithm="HS256", key=None, jwks=None, blacklist=None,
                 session_pointer=("jti",), leeway=10.0):
        self._clock = clock
        self._algorithm = algorithm
        self._key = key
        self._jwks = jwks
        self._blacklist = blacklist if blacklist is not None else frozenset()
        self.session_pointer = session_pointer
        self._leeway = leeway
        self._fast = None  # a plain HS* token with the static key skips PyJWT's slow path
        if jwks is None and algorithm in SYMMETRIC and isinstance(key, bytes):
            self._fast = HmacFastPath(algorithm, key).claims

    def claims(self, token):
        if not isinstance(token, str) or not token:
            raise InvalidJWT("not a token: empty")
        if not token.isascii():
            raise InvalidJWT("not a token: non-ASCII characters")
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidJWT(f"not a token: longer than {MAX_TOKEN_BYTES} bytes")
        claims = self._fast(token) if self._fast is not None else None
        if claims is None:
            claims = self._verified(token)
        self._check_times(claims)
        self._check_blacklist(claims)
        return claims

    def _verified(self, token):
        """PyJWT's verdict: the claims, or InvalidJWT with RIG's reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidJWT("Could not verify token") from None
        key, algorithm = self._key_for(header)
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm],
                                options=_SKIP_PYJWT_CLAIM_CHECKS)
        except jwt.InvalidSignatureError:
            raise InvalidJWT("Invalid signature") from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
            raise InvalidJWT("Invalid signature") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidJWT("Could not verify token") from None
        if not isinstance(claims, dict):
            raise InvalidJWT("Could not verify token")
        return claims

    def session_of(self, claims):
        """The session a token belongs to (``JWT_SESSION_FIELD``), or None."""
        value = resolve(self.session_pointer, claims)
        return value if isinstance(value, str) and value else None

    def _key_for(self, header):
        algorithm = header.get("alg")
        if self._jwks is None:
            if algorithm != self._algorithm or self._key is None:
                raise InvalidJWT("Invalid signature")
            return self._key, algorithm
        jwk = self._jwks.key(header.get("kid"))
        if jwk is None:
            raise InvalidJWT("unknown key id")
        # the key's own alg binds it (pyjwt infers one from kty/crv when the JWK has none)
        if algorithm != jwk.algorithm_name or algorithm not in ASYMMETRIC:
            raise InvalidJWT("Invalid signature")
        return jwk.key, algorithm

    def _check_times(self, claims):
        now = self._clock.seconds()
        expires = claims.get("exp")
        if not _is_number(expires) or expires <= now - self._leeway:
            raise InvalidJWT("token expired")
        if expires > LAST_EXPIRY:  # 10**400 would overflow every timer
            raise InvalidJWT("token expiry out of range (after the year 9999)")
        not_before = claims.get("nbf", MISSING)
        if not_before is not MISSING and (
            not _is_number(not_before) or not_before > now + self._leeway
        ):
            raise InvalidJWT("token not yet valid")
        issued = claims.get("iat", MISSING)
        if issued is not MISSING and (not _is_number(issued) or issued > now + self._leeway):
            raise InvalidJWT("token issued in the future")

    def _check_blacklist(self, claims):
        for value in (claims.get("jti"), self.session_of(claims)):
            if isinstance(value, str) and value in self._blacklist:
                raise InvalidJWT(f'Ignoring blacklisted JWT with ID "{value}".')


def _is_number(value):
    """A finite JSON number (NaN would compare false with everything and never expire);
    integers are finite however large (``math.isfinite`` would overflow on 10**400)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


class NoJWTValidation:
    """Refuses every token: no key is configured."""

    session_pointer = ("jti",)

    def claims(self, token):
        raise InvalidJWT("JWT validation is not configured")

    def session_of(self, claims):
        return None
