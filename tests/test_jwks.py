"""JWKS keys: background fetches on the reactor clock, rate-limited refresh, validation."""
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from rig.auth.jwks import JWKSKeys
from rig.auth.jwt import InvalidJWT, JWTValidator

NOW = 1_700_000_000
URL = "https://issuer.local/.well-known/jwks.json"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256_KEY = ec.generate_private_key(ec.SECP256R1())
P384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(private_key, kid, alg="RS256"):
    jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


def ec_jwk(private_key, kid, alg):
    jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


OCT_JWK = {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}


def document(*jwks):
    return json.dumps({"keys": list(jwks)}).encode("utf-8")


class FakeGet:
    """Records each GET and answers with a Deferred the test fires."""

    def __init__(self):
        self.calls = []

    def __call__(self, url):
        answer = Deferred()
        self.calls.append((url, answer))
        return answer

    def respond(self, status, body):
        self.calls[-1][1].callback((status, body))


def make(**kwargs):
    clock = Clock()
    clock.advance(NOW)
    get = FakeGet()
    return clock, get, JWKSKeys(clock, get, URL, **kwargs)


def loaded(*jwks, **kwargs):
    """A key set that fetched *jwks* once at start."""
    clock, get, keys = make(**kwargs)
    keys.refresh()
    get.respond(200, document(*jwks))
    return clock, get, keys


def token(private_key, alg, kid, **extra):
    payload = {"sub": "alice", "exp": NOW + 3600}
    payload.update(extra)
    return jwt.encode(payload, private_key, algorithm=alg, headers={"kid": kid})


def reason(validator, text):
    with pytest.raises(InvalidJWT) as info:
        validator.claims(text)
    return str(info.value)


# Loading


def test_loads_rsa_and_ec_keys():
    _, get, keys = loaded(
        rsa_jwk(RSA_KEY, "r1"), ec_jwk(P256_KEY, "e256", "ES256"), ec_jwk(P384_KEY, "e384", "ES384")
    )
    assert get.calls[0][0] == URL
    assert keys.key("r1").key_type == "RSA"
    assert keys.key("r1").algorithm_name == "RS256"
    assert keys.key("e256").algorithm_name == "ES256"
    assert keys.key("e384").algorithm_name == "ES384"
    assert keys.key("r1").key.public_numbers() == RSA_KEY.public_key().public_numbers()
    assert len(get.calls) == 1


def test_oct_keys_are_ignored():
    _, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"), OCT_JWK)
    assert keys.key("r1") is not None
    assert keys.key("hmac") is None


def test_keys_without_kid_are_ignored():
    jwk = RSAAlgorithm.to_jwk(RSA_OTHER.public_key(), as_dict=True)
    _, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"), jwk)
    assert keys.key("r1") is not None
    assert keys.key(None) is None


def test_a_successful_refresh_replaces_the_key_set():
    clock, get, keys = loaded(rsa_jwk(RSA_KEY, "r1"), min_interval=10)
    clock.advance(10)
    keys.refresh()
    get.respond(200, document(rsa_jwk(RSA_OTHER, "r2")))
    assert keys.key("r2") is not None
    assert keys._keys.get("r1") is None


# Refresh on unknown kid


def test_unknown_kid_triggers_a_refresh_at_most_once_per_min_interval():
    clock, get, keys = loaded(rsa_jwk(RSA_KEY, "r1"), min_interval=10)
    assert len(get.calls) == 1
    assert keys.key("r1") is not None
    assert len(get.calls) == 1  # known kid: no fetch
    assert keys.key("new") is None
    assert len(get.calls) == 1  # fetched 0 s ago: too soon
    clock.advance(9)
    assert keys.key("new") is None
    assert len(get.calls) == 1
    clock.advance(1)
    assert keys.key("new") is None
    assert len(get.calls) == 2
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1"), rsa_jwk(RSA_OTHER, "new")))
    assert keys.key("new") is not None
    assert keys.key("other") is None
    assert len(get.calls) == 2  # the last attempt was just now


def test_unknown_kid_does_not_start_a_second_fetch_while_one_is_in_flight():
    clock, get, keys = make(min_interval=10)
    keys.refresh()
    clock.advance(30)
    for _ in range(5):
        assert keys.key("x") is None
    assert len(get.calls) == 1
    get.respond(200, document(rsa_jwk(RSA_KEY, "x")))
    assert keys.key("x") is not None


def test_first_unknown_kid_fetches_immediately():
    _, get, keys = make(min_interval=10)
    assert keys.key("r1") is None
    assert len(get.calls) == 1
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    assert keys.key("r1") is not None


def test_failed_fetches_are_rate_limited_too():
    clock, get, keys = make(min_interval=10)
    keys.key("r1")
    get.calls[-1][1].errback(ConnectionRefusedError())
    keys.key("r1")
    assert len(get.calls) == 1
    clock.advance(10)
    keys.key("r1")
    assert len(get.calls) == 2


# Keeping the old keys


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"oops"),
        (404, document()),
        (301, b""),
        (200, b"{not json"),
        (200, b""),
        (200, b"\xff\xfe"),
        (200, b"[]"),
        (200, b"null"),
        (200, b"{}"),
        (200, b'{"keys": []}'),
        (200, b'{"keys": "nope"}'),
        (200, b'{"keys": [{"kty": "RSA", "kid": "broken"}]}'),
    ],
)
def test_bad_answers_keep_the_old_keys(status, body):
    clock, get, keys = loaded(rsa_jwk(RSA_KEY, "r1"), min_interval=10)
    clock.advance(10)
    keys.refresh()
    get.respond(status, body)
    assert keys.key("r1") is not None
    assert len(get.calls) == 2
    # The failure does not wedge the fetcher: the next refresh asks again.
    clock.advance(10)
    keys.refresh()
    assert len(get.calls) == 3


def test_failing_fetch_keeps_the_old_keys():
    clock, get, keys = loaded(rsa_jwk(RSA_KEY, "r1"), min_interval=10)
    clock.advance(10)
    keys.refresh()
    get.calls[-1][1].errback(ConnectionRefusedError())
    assert keys.key("r1") is not None
    clock.advance(10)
    keys.refresh()
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1"), rsa_jwk(RSA_OTHER, "r2")))
    assert keys.key("r2") is not None


# Validation with JWKS


def jwks_validator(keys, clock, **kwargs):
    return JWTValidator(clock, jwks=keys, **kwargs)


def test_validator_accepts_a_token_with_a_known_kid():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"), ec_jwk(P256_KEY, "e1", "ES256"),
                            ec_jwk(P384_KEY, "e2", "ES384"))
    validator = jwks_validator(keys, clock)
    assert validator.claims(token(RSA_KEY, "RS256", "r1"))["sub"] == "alice"
    assert validator.claims(token(P256_KEY, "ES256", "e1"))["sub"] == "alice"
    assert validator.claims(token(P384_KEY, "ES384", "e2"))["sub"] == "alice"


def test_validator_accepts_rs512_when_the_jwk_says_so():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r5", alg="RS512"))
    validator = jwks_validator(keys, clock)
    assert validator.claims(token(RSA_KEY, "RS512", "r5"))["sub"] == "alice"
    assert reason(validator, token(RSA_KEY, "RS256", "r5")) == "Invalid signature"


def test_validator_rejects_an_unknown_kid_and_refreshes():
    clock, get, keys = loaded(rsa_jwk(RSA_KEY, "r1"), min_interval=10)
    validator = jwks_validator(keys, clock)
    clock.advance(10)
    fresh = token(RSA_OTHER, "RS256", "r2")
    assert reason(validator, fresh) == "unknown key id"
    assert len(get.calls) == 2
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1"), rsa_jwk(RSA_OTHER, "r2")))
    assert validator.claims(fresh)["sub"] == "alice"


def test_validator_rejects_a_token_without_kid():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"))
    validator = jwks_validator(keys, clock)
    bare = jwt.encode({"exp": NOW + 3600}, RSA_KEY, algorithm="RS256")
    assert reason(validator, bare) == "unknown key id"


def test_validator_rejects_a_header_alg_different_from_the_jwks_alg():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1", alg="RS256"), ec_jwk(P256_KEY, "e1", "ES256"))
    validator = jwks_validator(keys, clock)
    assert reason(validator, token(RSA_KEY, "RS384", "r1")) == "Invalid signature"
    assert reason(validator, token(RSA_KEY, "RS512", "r1")) == "Invalid signature"
    # An RSA-signed token claiming the EC key's kid.
    assert reason(validator, token(RSA_KEY, "RS256", "e1")) == "Invalid signature"


@pytest.mark.parametrize("configured", ["HS256", "RS256"])
def test_validator_rejects_tokens_for_a_jwk_whose_alg_is_not_supported(configured):
    # The JWK is declared for PS256 (not a supported algorithm): its alg still binds it,
    # so an RS256 token must not verify against it, whatever JWT_ALG says.
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "p1", alg="PS256"))
    validator = jwks_validator(keys, clock, algorithm=configured)
    assert reason(validator, token(RSA_KEY, "RS256", "p1")) == "Invalid signature"
    assert reason(validator, token(RSA_KEY, "PS256", "p1")) == "Invalid signature"


def test_jwk_without_alg_is_used_with_its_key_types_default():
    jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    jwk["kid"] = "r0"
    clock, _, keys = loaded(jwk)
    validator = jwks_validator(keys, clock)
    assert validator.claims(token(RSA_KEY, "RS256", "r0"))["sub"] == "alice"
    assert reason(validator, token(RSA_KEY, "RS384", "r0")) == "Invalid signature"


def test_validator_accepts_eddsa_jwks():
    jwk = OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True)
    jwk.update(kid="ed", alg="EdDSA")
    clock, _, keys = loaded(jwk)
    validator = jwks_validator(keys, clock)
    assert validator.claims(token(ED_KEY, "EdDSA", "ed"))["sub"] == "alice"


def test_validator_rejects_a_signature_by_another_key_under_a_known_kid():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"))
    validator = jwks_validator(keys, clock)
    assert reason(validator, token(RSA_OTHER, "RS256", "r1")) == "Invalid signature"


def test_validator_rejects_hmac_confusion_with_the_jwk():
    # An HS256 token keyed with the RSA JWK's JSON (or anything) and the RSA kid.
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"))
    validator = jwks_validator(keys, clock)
    encode = jwt.utils.base64url_encode
    header = encode(json.dumps({"alg": "HS256", "kid": "r1"}).encode()).decode()
    payload = encode(json.dumps({"exp": NOW + 3600}).encode()).decode()
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (json.dumps(rsa_jwk(RSA_KEY, "r1")).encode(), pem):
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        forged = f"{header}.{payload}.{encode(signature).decode()}"
        assert reason(validator, forged) == "Invalid signature"


@pytest.mark.parametrize("alg", ["none", "None", "HS256"])
def test_validator_rejects_alg_none_and_hmac_under_a_known_kid(alg):
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"))
    validator = jwks_validator(keys, clock)
    header = json.dumps({"alg": alg, "kid": "r1"}).encode()
    payload = json.dumps({"exp": NOW + 3600}).encode()
    encode = jwt.utils.base64url_encode
    forged = f"{encode(header).decode()}.{encode(payload).decode()}."
    with pytest.raises(InvalidJWT):
        validator.claims(forged)


def test_validator_does_not_use_oct_keys():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"), OCT_JWK)
    validator = jwks_validator(keys, clock)
    forged = jwt.encode({"exp": NOW + 3600}, "secret-secret-secret", algorithm="HS256",
                        headers={"kid": "hmac"})
    assert reason(validator, forged) == "unknown key id"


def test_validator_applies_claim_checks_to_jwks_tokens():
    clock, _, keys = loaded(rsa_jwk(RSA_KEY, "r1"))
    validator = jwks_validator(keys, clock)
    assert reason(validator, token(RSA_KEY, "RS256", "r1", exp=NOW - 3600)) == "token expired"


# Lifecycle


def test_start_fetches_at_once_and_periodically():
    clock, get, keys = make(refresh_interval=600)
    keys.start()
    assert len(get.calls) == 1
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    assert keys.key("r1") is not None
    clock.advance(600)
    assert len(get.calls) == 2
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    keys.stop()
    assert clock.getDelayedCalls() == []


def test_start_stop_leave_no_delayed_calls():
    clock, get, keys = make()
    keys.start()
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    assert clock.getDelayedCalls() != []
    keys.stop()
    assert clock.getDelayedCalls() == []
    keys.stop()
    assert clock.getDelayedCalls() == []


def test_stop_while_a_fetch_is_in_flight_leaves_no_delayed_calls():
    clock, get, keys = make()
    keys.start()
    keys.stop()
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    assert keys.key("r1") is not None
    assert clock.getDelayedCalls() == []


def test_the_periodic_refresh_survives_failures():
    clock, get, keys = make(refresh_interval=600)
    keys.start()
    get.calls[-1][1].errback(ConnectionRefusedError())
    clock.advance(600)
    assert len(get.calls) == 2
    get.respond(500, b"")
    clock.advance(600)
    assert len(get.calls) == 3
    get.respond(200, document(rsa_jwk(RSA_KEY, "r1")))
    assert keys.key("r1") is not None
    keys.stop()
    assert clock.getDelayedCalls() == []
