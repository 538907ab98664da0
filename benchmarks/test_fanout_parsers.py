"""Quick checks of the load generator's hand-written stream parsers (loadgen.py).

Not part of the main suite (``tests/``); run with
``python -m pytest -q benchmarks/test_fanout_parsers.py``.  Every test feeds
the same bytes cut at every possible point, so a frame, a chunk size line or
an SSE event split across reads is covered.
"""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen as fanout  # the client side lives in loadgen.py


class FakeSock:
    def __init__(self):
        self.sent = []

    def send(self, data):
        self.sent.append(bytes(data))
        return len(data)


def cloud_event(seq, etype="bench", t=None):
    return json.dumps({
        "specversion": "1.0", "type": etype, "source": "bench", "id": str(seq),
        "data": {"seq": seq, "room": "main", "t": 1_000_000 + seq if t is None else t},
    }).encode()


def ws_server_frame(payload, opcode=1, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 127)) + n.to_bytes(8, "big")
    return head + payload


def control_events():
    return [
        json.dumps({"specversion": "1.0", "type": "rig.connection.create",
                    "source": "rig", "id": "a", "data": {"connection_token": "x"}}).encode(),
        json.dumps({"specversion": "1.0", "type": "rig.subscriptions_set",
                    "source": "rig", "id": "b", "data": [{"eventType": "bench"}]}).encode(),
    ]


def make_ws(sample=1):
    states = []
    sub = fanout.WSSubscriber(
        None, fanout.Group("ws"), fanout.Latency(), b"", sample, 0,
        lambda s, ev: states.append(ev))
    sub.lat.from_ns = 0
    sub.sock = FakeSock()
    sub.state = sub.OPEN
    return sub, states


def make_sse(sample=1, chunked=True):
    states = []
    sub = fanout.SSESubscriber(
        None, fanout.Group("sse"), fanout.Latency(), b"", sample, 0,
        lambda s, ev: states.append(ev), b"bench")
    sub.lat.from_ns = 0
    sub.state = sub.OPEN
    if chunked:
        sub.chunks = fanout.Dechunker()
    return sub, states


def splits(data):
    """The data cut in two at every point, and in 1..7-byte pieces."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    for size in range(1, 8):
        yield [data[j:j + size] for j in range(0, len(data), size)]


def ws_stream():
    payloads = control_events()
    payloads += [cloud_event(i) for i in range(3)]
    payloads.append(cloud_event(3) + b" " * 200)          # 126-length header
    stream = b"".join(ws_server_frame(p) for p in payloads)
    stream += ws_server_frame(b"ping!", opcode=9)          # answered with a pong
    stream += ws_server_frame(cloud_event(4))
    return stream


def test_ws_frames_split_anywhere():
    data = ws_stream()
    for pieces in splits(data):
        sub, states = make_ws()
        for p in pieces:
            if p:
                sub.feed(p)
        assert sub.group.deliveries == 5
        assert sub.ctl == 2
        assert states == ["ready"]
        assert sub.buf == b""
        assert sorted(sub.lat.samples) != []
        assert len(sub.sock.sent) == 1
        pong = sub.sock.sent[0]
        assert pong[0] == 0x8A and pong[1] == 0x80 | 5  # masked pong, 5 bytes
        mask = pong[2:6]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(pong[6:])) == b"ping!"


def test_ws_64bit_length_frame():
    big = ws_server_frame(cloud_event(1) + b" " * 70000)
    assert big[1] == 127
    data = big + ws_server_frame(cloud_event(2))
    for cut in (1, 2, 5, 9, 10, 11, 5000, len(big) - 1, len(big), len(big) + 1):
        sub, _ = make_ws()
        sub.feed(data[:cut])
        sub.feed(data[cut:])
        assert sub.group.deliveries == 2
        assert len(sub.lat.samples) == 2


def test_ws_latency_is_parsed_from_t(monkeypatch):
    monkeypatch.setattr(fanout.time, "time_ns", lambda: 5_000_000)
    sub, _ = make_ws()
    sub.feed(b"".join(ws_server_frame(p) for p in control_events()))
    sub.feed(ws_server_frame(cloud_event(7, t=4_000_000)))
    assert sub.lat.samples == [1_000_000]


def test_ws_sampling_every_nth():
    sub, _ = make_ws(sample=4)
    sub.feed(b"".join(ws_server_frame(cloud_event(i)) for i in range(40)))
    assert sub.group.deliveries == 40
    assert len(sub.lat.samples) == 10


def test_ws_fragmented_message_counts_once():
    sub, _ = make_ws()
    ev = cloud_event(1)
    data = (ws_server_frame(ev[:10], opcode=1, fin=False)
            + ws_server_frame(ev[10:20], opcode=0, fin=False)
            + ws_server_frame(ev[20:], opcode=0, fin=True))
    sub.feed(data)
    assert sub.group.deliveries == 1


def test_ws_close_frame_is_a_disconnect():
    sub, states = make_ws()
    sub.sel = None
    sub.sock = None  # close() must cope: nothing registered
    sub.feed(ws_server_frame(cloud_event(1)) + ws_server_frame(b"\x03\xe8", opcode=8))
    assert sub.group.deliveries == 1
    assert sub.group.disconnects == 1
    assert states == ["dead"]


def sse_block(etype, payload, event_id=None):
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"event: " + etype + b"\ndata: " + payload + b"\n\n"


def sse_body():
    blocks = [sse_block(b"rig.connection.create", control_events()[0]),
              sse_block(b"rig.subscriptions_set", control_events()[1]),
              b": heartbeat\n\n"]
    blocks += [sse_block(b"bench", cloud_event(i), event_id=i) for i in range(4)]
    blocks.append(sse_block(b"benchmark", cloud_event(9, etype="benchmark"), 9))
    blocks.append(b": heartbeat\n\n")
    blocks.append(sse_block(b"bench", cloud_event(4)))  # no id line
    return blocks


def chunk(b):
    return b"%x\r\n" % len(b) + b + b"\r\n"


@pytest.mark.parametrize("crlf", [False, True])
def test_sse_chunked_split_anywhere(crlf):
    blocks = sse_body()
    if crlf:
        blocks = [b.replace(b"\n", b"\r\n") for b in blocks]
    # one chunk per block, one chunk cutting blocks in thirds, and a chunk
    # extension: all must decode to the same events
    body = b"".join(blocks)
    third = len(body) // 3
    variants = [
        b"".join(chunk(b) for b in blocks),
        chunk(body[:third]) + chunk(body[third:2 * third]) + chunk(body[2 * third:]),
        b"%x;ext=1\r\n" % len(body) + body + b"\r\n",
    ]
    for stream in variants:
        for pieces in splits(stream):
            sub, states = make_sse()
            for p in pieces:
                if p:
                    sub.feed(p)
            assert sub.group.deliveries == 5, pieces
            assert sub.ctl == 2
            assert states == ["ready"]
            assert len(sub.lat.samples) == 5
            assert sub.sbuf == b""


def test_sse_whole_chunks_fast_path():
    # after the control events, reads of whole one-event chunks are counted
    # in the raw bytes; anything else must take the de-chunking path
    sub, _ = make_sse(sample=1)
    sub.feed(b"".join(chunk(b) for b in sse_body()[:2]))
    assert sub.ctl == 2
    events = [sse_block(b"bench", cloud_event(i), i) for i in range(6)]
    whole = b"".join(chunk(b) for b in events[:3])
    assert sub.feed_whole_chunks(whole) is True
    assert sub.group.deliveries == 3
    assert len(sub.lat.samples) == 3
    # a chunk cutting an event, a partial chunk, the last chunk: not here
    cut = chunk(events[3][:20]) + chunk(events[3][20:])
    assert sub.feed_whole_chunks(cut) is False
    assert sub.feed_whole_chunks(chunk(events[4])[:-3]) is False
    assert sub.feed_whole_chunks(b"0\r\n\r\n") is False
    assert sub.group.deliveries == 3
    sub.feed(cut + chunk(events[4]) + chunk(b": heartbeat\n\n") + chunk(events[5]))
    assert sub.group.deliveries == 6


def test_sse_end_of_stream_is_a_disconnect():
    sub, _states = make_sse()
    sub.sock = None
    sub.feed(chunk(sse_block(b"bench", cloud_event(1), 1)) + b"0\r\n\r\n")
    assert sub.group.deliveries == 1
    assert sub.group.disconnects == 1


def test_sse_unchunked_body():
    sub, _ = make_sse(chunked=False)
    for block in sse_body():
        sub.feed(block)
    assert sub.group.deliveries == 5


def test_sse_sampling():
    sub, _ = make_sse(sample=8)
    blocks = [sse_block(b"bench", cloud_event(i), i) for i in range(64)]
    for b in blocks:
        sub.feed(chunk(b))
    assert sub.group.deliveries == 64
    assert len(sub.lat.samples) == 8


def test_dechunker_reports_end_and_garbage():
    d = fanout.Dechunker()
    assert d.feed(b"3\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert d.done
    with pytest.raises(ValueError):
        fanout.Dechunker().feed(b"zz\r\n")


def test_parse_head():
    status, headers = fanout.parse_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nX: a:b")
    assert status == 101
    assert headers[b"upgrade"] == b"WebSocket"
    assert headers[b"x"] == b"a:b"


def test_extra_subscriptions_never_match_bench():
    subs = fanout.extra_subscriptions(3, "bench")
    assert len(subs) == 10
    for s in subs:
        if s["eventType"] == "bench":
            assert s["oneOf"][0]["room"] != "main"
