"""JWT validation: the algorithm matrix, confusion attacks, claims, blacklist, settings."""
import base64
import datetime
import hashlib
import hmac
import json
import math

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from rig.auth.blacklist import Blacklist
from rig.auth.hmac_fast import HmacFastPath
from rig.auth.jwt import (
    ALGORITHMS,
    MAX_TOKEN_BYTES,
    InvalidJWT,
    JWTValidator,
    NoJWTValidation,
    load_key,
)
from rig.settings import Settings, SettingsError

NOW = 1_700_000_000
HOUR = 3600

# Keys are generated once per module: RSA generation is slow.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256_KEY = ec.generate_private_key(ec.SECP256R1())
P256_OTHER = ec.generate_private_key(ec.SECP256R1())
P384_KEY = ec.generate_private_key(ec.SECP384R1())
P384_OTHER = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ED_OTHER = ed25519.Ed25519PrivateKey.generate()
SECRET = "s" * 64
SECRET_OTHER = "t" * 64


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def private_pem(private_key):
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def certificate_pem(private_key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txrig test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    hash_algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else (
        hashes.SHA256()
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(private_key, hash_algorithm)
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


# algorithm -> (signing key, another key of the same type, verification material)
MATRIX = {
    "HS256": (SECRET, SECRET_OTHER, SECRET),
    "HS384": (SECRET, SECRET_OTHER, SECRET),
    "HS512": (SECRET, SECRET_OTHER, SECRET),
    "RS256": (RSA_KEY, RSA_OTHER, public_pem(RSA_KEY)),
    "RS384": (RSA_KEY, RSA_OTHER, public_pem(RSA_KEY)),
    "RS512": (RSA_KEY, RSA_OTHER, public_pem(RSA_KEY)),
    "ES256": (P256_KEY, P256_OTHER, public_pem(P256_KEY)),
    "ES384": (P384_KEY, P384_OTHER, public_pem(P384_KEY)),
    "EdDSA": (ED_KEY, ED_OTHER, public_pem(ED_KEY)),
}
ASYMMETRIC = [name for name in MATRIX if not name.startswith("HS")]


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256_token(secret, header, payload_bytes):
    """An HS256 token built by hand, so any header, payload or secret can be used."""
    signing_input = f"{b64(json.dumps(header))}.{b64(payload_bytes)}"
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned_token(payload, alg="none", signature=""):
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}))
    return f"{header}.{b64(json.dumps(payload))}.{signature}"


def make_clock():
    clock = Clock()
    clock.advance(NOW)
    return clock


def validator_for(algorithm, clock=None, **kwargs):
    material = MATRIX[algorithm][2]
    return JWTValidator(
        clock or make_clock(), algorithm=algorithm, key=load_key(algorithm, material), **kwargs
    )


def claims(**extra):
    payload = {"sub": "alice", "exp": NOW + HOUR}
    payload.update(extra)
    return payload


def reason(validator, token):
    with pytest.raises(InvalidJWT) as info:
        validator.claims(token)
    return str(info.value)


# The algorithm matrix


@pytest.mark.parametrize("algorithm", list(MATRIX))
def test_token_signed_with_the_right_key_verifies(algorithm):
    token = jwt.encode(claims(jti="j1"), MATRIX[algorithm][0], algorithm=algorithm)
    assert validator_for(algorithm).claims(token) == claims(jti="j1")


@pytest.mark.parametrize("algorithm", list(MATRIX))
def test_token_signed_with_another_key_of_the_same_type_is_rejected(algorithm):
    token = jwt.encode(claims(), MATRIX[algorithm][1], algorithm=algorithm)
    assert reason(validator_for(algorithm), token) == "Invalid signature"


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_certificate_is_accepted_as_key(algorithm):
    signing_key = MATRIX[algorithm][0]
    key = load_key(algorithm, certificate_pem(signing_key))
    validator = JWTValidator(make_clock(), algorithm=algorithm, key=key)
    token = jwt.encode(claims(), signing_key, algorithm=algorithm)
    assert validator.claims(token)["sub"] == "alice"
    other = jwt.encode(claims(), MATRIX[algorithm][1], algorithm=algorithm)
    assert reason(validator, other) == "Invalid signature"


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
@pytest.mark.parametrize("as_certificate", [False, True])
def test_pem_file_path_is_accepted_as_key(algorithm, as_certificate, tmp_path):
    signing_key = MATRIX[algorithm][0]
    path = tmp_path / "key.pem"
    path.write_text(
        certificate_pem(signing_key) if as_certificate else public_pem(signing_key),
        encoding="utf-8",
    )
    validator = JWTValidator(make_clock(), algorithm=algorithm, key=load_key(algorithm, str(path)))
    token = jwt.encode(claims(), signing_key, algorithm=algorithm)
    assert validator.claims(token)["sub"] == "alice"


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
@pytest.mark.parametrize("as_certificate", [False, True])
def test_pem_with_literal_backslash_n_escapes_is_accepted(algorithm, as_certificate):
    signing_key = MATRIX[algorithm][0]
    pem = certificate_pem(signing_key) if as_certificate else public_pem(signing_key)
    env_style = pem.strip().replace("\n", "\\n")
    assert "\n" not in env_style
    validator = JWTValidator(make_clock(), algorithm=algorithm, key=load_key(algorithm, env_style))
    token = jwt.encode(claims(), signing_key, algorithm=algorithm)
    assert validator.claims(token)["sub"] == "alice"


def test_eddsa_accepts_ed448_keys_too():
    signing_key = ed448.Ed448PrivateKey.generate()
    validator = JWTValidator(make_clock(), algorithm="EdDSA",
                             key=load_key("EdDSA", public_pem(signing_key)))
    token = jwt.encode(claims(), signing_key, algorithm="EdDSA")
    assert validator.claims(token)["sub"] == "alice"
    other = jwt.encode(claims(), ED_KEY, algorithm="EdDSA")
    assert reason(validator, other) == "Invalid signature"


def test_load_key_for_a_secret_returns_its_bytes():
    assert load_key("HS256", SECRET) == SECRET.encode("utf-8")


@pytest.mark.parametrize("material", ["", "nope", "/nonexistent/key.pem"])
def test_load_key_rejects_material_that_is_no_key(material):
    with pytest.raises(ValueError):
        load_key("RS256", material)


def test_load_key_rejects_a_private_key_pem():
    with pytest.raises(ValueError):
        load_key("RS256", private_pem(RSA_KEY))


@pytest.mark.parametrize("algorithm", ["none", "None", "XX256", "PS256", "ES512", ""])
def test_load_key_rejects_unsupported_algorithms(algorithm):
    with pytest.raises(ValueError):
        load_key(algorithm, public_pem(RSA_KEY))


def test_load_key_rejects_an_empty_secret():
    with pytest.raises(ValueError):
        load_key("HS256", "")


# Algorithm confusion


@pytest.mark.parametrize("algorithm", list(MATRIX))
@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_alg_none_is_rejected_under_every_algorithm(algorithm, alg, signature):
    token = unsigned_token(claims(), alg=alg, signature=signature)
    with pytest.raises(InvalidJWT):
        validator_for(algorithm).claims(token)


def test_hmac_token_keyed_with_the_rsa_public_pem_is_rejected_by_rs256():
    pem = public_pem(RSA_KEY)
    validator = validator_for("RS256")
    for secret in (pem, pem.encode("ascii"), pem.strip()):
        token = hs256_token(secret, {"alg": "HS256", "typ": "JWT"},
                            json.dumps(claims()).encode())
        assert reason(validator, token) == "Invalid signature"
        # Even with the header lying about the algorithm, the HMAC cannot verify as RSA.
        lying = hs256_token(secret, {"alg": "RS256", "typ": "JWT"},
                            json.dumps(claims()).encode())
        with pytest.raises(InvalidJWT):
            validator.claims(lying)


def test_hs256_validator_refuses_a_token_whose_header_says_rs256():
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert reason(validator_for("HS256"), token) == "Invalid signature"


def test_hs256_validator_keyed_with_a_pem_cannot_exist():
    with pytest.raises(ValueError):
        load_key("HS256", public_pem(RSA_KEY))
    with pytest.raises(ValueError):
        load_key("HS256", public_pem(RSA_KEY).replace("\n", "\\n"))
    with pytest.raises(ValueError):
        load_key("HS512", certificate_pem(RSA_KEY))


def test_rs256_token_to_es256_validator_is_rejected():
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert reason(validator_for("ES256"), token) == "Invalid signature"


def test_es256_token_to_rs256_validator_is_rejected():
    token = jwt.encode(claims(), P256_KEY, algorithm="ES256")
    assert reason(validator_for("RS256"), token) == "Invalid signature"


@pytest.mark.parametrize(
    ("algorithm", "wrong_key"),
    [
        ("RS256", P256_KEY),
        ("RS512", ED_KEY),
        ("ES256", RSA_KEY),
        ("ES256", P384_KEY),
        ("ES384", P256_KEY),
        ("ES256", ED_KEY),
        ("EdDSA", RSA_KEY),
        ("EdDSA", P256_KEY),
    ],
)
def test_load_key_rejects_a_key_of_the_wrong_type(algorithm, wrong_key):
    with pytest.raises(ValueError):
        load_key(algorithm, public_pem(wrong_key))
    with pytest.raises(ValueError):
        load_key(algorithm, certificate_pem(wrong_key))


@pytest.mark.parametrize(
    ("configured", "signed"),
    [
        ("RS256", "RS384"),
        ("RS256", "RS512"),
        ("RS512", "RS256"),
        ("HS256", "HS384"),
        ("HS512", "HS256"),
        ("ES256", "ES384"),
        ("ES384", "ES256"),
    ],
)
def test_header_alg_different_from_the_configured_one_is_rejected(configured, signed):
    token = jwt.encode(claims(), MATRIX[signed][0], algorithm=signed)
    assert reason(validator_for(configured), token) == "Invalid signature"


def test_ec_token_with_a_lying_alg_header_is_rejected():
    # A P-256 signature presented as ES384 to an ES384 validator keyed with P-384.
    _, payload, signature = jwt.encode(claims(), P256_KEY, algorithm="ES256").split(".")
    token = f"{b64(json.dumps({'alg': 'ES384', 'typ': 'JWT'}))}.{payload}.{signature}"
    with pytest.raises(InvalidJWT):
        validator_for("ES384").claims(token)


def test_validator_without_a_key_refuses_everything():
    validator = JWTValidator(make_clock(), algorithm="HS256", key=None)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert reason(validator, token) == "Invalid signature"


# Claims


def hs_validator(clock=None, **kwargs):
    return validator_for("HS256", clock, **kwargs)


def hs(payload, **headers):
    return jwt.encode(payload, SECRET, algorithm="HS256", headers=headers or None)


def test_missing_exp_is_token_expired():
    assert reason(hs_validator(), hs({"sub": "alice"})) == "token expired"


def test_exp_in_the_past_beyond_leeway_is_token_expired():
    assert reason(hs_validator(), hs({"exp": NOW - 11})) == "token expired"
    assert reason(hs_validator(), hs({"exp": NOW - HOUR})) == "token expired"
    assert reason(hs_validator(leeway=0), hs({"exp": NOW})) == "token expired"


def test_exp_just_within_leeway_passes():
    assert hs_validator().claims(hs({"exp": NOW - 5}))["exp"] == NOW - 5
    assert hs_validator(leeway=0).claims(hs({"exp": NOW + 1}))["exp"] == NOW + 1
    assert hs_validator().claims(hs({"exp": NOW + 0.5}))["exp"] == NOW + 0.5


def test_token_expires_as_the_clock_advances():
    clock = make_clock()
    validator = hs_validator(clock, leeway=0)
    token = hs({"exp": NOW + 60})
    assert validator.claims(token)["exp"] == NOW + 60
    clock.advance(59)
    validator.claims(token)
    clock.advance(1)
    assert reason(validator, token) == "token expired"


@pytest.mark.parametrize(
    "exp", [str(NOW + HOUR), True, False, None, [NOW + HOUR], {"at": NOW + HOUR}, ""]
)
def test_non_numeric_or_boolean_exp_is_rejected(exp):
    assert reason(hs_validator(), hs({"exp": exp})) == "token expired"


def test_nan_exp_is_rejected():
    # JSON has no NaN, but Python's decoder accepts the literal; NaN compares false with
    # everything, so it must not slip through as "not expired".
    token = hs256_token(SECRET, {"alg": "HS256", "typ": "JWT"}, b'{"exp": NaN}')
    with pytest.raises(InvalidJWT):
        hs_validator().claims(token)


def test_nbf_in_the_future_beyond_leeway_is_not_yet_valid():
    assert reason(hs_validator(), hs(claims(nbf=NOW + 11))) == "token not yet valid"
    assert reason(hs_validator(), hs(claims(nbf="soon"))) == "token not yet valid"
    assert reason(hs_validator(), hs(claims(nbf=True))) == "token not yet valid"


def test_nbf_within_leeway_or_in_the_past_passes():
    assert hs_validator().claims(hs(claims(nbf=NOW + 5)))["nbf"] == NOW + 5
    assert hs_validator().claims(hs(claims(nbf=NOW - HOUR)))["nbf"] == NOW - HOUR


def test_nbf_becomes_valid_as_the_clock_advances():
    clock = make_clock()
    validator = hs_validator(clock)
    token = hs(claims(nbf=NOW + 60))
    assert reason(validator, token) == "token not yet valid"
    clock.advance(60)
    assert validator.claims(token)["nbf"] == NOW + 60


def test_iat_in_the_future_is_rejected():
    with pytest.raises(InvalidJWT):
        hs_validator().claims(hs(claims(iat=NOW + 60)))
    with pytest.raises(InvalidJWT):
        hs_validator().claims(hs(claims(iat="yesterday")))
    assert hs_validator().claims(hs(claims(iat=NOW - 60)))["iat"] == NOW - 60
    assert hs_validator().claims(hs(claims(iat=NOW + 5)))["iat"] == NOW + 5


def test_aud_and_iss_are_not_checked():
    token = hs(claims(aud="someone-else", iss="anyone"))
    assert hs_validator().claims(token)["aud"] == "someone-else"


def test_tokens_over_the_size_limit_are_not_a_token():
    assert MAX_TOKEN_BYTES == 16384
    padded = hs(claims(pad="x" * MAX_TOKEN_BYTES))
    assert reason(hs_validator(), padded).startswith("not a token")
    assert reason(hs_validator(), "a" * (MAX_TOKEN_BYTES + 1)).startswith("not a token")


def test_tokens_over_the_size_limit_in_bytes_but_not_in_characters_are_not_a_token():
    token = "é" * (MAX_TOKEN_BYTES // 2 + 1)  # 8193 characters, 16386 UTF-8 bytes
    assert len(token.encode("utf-8")) > MAX_TOKEN_BYTES
    assert reason(hs_validator(), token).startswith("not a token")


def test_token_at_the_size_limit_is_still_parsed():
    base = hs(claims(pad=""))
    padded = hs(claims(pad="x" * 100))
    per_char = (len(padded) - len(base)) / 100
    fill = int((MAX_TOKEN_BYTES - len(base)) / per_char)
    token = hs(claims(pad="x" * fill))
    while len(token) > MAX_TOKEN_BYTES:
        fill -= 1
        token = hs(claims(pad="x" * fill))
    assert len(token) <= MAX_TOKEN_BYTES
    assert hs_validator().claims(token)["pad"] == "x" * fill


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "..",
        "...",
        "a.b.c.d",
        "eyJ.eyJ.",
        "Bearer x.y.z",
        " ",
        "\x00",
        b64(json.dumps({"alg": "HS256"})) + "." + b64(json.dumps(claims())),
    ],
)
def test_garbage_is_invalid(token):
    with pytest.raises(InvalidJWT):
        hs_validator().claims(token)


def test_empty_and_non_string_tokens_are_not_a_token():
    assert reason(hs_validator(), "").startswith("not a token")
    assert reason(hs_validator(), None).startswith("not a token")
    assert reason(hs_validator(), hs(claims()).encode("ascii")).startswith("not a token")


def test_non_json_payload_is_invalid():
    token = hs256_token(SECRET, {"alg": "HS256", "typ": "JWT"}, b"not json")
    assert reason(hs_validator(), token) == "Could not verify token"
    token = hs256_token(SECRET, {"alg": "HS256", "typ": "JWT"}, b"\xff\xfe")
    with pytest.raises(InvalidJWT):
        hs_validator().claims(token)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_non_object_json_payload_is_rejected(payload):
    token = hs256_token(SECRET, {"alg": "HS256", "typ": "JWT"}, payload)
    with pytest.raises(InvalidJWT):
        hs_validator().claims(token)


def test_non_object_header_is_rejected():
    signing_input = f"{b64('[1]')}.{b64(json.dumps(claims()))}"
    with pytest.raises(InvalidJWT):
        hs_validator().claims(signing_input + ".c2ln")


FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=300)


@FUZZ
@given(st.text())
def test_arbitrary_text_raises_only_invalid_jwt(text):
    with pytest.raises(InvalidJWT):
        hs_validator().claims(text)


@FUZZ
@given(st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-_=+/.", max_size=40), min_size=1, max_size=5))
def test_dotted_base64ish_text_raises_only_invalid_jwt(parts):
    with pytest.raises(InvalidJWT):
        hs_validator().claims(".".join(parts))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
HEADER_EXTRAS = st.just({}) | st.dictionaries(
    st.sampled_from(["kid", "typ", "crit", "b64", "cty", "jku", "x5c", "zip"]),
    JSON | st.text(max_size=5),
    max_size=2,
)
TIMES = st.integers(NOW - 100, NOW + 100) | st.floats(NOW - 100, NOW + 100)
CLAIMS = st.dictionaries(
    st.sampled_from(["exp", "nbf", "iat", "jti", "sid", "sub"]),
    TIMES | st.text(max_size=3) | JSON,
    max_size=4,
)
WITH_EXP = st.builds(lambda exp, rest: {**rest, "exp": exp}, TIMES, CLAIMS)
PAYLOAD = WITH_EXP | WITH_EXP | CLAIMS | JSON


@settings(derandomize=True, deadline=None, database=None, max_examples=200)
@given(HEADER_EXTRAS, PAYLOAD)
def test_signed_tokens_with_arbitrary_contents_give_claims_or_invalid_jwt(extras, payload):
    header = {**extras, "alg": "HS256"}
    token = hs256_token(SECRET, header, json.dumps(payload).encode("utf-8"))
    validator = hs_validator(blacklist=frozenset({"x"}), session_pointer=("sid",))
    try:
        result = validator.claims(token)
    except InvalidJWT:
        return
    assert isinstance(result, dict)
    exp = result["exp"]
    assert isinstance(exp, int | float) and not isinstance(exp, bool)
    assert exp > NOW - 10
    assert result.get("jti") != "x"
    assert validator.session_of(result) in (None, result.get("sid"))


# Blacklist


def test_blacklisted_jti_is_rejected_with_rigs_sentence():
    clock = make_clock()
    blacklist = Blacklist(clock)
    blacklist.add("j1", NOW + 100)
    validator = hs_validator(clock, blacklist=blacklist)
    assert reason(validator, hs(claims(jti="j1"))) == 'Ignoring blacklisted JWT with ID "j1".'
    assert validator.claims(hs(claims(jti="j2")))["jti"] == "j2"


def test_blacklisted_session_field_is_rejected_too():
    clock = make_clock()
    blacklist = Blacklist(clock)
    blacklist.add("s1", NOW + 100)
    validator = hs_validator(clock, blacklist=blacklist, session_pointer=("sid",))
    assert reason(validator, hs(claims(jti="j9", sid="s1"))) == (
        'Ignoring blacklisted JWT with ID "s1".'
    )
    # jti is still checked with a custom session field.
    assert reason(validator, hs(claims(jti="s1", sid="s2"))) == (
        'Ignoring blacklisted JWT with ID "s1".'
    )
    assert validator.claims(hs(claims(jti="j9", sid="s2")))["sid"] == "s2"


def test_blacklisted_token_is_valid_again_after_the_entry_expires():
    clock = make_clock()
    blacklist = Blacklist(clock)
    blacklist.add("j1", NOW + 100)
    validator = hs_validator(clock, blacklist=blacklist)
    token = hs(claims(jti="j1"))
    with pytest.raises(InvalidJWT):
        validator.claims(token)
    clock.advance(99)
    with pytest.raises(InvalidJWT):
        validator.claims(token)
    clock.advance(1)
    assert validator.claims(token)["jti"] == "j1"


def test_non_string_session_values_are_not_looked_up():
    clock = make_clock()
    blacklist = Blacklist(clock)
    blacklist.add("1", NOW + 100)
    validator = hs_validator(clock, blacklist=blacklist, session_pointer=("sid",))
    assert validator.claims(hs(claims(sid=1)))["sid"] == 1
    assert validator.claims(hs(claims(sid=["1"])))["sid"] == ["1"]
    with pytest.raises(InvalidJWT) as info:
        validator.claims(hs(claims(jti=1)))  # pyjwt insists on a string jti
    assert "blacklisted" not in str(info.value)


# session_of


def test_session_of_default_is_jti():
    validator = hs_validator()
    assert validator.session_of({"jti": "abc"}) == "abc"
    assert validator.session_of({}) is None


def test_session_of_follows_a_pointer_into_nested_claims():
    validator = hs_validator(session_pointer=("user", "session", "0"))
    assert validator.session_of({"user": {"session": ["s1", "s2"]}}) == "s1"
    assert validator.session_of({"user": {"session": {"0": "s3"}}}) == "s3"
    assert validator.session_of({"user": {}}) is None
    assert validator.session_of({"user": "flat"}) is None


@pytest.mark.parametrize("value", ["", 1, 1.5, True, None, [], {}, ["s"], {"a": "b"}])
def test_session_of_non_string_or_empty_is_none(value):
    validator = hs_validator(session_pointer=("sid",))
    assert validator.session_of({"sid": value}) is None


def test_no_jwt_validation_refuses_everything():
    validator = NoJWTValidation()
    for token in (hs(claims()), "", "garbage", jwt.encode(claims(), RSA_KEY, algorithm="RS256")):
        with pytest.raises(InvalidJWT):
            validator.claims(token)
    assert validator.session_of({"jti": "x"}) is None


# Settings


def settings_error(environ):
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({}, environ)
    return str(info.value)


def test_settings_reject_an_unparsable_asymmetric_key():
    message = settings_error({"JWT_ALG": "RS256", "JWT_SECRET_KEY": "nope"})
    assert "JWT_SECRET_KEY" in message
    assert "\n" not in message


def test_settings_reject_a_key_of_the_wrong_type():
    message = settings_error({"JWT_ALG": "ES256", "JWT_SECRET_KEY": public_pem(RSA_KEY)})
    assert "JWT_SECRET_KEY" in message


def test_settings_reject_a_pem_as_hmac_secret():
    message = settings_error({"JWT_ALG": "HS256", "JWT_SECRET_KEY": public_pem(RSA_KEY)})
    assert "JWT_SECRET_KEY" in message


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_settings_accept_a_valid_pem(algorithm):
    pem = public_pem(MATRIX[algorithm][0])
    result = Settings.from_mapping({}, {"JWT_ALG": algorithm, "JWT_SECRET_KEY": pem})
    assert result.jwt_alg == algorithm
    env_style = Settings.from_mapping(
        {}, {"JWT_ALG": algorithm, "JWT_SECRET_KEY": pem.replace("\n", "\\n")}
    )
    assert env_style.jwt_alg == algorithm
    from_file = Settings.from_mapping({"jwt_alg": algorithm, "jwt_secret_key": pem}, {})
    assert from_file.jwt_alg == algorithm


def test_settings_accept_a_pem_file_path(tmp_path):
    path = tmp_path / "jwt.pem"
    path.write_text(certificate_pem(P256_KEY), encoding="utf-8")
    result = Settings.from_mapping({}, {"JWT_ALG": "ES256", "JWT_SECRET_KEY": str(path)})
    assert result.jwt_alg == "ES256"
    message = settings_error({"JWT_ALG": "ES384", "JWT_SECRET_KEY": str(path)})
    assert "JWT_SECRET_KEY" in message


def test_settings_accept_algorithms_in_any_case():
    assert Settings.from_mapping({}, {"JWT_ALG": "rs256",
                                      "JWT_SECRET_KEY": public_pem(RSA_KEY)}).jwt_alg == "RS256"
    assert Settings.from_mapping({}, {"JWT_ALG": "eddsa"}).jwt_alg == "EdDSA"
    assert Settings.from_mapping({}, {}).jwt_alg == "HS256"
    assert set(ALGORITHMS) == set(MATRIX)


@pytest.mark.parametrize("algorithm", ["none", "None", "XX256", "PS256", "ES512"])
def test_settings_reject_unsupported_algorithms(algorithm):
    assert "JWT_ALG" in settings_error({"JWT_ALG": algorithm})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NO_CHECK", "no_check"),
        ("no_check", "no_check"),
        ("Jwt_Validation", "jwt_validation"),
        ("http://checker.local/check", "http://checker.local/check"),
        ("https://checker.local:8443/check", "https://checker.local:8443/check"),
    ],
)
@pytest.mark.parametrize("variable", ["SUBSCRIPTION_CHECK", "SUBMISSION_CHECK"])
def test_check_settings_accept_modes_and_urls(variable, value, expected):
    result = Settings.from_mapping({}, {variable: value})
    assert getattr(result, variable.lower()) == expected


@pytest.mark.parametrize("value", ["ftp://x", "maybe", "jwt-validation", "http:/x"])
@pytest.mark.parametrize("variable", ["SUBSCRIPTION_CHECK", "SUBMISSION_CHECK"])
def test_check_settings_reject_other_values(variable, value):
    assert variable in settings_error({variable: value})


def test_check_settings_default_to_no_check():
    result = Settings.from_mapping({}, {"SUBSCRIPTION_CHECK": "  "})
    assert result.subscription_check == "no_check"
    assert result.submission_check == "no_check"


def test_nan_is_not_a_valid_json_number_for_python_either():
    # Guard for test_nan_exp_is_rejected: the payload really decodes to NaN.
    assert math.isnan(json.loads('{"exp": NaN}')["exp"])


# The fast path for plain HS* tokens (rig/auth/hmac_fast.py): never a verdict of its own


def pyjwt_claims(token, algorithm, secret):
    """PyJWT's own answer: the claims, or None where it raises."""
    try:
        result = jwt.decode(token, secret.encode("utf-8"), algorithms=[algorithm], options={
            "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return None
    return result if isinstance(result, dict) else None


def signed(secret, header, payload_bytes, algorithm="HS256"):
    signing_input = f"{b64(json.dumps(header))}.{b64(payload_bytes)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    signature = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"),
                         digest[algorithm]).digest()
    return f"{signing_input}.{b64(signature)}"


MUTATIONS = st.sampled_from([
    lambda t: t, lambda t: t + "=", lambda t: t + "==", lambda t: t + ".",
    lambda t: t + ".e30", lambda t: "e30." + t, lambda t: t[:-1],
    lambda t: t[:-1] + ("B" if t[-1] != "B" else "C"), lambda t: t.replace(".", "=.", 1),
    lambda t: t.replace(".", "..", 1), lambda t: t.upper(), lambda t: " " + t,
])


@settings(derandomize=True, deadline=None, database=None, max_examples=400)
@given(
    HEADER_EXTRAS,
    PAYLOAD | st.binary(max_size=20).map(lambda raw: raw.decode("latin-1")),
    st.tuples(  # the configured algorithm, the header's, the signing secret
        st.sampled_from(["HS256", "HS384", "HS512"]),
        st.sampled_from(["HS256", "HS384", "HS512", "none", "RS256", None]),
        st.sampled_from([SECRET, SECRET_OTHER]),
    ),
    MUTATIONS,
)
def test_the_hmac_fast_path_accepts_only_what_pyjwt_accepts_with_the_same_claims(
        extras, payload, signing, mutate):
    configured, header_alg, secret = signing
    header = {**extras, **({} if header_alg is None else {"alg": header_alg})}
    payload_bytes = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    token = mutate(signed(secret, header, payload_bytes, configured))
    fast = HmacFastPath(configured, SECRET.encode("utf-8")).claims(token)
    if fast is not None:
        assert fast == pyjwt_claims(token, configured, SECRET)
        assert secret == SECRET and header_alg == configured


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("header", [{"alg": None, "typ": "JWT"}, {"alg": None},
                                    {"alg": None, "kid": "k1", "typ": "JWT", "cty": "x"}])
def test_plain_tokens_take_the_hmac_fast_path(algorithm, header):
    header = {**header, "alg": algorithm}
    payload = claims(jti="j1", user={"id": 7}, subscriptions=[{"eventType": "a"}])
    token = jwt.encode(payload, SECRET, algorithm=algorithm, headers=header)
    assert HmacFastPath(algorithm, SECRET.encode()).claims(token) == payload
    assert HmacFastPath(algorithm, SECRET_OTHER.encode()).claims(token) is None


@settings(derandomize=True, deadline=None, database=None, max_examples=200)
@given(HEADER_EXTRAS, PAYLOAD, st.sampled_from([SECRET, SECRET_OTHER]), MUTATIONS)
def test_validators_with_and_without_the_fast_path_agree_on_claims_and_reasons(
        extras, payload, secret, mutate):
    token = mutate(signed(secret, {**extras, "alg": "HS256"}, json.dumps(payload).encode()))
    fast, slow = hs_validator(), hs_validator()
    assert fast._fast is not None
    slow._fast = None

    def outcome(validator):
        try:
            return validator.claims(token)
        except InvalidJWT as error:
            return f"InvalidJWT: {error}"

    assert outcome(fast) == outcome(slow)


def non_canonical(segment):
    """*segment* with the unused low bits of its last character set: the same bytes to a
    lenient decoder, and no longer the one encoding PyJWT accepts."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | unused]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_segment_in_a_non_canonical_encoding_is_left_to_pyjwt_which_refuses_it(which):
    # a padding claim makes the mutated segment's length 2 or 3 mod 4 (unused bits)
    parts = next(
        parts for extra in ("", "x", "xy")
        for parts in [[b64(json.dumps({"alg": "HS256", "kid": extra})),
                       b64(json.dumps(claims(n=extra)))]]
        if which == 2 or len(parts[which]) % 4 in (2, 3)
    )
    if which < 2:
        parts[which] = non_canonical(parts[which])
    signing_input = ".".join(parts)
    signature = b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())
    if which == 2:
        signature = non_canonical(signature)  # 43 characters: 3 mod 4
    token = f"{signing_input}.{signature}"
    segment = token.split(".")[which]
    assert b64(base64.urlsafe_b64decode(segment + "==")) != segment  # the same bytes, leniently
    assert HmacFastPath("HS256", SECRET.encode()).claims(token) is None
    assert pyjwt_claims(token, "HS256", SECRET) is None


SHARED_FAST_PATH = HmacFastPath("HS256", SECRET.encode("utf-8"))  # across examples: memo


@settings(derandomize=True, deadline=None, database=None, max_examples=300)
@given(HEADER_EXTRAS, PAYLOAD, st.sampled_from(["HS256", "HS384", "none", None]),
       st.sampled_from([SECRET, SECRET_OTHER]), MUTATIONS)
def test_one_fast_path_that_remembers_headers_still_accepts_only_what_pyjwt_accepts(
        extras, payload, header_alg, secret, mutate):
    header = {**extras, **({} if header_alg is None else {"alg": header_alg})}
    token = mutate(signed(secret, header, json.dumps(payload).encode()))
    for _ in range(2):  # the second time, the header may be a remembered one
        fast = SHARED_FAST_PATH.claims(token)
        assert fast is None or fast == pyjwt_claims(token, "HS256", SECRET)
        if fast is not None:
            assert secret == SECRET and header_alg == "HS256"


def test_a_plain_header_is_remembered_a_few_times_and_a_bad_one_never():
    fast = HmacFastPath("HS256", SECRET.encode())
    good = signed(SECRET, {"alg": "HS256", "typ": "JWT"}, json.dumps(claims(n=1)).encode())
    assert fast.claims(good) == claims(n=1)
    assert fast._plain_headers == {good.split(".")[0]}
    again = signed(SECRET, {"alg": "HS256", "typ": "JWT"}, json.dumps(claims(n=2)).encode())
    assert fast.claims(again) == claims(n=2)
    forged = again.rsplit(".", 1)[0] + "." + b64(b"\0" * 32)  # a known header, no signature
    assert fast.claims(forged) is None
    bad = signed(SECRET, {"alg": "HS256", "zip": "DEF"}, json.dumps(claims()).encode())
    assert fast.claims(bad) is None and len(fast._plain_headers) == 1
    for n in range(40):
        fast.claims(signed(SECRET, {"alg": "HS256", "kid": f"k{n}"}, b"{}"))
    assert len(fast._plain_headers) == fast._KNOWN_HEADERS


def test_a_payload_that_is_not_utf8_json_is_left_to_pyjwt():
    payload = json.dumps(claims(n=1)).encode("utf-16")
    token = signed(SECRET, {"alg": "HS256"}, payload)
    assert HmacFastPath("HS256", SECRET.encode()).claims(token) is None


def _segment_by_reencoding(text):
    """What the fast path's segment check must agree with: decode, re-encode, compare."""
    if len(text) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if b64(raw) == text else None


@settings(deadline=None, max_examples=2000)
@given(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
               min_size=1, max_size=12))
def test_a_segment_is_decoded_only_in_its_one_canonical_encoding(text):
    from rig.auth.hmac_fast import _segment

    assert _segment(text) == _segment_by_reencoding(text)
