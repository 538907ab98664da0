"""Connection tokens: opaque, URL-safe, authenticated handles naming node and connection.

A token carries the owning node's name, that node's boot id (so a restarted
node does not mistake an old token for a new connection with the same local
id) and the local connection id, followed by an HMAC-SHA256 tag keyed with
``NODE_COOKIE``. Any node sharing the cookie can decode it and route to the
owner; nobody without the cookie can forge one.
"""
import base64
import binascii
import hashlib
import hmac
import os
import struct

import attrs

from rig.hmackey import HmacKey

_VERSION = 1
_TAG_BYTES = 16


class InvalidToken(ValueError):
    """Not a token of ours: bad encoding, bad tag or bad layout."""


@attrs.frozen
class ConnectionRef:
    node: str
    boot_id: bytes
    local_id: int


@attrs.define
class TokenCodec:
    """Encodes and verifies tokens for this node."""

    node: str
    key: bytes
    boot_id: bytes = attrs.field(factory=lambda: os.urandom(8))
    _hmac: HmacKey = attrs.field(init=False, repr=False, eq=False)  # made from key

    @classmethod
    def from_cookie(cls, node, cookie, purpose=b"connection", boot_id=None):
        """A codec keyed by *cookie* (random without one) for one *purpose*.

        Tokens of one purpose (connections, correlation ids) never verify as another.
        """
        secret = cookie.encode("utf-8") if cookie else os.urandom(32)
        key = hashlib.sha256(b"txrig token key\x00" + purpose + b"\x00" + secret).digest()
        return cls(node=node, key=key, boot_id=boot_id or os.urandom(8))

    def encode(self, local_id):
        node = self.node.encode("utf-8")
        payload = (
            struct.pack("!BB", _VERSION, len(node)) + node + self.boot_id
            + struct.pack("!Q", local_id)
        )
        return base64.urlsafe_b64encode(payload + self._tag(payload)).decode("ascii")

    def decode(self, token):
        """The ConnectionRef in *token*; InvalidToken if it is not one of ours."""
        try:
            encoded = token.encode("ascii")
            raw = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise InvalidToken("not base64url") from None
        if base64.urlsafe_b64encode(raw) != encoded:
            raise InvalidToken("not in canonical base64url form")
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if len(payload) < 2 or not hmac.compare_digest(tag, self._tag(payload)):
            raise InvalidToken("bad tag")
        version, node_length = payload[0], payload[1]
        if version != _VERSION or len(payload) != 2 + node_length + 8 + 8:
            raise InvalidToken("bad layout")
        node = payload[2:2 + node_length].decode("utf-8", "replace")
        boot_id = payload[2 + node_length:10 + node_length]
        (local_id,) = struct.unpack("!Q", payload[10 + node_length:])
        return ConnectionRef(node, boot_id, local_id)

    def is_local(self, ref):
        return ref.node == self.node and ref.boot_id == self.boot_id

    def __attrs_post_init__(self):
        self._hmac = HmacKey(self.key)

    def _tag(self, payload):
        return self._hmac.digest(payload)[:_TAG_BYTES]
