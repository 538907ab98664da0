"""Connection tokens (spec Part B 2.1, Part A "Cluster"): URL-safe, authenticated, routable."""

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.hub.token import ConnectionRef, InvalidToken, TokenCodec

SETTINGS = settings(derandomize=True, deadline=None, max_examples=200, database=None)

URLSAFE_PADDED = re.compile(r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?")

NODE_NAMES = st.text(min_size=1, max_size=40).filter(lambda name: len(name.encode()) <= 255)
LOCAL_IDS = st.integers(0, 2**64 - 1)


def codec(node="rig@node-a", cookie="secret cookie"):
    return TokenCodec.from_cookie(node, cookie)


CODEC = codec()
TOKENS = [CODEC.encode(local_id) for local_id in (0, 1, 7, 255, 2**32, 2**64 - 1)]
# Node names of 9, 10 and 11 bytes give tokens ending in "==", "=" and no padding.
PADDINGS = [
    TokenCodec(node=node, key=CODEC.key, boot_id=b"boot-id!").encode(7)
    for node in ("rig@node1", "rig@node-a", "rig@node-aa")
]


@SETTINGS
@given(node=NODE_NAMES, local_id=LOCAL_IDS)
def test_round_trip(node, local_id):
    own = codec(node)
    ref = own.decode(own.encode(local_id))
    assert ref == ConnectionRef(node, own.boot_id, local_id)
    assert own.is_local(ref)


@SETTINGS
@given(node=NODE_NAMES, local_id=LOCAL_IDS)
def test_tokens_are_padded_urlsafe_base64(node, local_id):
    token = codec(node).encode(local_id)
    assert URLSAFE_PADDED.fullmatch(token), token
    assert len(token) % 4 == 0
    assert not set(token) & set("/#?+")
    assert base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)).decode() == token


def test_paddings_cover_all_three_cases():
    assert [token.count("=") for token in PADDINGS] == [2, 1, 0]
    for token in PADDINGS:
        assert CODEC.decode(token).local_id == 7


def test_tokens_of_one_connection_are_stable_and_of_others_differ():
    assert CODEC.encode(7) == CODEC.encode(7)
    assert len(set(TOKENS)) == len(TOKENS)
    assert codec().encode(7) != CODEC.encode(7)  # another boot of the same node


def test_another_cookie_cannot_decode():
    token = CODEC.encode(7)
    with pytest.raises(InvalidToken):
        codec(cookie="another cookie").decode(token)
    with pytest.raises(InvalidToken):
        codec(node="rig@node-b", cookie="another cookie").decode(token)


def test_without_a_cookie_tokens_are_not_shared():
    alone = TokenCodec.from_cookie("rig@node-a", None)
    other = TokenCodec.from_cookie("rig@node-a", "")
    token = alone.encode(3)
    assert alone.decode(token).local_id == 3
    with pytest.raises(InvalidToken):
        other.decode(token)
    with pytest.raises(InvalidToken):
        CODEC.decode(token)


def test_codecs_sharing_a_cookie_decode_each_others_tokens():
    node_a = codec("rig@node-a")
    node_b = codec("rig@node-b")
    from_a = node_b.decode(node_a.encode(41))
    from_b = node_a.decode(node_b.encode(42))
    assert from_a == ConnectionRef("rig@node-a", node_a.boot_id, 41)
    assert from_b == ConnectionRef("rig@node-b", node_b.boot_id, 42)
    assert node_a.is_local(node_a.decode(node_a.encode(43)))
    assert not node_b.is_local(from_a)
    assert not node_a.is_local(from_b)


def test_is_local_is_false_after_a_restart():
    before = codec("rig@node-a")
    after = codec("rig@node-a")  # same name and cookie, new boot id
    ref = after.decode(before.encode(5))
    assert ref == ConnectionRef("rig@node-a", before.boot_id, 5)
    assert before.is_local(ref)
    assert not after.is_local(ref)


def test_is_local_is_false_for_another_node_with_the_same_boot_id():
    node_a = codec("rig@node-a")
    node_b = TokenCodec(node="rig@node-b", key=node_a.key, boot_id=node_a.boot_id)
    assert not node_b.is_local(node_b.decode(node_a.encode(5)))


@SETTINGS
@given(
    token=st.sampled_from(TOKENS),
    position=st.integers(0, 10**6),
    mask=st.integers(1, 255),
)
def test_a_flipped_byte_of_the_payload_or_tag_is_rejected(token, position, mask):
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[position % len(raw)] ^= mask
    with pytest.raises(InvalidToken):
        CODEC.decode(base64.urlsafe_b64encode(bytes(raw)).decode())


def test_every_single_byte_flip_of_the_token_text_is_rejected():
    """Exhaustive: each position of tokens with 0, 1 and 2 padding characters, each mask."""
    accepted = []
    for token in PADDINGS:
        text = token.encode("ascii")
        for position in range(len(text)):
            for mask in range(1, 256):
                flipped = bytearray(text)
                flipped[position] ^= mask
                try:
                    CODEC.decode(flipped.decode("latin-1"))
                except InvalidToken:
                    continue
                accepted.append(
                    f"{token}: {chr(text[position])!r} -> {chr(flipped[position])!r}"
                    f" at {position}"
                )
    assert accepted == []


def test_truncated_tokens_are_rejected():
    for token in PADDINGS:
        for cut in range(len(token)):
            with pytest.raises(InvalidToken):
                CODEC.decode(token[:cut])


def test_extended_tokens_are_rejected():
    accepted = []
    for token in PADDINGS:
        for suffix in ("A", "AAAA", "====", "\n", " ", "!", "=A", token):
            try:
                CODEC.decode(token + suffix)
            except InvalidToken:
                continue
            accepted.append(f"{token} + {suffix!r}")
    assert accepted == []


@SETTINGS
@given(garbage=st.text(max_size=80))
def test_garbage_text_raises_only_invalid_token(garbage):
    with pytest.raises(InvalidToken):
        CODEC.decode(garbage)


@SETTINGS
@given(garbage=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                "0123456789-_=", max_size=80))
def test_base64_like_garbage_raises_only_invalid_token(garbage):
    with pytest.raises(InvalidToken):
        CODEC.decode(garbage)


@SETTINGS
@given(raw=st.binary(max_size=80))
def test_well_encoded_garbage_raises_only_invalid_token(raw):
    with pytest.raises(InvalidToken):
        CODEC.decode(base64.urlsafe_b64encode(raw).decode())


@pytest.mark.parametrize(
    "garbage", ["", "=", "====", "not-a-token!", "é", "\x00", "a/b", "#", "?", " " * 8]
)
def test_examples_of_garbage(garbage):
    with pytest.raises(InvalidToken):
        CODEC.decode(garbage)
