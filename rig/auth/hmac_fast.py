"""The common HS256/384/512 token, verified in a fifth of PyJWT's time.

Every connection with ``?jwt=`` is verified once, so in a reconnect storm the
check is on the hot path: PyJWT spends most of its 30-50 us per token checking
base64 one character at a time and preparing the key again for every call.
This path accepts only the plain shape (three canonical, unpadded base64url
segments, a header of ``alg``/``typ``/``kid``/``cty`` naming the configured
algorithm, a JSON object payload whose ``sub`` and ``jti`` are strings, as
PyJWT demands) and only once the HMAC verifies. Everything else, including
every token it would reject, goes to PyJWT, which gives the verdict and the
reason; so a token is accepted here only if PyJWT would accept it too, with
the same claims (``tests/test_jwt.py`` checks that by comparison).
"""
import binascii
import hmac
import json
import re

from rig.hmackey import HmacKey

HASHES = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
_PLAIN_TOKEN = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_PLAIN_HEADER = frozenset({"alg", "typ", "kid", "cty"})


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# the last character of a segment of 2 or 3 (mod 4) characters carries 4 or 2 unused
# low bits: only the one encoding (PyJWT re-encodes and compares) has them zero
_CANONICAL_LAST = {2: frozenset(_ALPHABET[::16]), 3: frozenset(_ALPHABET[::4])}
_PADDING = (b"", None, b"==", b"=")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _segment(text):
    """The bytes of a canonical unpadded base64url segment (of ``_PLAIN_TOKEN``'s
    alphabet), or None."""
    remainder = len(text) % 4
    if remainder == 1 or (remainder and text[-1] not in _CANONICAL_LAST[remainder]):
        return None
    try:
        return binascii.a2b_base64(
            text.encode("ascii").translate(_TO_STANDARD) + _PADDING[remainder])
    except binascii.Error:
        return None


def _json_object(raw):
    """The JSON object in *raw* if it is UTF-8 (PyJWT's ``json.loads`` of the bytes
    also reads UTF-16 and 32, which such a token then takes to it), else None."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if type(value) is dict else None


class HmacFastPath:
    """``claims(token)``: the verified claims of a plain token, or None (ask PyJWT)."""

    _KNOWN_HEADERS = 16

    def __init__(self, algorithm, key):
        self._algorithm = algorithm
        self._hmac = HmacKey(key, HASHES[algorithm])
        # the header segments found plain before: an issuer signs every token with
        # the same header, so it is decoded and checked once, not per token
        self._plain_headers = set()

    def claims(self, token):
        match = _PLAIN_TOKEN.fullmatch(token)
        if match is None:
            return None
        header_text, payload_text, signature_text = match.groups()
        signature = _segment(signature_text)
        if signature is None:
            return None
        signing_input = token[:match.end(2)].encode("ascii")
        expected = self._hmac.digest(signing_input)
        if not hmac.compare_digest(expected, signature):
            return None
        if header_text not in self._plain_headers and not self._plain_header(header_text):
            return None
        payload_raw = _segment(payload_text)
        if payload_raw is None:
            return None
        claims = _json_object(payload_raw)
        if claims is None:
            return None
        for name in ("sub", "jti"):  # PyJWT's own claim checks
            if name in claims and not isinstance(claims[name], str):
                return None
        return claims

    def _plain_header(self, header_text):
        """Whether *header_text* is a plain header naming the configured algorithm
        (remembered when it is, for a few of them)."""
        header_raw = _segment(header_text)
        header = None if header_raw is None else _json_object(header_raw)
        if (
            header is None
            or header.get("alg") != self._algorithm
            or not header.keys() <= _PLAIN_HEADER
            or not isinstance(header.get("kid", ""), str)
        ):
            return False
        if len(self._plain_headers) < self._KNOWN_HEADERS:
            self._plain_headers.add(header_text)
        return True
