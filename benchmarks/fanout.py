#!/usr/bin/env python3
"""Fan-out load generator for txrig (or any Reactive Interaction Gateway).

Runs in its own process, against a gateway running in another one.  It opens
``--ws`` WebSocket and ``--sse`` Server-Sent-Events subscribers (plus
``--extra`` WebSocket connections whose subscriptions must match nothing),
publishes CloudEvents with ``POST /_rig/v1/events`` either on a steady
schedule (``--rate``) or as fast as the gateway accepts them (``--max``), and
counts what every subscriber receives.

Speed is the point of this file: one core has to count well over 200,000
deliveries per second, so nothing here uses Twisted, autobahn or a real
HTTP/WebSocket/SSE parser on the receiving side.  Everything is raw
non-blocking sockets driven by one ``selectors`` loop; the handshakes are
written by hand and, once a stream is open, only frame boundaries are
parsed:

* WebSocket: the 2/4/10-byte header of an unmasked server frame gives the
  payload length.  Text frames holding ``"rig.`` are the control events
  (``rig.connection.create`` / ``rig.subscriptions_set``) until both have
  been seen; every later text frame is a delivery (the marker is only
  looked for until then: it costs a third of a frame's parsing).  Pings
  are answered with (masked) pongs.
* SSE: ``bytes.count`` of ``\\nevent: <type>\\n`` lines (one per event
  block).  A read of whole chunks each ending with a whole event is counted
  as it is; any other read is de-chunked first and counted up to its last
  ``\\n\\n``, the partial block being kept for the next read.

The publish time travels in the event (``data.t``, ``time.time_ns()`` at
send) and is parsed back only from a sample of deliveries (``--sample``).

Standard library only; Linux only for ``--gateway-pid`` (``/proc``).
Every loop has a deadline, so the script always exits by itself.
"""
from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import re
import resource
import select
import selectors
import socket
import sys
import time
import urllib.parse

# recv() sizes above glibc's mmap threshold (128 KiB) cost an mmap/munmap
# per call: 64 KiB reads are ~5x cheaper than 256 KiB ones.
RECV_SIZE = 64 * 1024
T_RE = re.compile(rb'"t"\s*:\s*(\d+)')
WS_RIG_MARK = b'"rig.'
if hasattr(select, "epoll"):
    READ, WRITE = select.EPOLLIN, select.EPOLLOUT
    _ERRHUP = select.EPOLLERR | select.EPOLLHUP
else:  # pragma: no cover - non-Linux fallback
    READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
    _ERRHUP = 0
MAX_PUBLISHERS = 256  # paced mode grows its pool up to this
LATENCY_SAMPLES_PER_S = 5000  # --rate: default sampling aims at this
_CONNECT_OK = (0, errno.EISCONN)
_CONNECT_PENDING = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


# --------------------------------------------------------------------------
# Shared counters
# --------------------------------------------------------------------------
class Group:
    """Counters of one kind of subscriber (ws, sse, extra)."""

    __slots__ = (
        "control",
        "deliveries",
        "disconnects",
        "failed",
        "name",
        "opened",
        "ready",
        "reasons",
    )

    def __init__(self, name):
        self.name = name
        self.deliveries = 0   # matching events received (all time)
        self.control = 0      # rig.* events received
        self.opened = 0       # handshakes completed
        self.ready = 0        # connections that got both rig.* events
        self.failed = 0       # connects / handshakes that failed
        self.disconnects = 0  # open connections lost before the end
        self.reasons = {}

    def fail(self, reason, was_open):
        if was_open:
            self.disconnects += 1
        else:
            self.failed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class Latency:
    """Sampled publish-to-receive latencies, in ns."""

    __slots__ = ("from_ns", "samples")

    def __init__(self):
        self.from_ns = 1 << 63  # only events published after this count
        self.samples = []

    def add(self, t_sent, t_recv):
        if t_sent >= self.from_ns:
            self.samples.append(t_recv - t_sent)


# --------------------------------------------------------------------------
# Incremental de-chunker (HTTP/1.1 Transfer-Encoding: chunked)
# --------------------------------------------------------------------------
class Dechunker:
    """Feed raw chunked bytes, get the body bytes back.  ``done`` is set
    after the terminating zero-size chunk (trailers are ignored: the caller
    stops reading that message there)."""

    __slots__ = ("crlf", "done", "left", "pending")

    def __init__(self):
        self.pending = b""  # incomplete chunk-size line
        self.left = 0       # body bytes left in the current chunk
        self.crlf = 0       # bytes of the CRLF after the chunk still to skip
        self.done = False

    def feed(self, data):
        if self.pending:
            data = self.pending + data
            self.pending = b""
        n = len(data)
        pos = 0
        out = []
        left = self.left
        crlf = self.crlf
        while pos < n:
            if left:
                end = pos + left
                end = min(end, n)
                out.append(data[pos:end])
                left -= end - pos
                pos = end
                continue
            if crlf:
                skip = crlf if crlf < n - pos else n - pos
                crlf -= skip
                pos += skip
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self.pending = data[pos:]
                if len(self.pending) > 1024:
                    raise ValueError("chunk size line too long")
                break
            size_line = data[pos:eol]
            if b";" in size_line:
                size_line = size_line.split(b";", 1)[0]
            size = int(size_line, 16)  # ValueError on garbage
            pos = eol + 2
            if size == 0:
                self.done = True
                break
            end = pos + size
            if end + 2 <= n:  # fast path: the whole chunk is here
                out.append(data[pos:end])
                pos = end + 2
            else:
                left = size
                crlf = 2
        self.left = left
        self.crlf = crlf
        if len(out) == 1:
            return out[0]
        return b"".join(out)


def parse_head(head):
    """Status code and lower-cased header dict of an HTTP response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


# --------------------------------------------------------------------------
# Event loop
# --------------------------------------------------------------------------
class Poller:
    """The few selector calls used here.  On Linux this drives ``epoll``
    itself: ``selectors`` builds a key tuple per ready descriptor, which is
    a measurable share of the per-delivery cost; elsewhere it falls back to
    ``selectors.DefaultSelector``."""

    def __init__(self):
        if hasattr(select, "epoll"):
            self.ep = select.epoll()
            self.conns = {}
            self.sel = None
        else:  # pragma: no cover
            self.ep = None
            self.sel = Poller()

    def register(self, sock, mask, conn):
        if self.ep is not None:
            fd = sock.fileno()
            self.ep.register(fd, mask)
            self.conns[fd] = conn
        else:
            self.sel.register(sock, mask, conn)

    def modify(self, sock, mask, conn):
        if self.ep is not None:
            self.ep.modify(sock.fileno(), mask)
        else:
            self.sel.modify(sock, mask, conn)

    def unregister(self, sock):
        if self.ep is not None:
            fd = sock.fileno()
            if self.conns.pop(fd, None) is not None:
                self.ep.unregister(fd)
        else:
            self.sel.unregister(sock)

    def dispatch(self, timeout):
        """Wait up to ``timeout`` s and hand each ready connection its
        events; returns how many there were."""
        timeout = max(timeout, 0)
        if self.ep is None:  # pragma: no cover
            ready = self.sel.select(timeout)
            for key, mask in ready:
                key.data.on_event(mask)
            return len(ready)
        try:
            ready = self.ep.poll(timeout, 4096)
        except InterruptedError:
            return 0
        conns = self.conns
        for fd, ev in ready:
            conn = conns.get(fd)
            if conn is None:
                continue
            if ev & _ERRHUP:
                conn.on_event(ev | conn.mask)
            elif ev & conn.mask:
                conn.on_event(ev)
            # else: a stale event of a reused descriptor
        return len(ready)

    def close(self):
        if self.ep is not None:
            self.ep.close()
        else:  # pragma: no cover
            self.sel.close()


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------
class Conn:
    """A non-blocking client socket registered with the selector."""

    __slots__ = ("closed", "fd", "mask", "out", "sel", "sock")

    def __init__(self, sel):
        self.sel = sel
        self.sock = None
        self.fd = -1
        self.out = b""
        self.mask = 0
        self.closed = False

    def start_connect(self, addr):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()
        rc = sock.connect_ex(addr)
        if rc in _CONNECT_OK:
            self.mask = READ
            self.sel.register(sock, READ, self)
            self.on_connected()
        elif rc in _CONNECT_PENDING:
            self.mask = WRITE
            self.sel.register(sock, WRITE, self)
        else:
            self.fd = -1
            sock.close()
            self.sock = None
            self.closed = True
            self.on_failure(os.strerror(rc))

    def set_mask(self, mask):
        if mask != self.mask and not self.closed:
            self.mask = mask
            self.sel.modify(self.sock, mask, self)

    def send(self, data):
        """Send now what the kernel takes, queue the rest."""
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.lose("send: " + (exc.strerror or str(exc)))
            return
        if sent < len(data):
            self.out = data[sent:]
            self.set_mask(READ | WRITE)

    def on_event(self, mask):
        if mask & WRITE:
            if self.mask == WRITE:  # connect() completed (or failed)
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.lose("connect: " + os.strerror(err))
                    return
                self.set_mask(READ)
                self.on_connected()
            elif self.out:
                try:
                    sent = self.sock.send(self.out)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self.lose("send: " + (exc.strerror or str(exc)))
                    return
                self.out = self.out[sent:]
                if not self.out:
                    self.set_mask(READ)
        if mask & READ and not self.closed:
            self.on_read()

    def close(self, abort=False):
        if self.closed:
            return
        self.closed = True
        if self.sock is not None:
            try:
                self.sel.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            if abort:
                try:
                    self.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
                    )
                except OSError:
                    pass
            self.sock.close()

    def lose(self, reason):
        if not self.closed:
            self.close()
            self.on_failure(reason)

    # hooks
    def on_connected(self):
        raise NotImplementedError

    def on_read(self):
        raise NotImplementedError

    def on_failure(self, reason):
        raise NotImplementedError


class Subscriber(Conn):
    """Common part of the WS and SSE subscribers: hand-written handshake."""

    __slots__ = (
        "buf",
        "ctl",
        "group",
        "lat",
        "n",
        "on_state",
        "phase",
        "req",
        "sample",
        "state",
        "target_addr",
    )

    # states
    CONNECTING, HANDSHAKE, OPEN, DEAD = range(4)  # OPEN == 2: on_event

    def __init__(self, sel, group, lat, request, sample, phase, on_state):  # noqa: PLR0917
        super().__init__(sel)
        self.group = group
        self.lat = lat
        self.req = request
        self.state = self.CONNECTING
        self.buf = b""
        self.ctl = 0        # rig.* events seen
        self.n = 0          # deliveries seen
        self.sample = sample
        self.phase = phase  # spreads sampled messages over connections
        self.on_state = on_state

    def on_connected(self):
        self.state = self.HANDSHAKE
        self.send(self.req)

    def on_event(self, mask):
        if mask == READ and self.state == 2:  # OPEN and readable: hot path
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.lose("recv: " + (exc.strerror or str(exc)))
                return
            if data:
                self.feed(data)
            else:
                self.lose("eof")
            return
        Conn.on_event(self, mask)

    def on_failure(self, reason):
        was_open = self.state == self.OPEN
        self.state = self.DEAD
        self.group.fail(reason, was_open)
        if self.ctl < 2 or was_open:
            self.on_state(self, "dead")

    def on_read(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lose("recv: " + (exc.strerror or str(exc)))
            return
        if not data:
            self.lose("eof")
            return
        if self.state == self.OPEN:
            self.feed(data)
            return
        # still reading the response head
        data = self.buf + data
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > 65536:
                self.lose("handshake: response head too long")
            else:
                self.buf = data
            return
        self.buf = b""
        try:
            status, headers = parse_head(data[:end])
            self.check_head(status, headers)
        except ValueError as exc:
            self.lose(f"handshake: {exc}")
            return
        self.state = self.OPEN
        self.group.opened += 1
        rest = data[end + 4:]
        if rest and not self.closed:
            self.feed(rest)

    def count_control(self, k):
        before = self.ctl
        self.ctl = before + k
        self.group.control += k
        if before < 2 <= self.ctl:
            self.group.ready += 1
            self.on_state(self, "ready")

    def check_head(self, status, headers):
        raise NotImplementedError

    def feed(self, data):
        raise NotImplementedError


class WSSubscriber(Subscriber):
    __slots__ = ("frag_ctl",)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.frag_ctl = None  # classification of a fragmented message

    def check_head(self, status, headers):
        if status != 101:
            raise ValueError(f"status {status}, not 101")
        if headers.get(b"upgrade", b"").lower() != b"websocket":
            raise ValueError("no Upgrade: websocket")

    def feed(self, data):  # noqa: PLR0915 - one flat loop is the fast one
        if self.buf:
            data = self.buf + data
            self.buf = b""
        n = len(data)
        pos = 0
        deliv = 0
        ctl = 0
        # The two rig.* events come first (RIG's contract); looking for the
        # marker costs ~0.3 us a frame, so only until both have been seen.
        # Anything after them is a delivery, rig.* or not.
        has_rig = self.ctl < 2
        while n - pos >= 2:
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            if ln < 126:
                start = pos + 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:  # a server must not mask; skip the key if it does
                start += 4
            end = start + ln
            if end > n:
                break
            b0 = data[pos]
            pos = end
            op = b0 & 0x0F
            if op in {1, 2}:
                is_ctl = has_rig and data.find(WS_RIG_MARK, start, end) >= 0
                if not b0 & 0x80:  # first fragment of a longer message
                    self.frag_ctl = is_ctl
                    continue
            elif op == 0:
                if self.frag_ctl is None:
                    continue
                if not b0 & 0x80:
                    continue
                is_ctl = self.frag_ctl
                self.frag_ctl = None
                start = end  # no latency from fragmented messages
            elif op == 9:  # ping -> masked pong with the same payload
                self.send(ws_frame(0xA, data[start:end]))
                continue
            elif op == 8:
                self.buf = b""
                self.group.deliveries += deliv
                self.n += deliv
                if ctl:
                    self.count_control(ctl)
                self.lose("close frame")
                return
            else:
                continue  # pong or reserved: ignore
            if is_ctl:
                ctl += 1
                continue
            deliv += 1
            if (self.n + deliv + self.phase) % self.sample == 0:
                m = T_RE.search(data, start, end)
                if m is not None:
                    self.lat.add(int(m.group(1)), time.time_ns())
        if pos < n:
            if n - pos > 64 * 1024 * 1024:
                self.lose("frame too large")
                return
            self.buf = data[pos:]
        if deliv:
            self.n += deliv
            self.group.deliveries += deliv
        if ctl:
            self.count_control(ctl)


class SSESubscriber(Subscriber):
    __slots__ = (
        "chunks",
        "cr",
        "crlf",
        "ev_mid",
        "ev_start",
        "rig_mid",
        "rig_start",
        "sbuf",
    )

    def __init__(  # noqa: PLR0917
        self, sel, group, lat, request, sample, phase, on_state, event_type
    ):
        super().__init__(sel, group, lat, request, sample, phase, on_state)
        self.chunks = None  # Dechunker, when the body is chunked
        self.sbuf = b""
        self.ev_mid = b"\nevent: " + event_type + b"\n"
        self.ev_start = b"event: " + event_type + b"\n"
        self.rig_mid = b"\nevent: rig."
        self.rig_start = b"event: rig."
        self.crlf = None  # line ends are CRLF (decided on the first bytes)
        self.cr = b""

    def check_head(self, status, headers):
        if status != 200:
            raise ValueError(f"status {status}, not 200")
        ctype = headers.get(b"content-type", b"")
        if not ctype.startswith(b"text/event-stream"):
            raise ValueError(f"content-type {ctype!r}")
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self.chunks = Dechunker()

    def feed(self, data):
        ch = self.chunks
        if ch is not None:
            if self.ctl >= 2 and self.crlf is False and not self.sbuf \
                    and not (ch.pending or ch.left or ch.crlf) \
                    and self.feed_whole_chunks(data):
                return
            try:
                body = ch.feed(data)
            except ValueError as exc:
                self.lose(f"bad chunking: {exc}")
                return
            if ch.done:
                if body:
                    self.feed_body(body)
                self.lose("stream ended")
                return
            data = body
        if data:
            self.feed_body(data)

    def feed_whole_chunks(self, data):
        """Fast path for a read of whole chunks that each end with a whole
        event, which is what a server writing one event per write sends:
        count the events in the raw bytes, without de-chunking.  The
        ``\n`` ending each chunk-size line stands in for the one before an
        ``event:`` line.  Returns False, having changed nothing, for any
        other read."""
        n = len(data)
        pos = 0
        find = data.find
        startswith = data.startswith
        while pos < n:
            eol = find(b"\r\n", pos)
            if eol < 0 or eol - pos > 16:
                return False
            try:
                size = int(data[pos:eol], 16)
            except ValueError:
                return False
            end = eol + 2 + size
            if size == 0 or end + 2 > n or not startswith(b"\n\n\r\n", end - 2):
                return False
            pos = end + 2
        ev_mid = self.ev_mid
        deliv = data.count(ev_mid)
        if deliv:
            before = self.n + self.phase
            self.n += deliv
            self.group.deliveries += deliv
            sample = self.sample
            if sample == 1:
                now_ns = time.time_ns()
                i = find(ev_mid)
                while i >= 0:
                    m = T_RE.search(data, i)
                    if m is not None:
                        self.lat.add(int(m.group(1)), now_ns)
                    i = find(ev_mid, i + 1)
            elif (before + deliv) // sample != before // sample:
                # crossed a multiple of `sample`: take the newest event
                m = T_RE.search(data, data.rfind(ev_mid))
                if m is not None:
                    self.lat.add(int(m.group(1)), time.time_ns())
        return True

    def feed_body(self, data):
        if self.crlf is None:  # the first line end decides: LF or CRLF
            if self.sbuf:
                data = self.sbuf + data
                self.sbuf = b""
            i = data.find(b"\n")
            if i < 0:
                self.sbuf = data
                return
            self.crlf = i > 0 and data[i - 1] == 13
        if self.crlf:
            # normalise CRLF to LF; keep a trailing CR for the next read
            data = self.cr + data
            self.cr = b""
            if data.endswith(b"\r"):
                self.cr = b"\r"
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n")
        if self.sbuf:
            data = self.sbuf + data
        elif data.endswith(b"\n\n"):  # fast path: whole events only
            self.scan(data, len(data))
            return
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.sbuf = data
        else:
            cut += 2
            self.sbuf = data[cut:]
            self.scan(data, cut)
        if len(self.sbuf) > 16 * 1024 * 1024:
            self.lose("event too large")

    def scan(self, data, end):
        # data[:end] is a whole number of event blocks; the first block
        # starts at 0, every later one right after a "\n".
        ev_mid = self.ev_mid
        if end == len(data):  # the usual case; no start/end arguments: faster
            deliv = data.count(ev_mid)
        else:
            deliv = data.count(ev_mid, 0, end)
        if data.startswith(self.ev_start):
            deliv += 1
        if self.ctl < 2:
            ctl = data.count(self.rig_mid, 0, end)
            if data.startswith(self.rig_start):
                ctl += 1
        else:
            ctl = 0
        if deliv:
            before = self.n + self.phase
            self.n += deliv
            self.group.deliveries += deliv
            sample = self.sample
            if sample == 1:
                now_ns = time.time_ns()
                # every delivery: walk the blocks holding our event type
                i = data.find(ev_mid, 0, end)
                while i >= 0:
                    m = T_RE.search(data, i, end)
                    if m is not None:
                        self.lat.add(int(m.group(1)), now_ns)
                    i = data.find(ev_mid, i + 1, end)
                if data.startswith(self.ev_start):
                    m = T_RE.search(data, 0, end)
                    if m is not None:
                        self.lat.add(int(m.group(1)), now_ns)
            elif (before + deliv) // sample != before // sample:
                # crossed a multiple of `sample`: take the newest event
                i = data.rfind(ev_mid, 0, end)
                m = T_RE.search(data, i if i >= 0 else 0, end)
                if m is not None:
                    self.lat.add(int(m.group(1)), time.time_ns())
        if ctl:
            self.count_control(ctl)


class Publisher(Conn):
    """Keep-alive HTTP/1.1 POSTer with a single request in flight."""

    __slots__ = (
        "addr",
        "body_left",
        "buf",
        "busy",
        "chunks",
        "close_after",
        "head_done",
        "owner",
        "reconnects",
        "state",
        "status",
    )

    IDLE, CONNECTING, OPEN, DEAD = range(4)

    def __init__(self, sel, owner, addr):
        super().__init__(sel)
        self.owner = owner
        self.addr = addr
        self.state = self.IDLE
        self.busy = False
        self.reconnects = 0
        self._reset_response()

    def _reset_response(self):
        self.buf = b""
        self.head_done = False
        self.status = 0
        self.body_left = -1
        self.chunks = None
        self.close_after = False

    def ensure(self):
        if self.state in (self.IDLE, self.DEAD):
            self.closed = False
            self.out = b""
            self.state = self.CONNECTING
            self._reset_response()
            self.start_connect(self.addr)

    def ready(self):
        return self.state == self.OPEN and not self.busy

    def on_connected(self):
        self.state = self.OPEN

    def post(self, data):
        self.busy = True
        self._reset_response()
        self.send(data)

    def _recv(self):
        """Bytes from the socket (b"" at EOF), or None when there is nothing or it failed."""
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.lose("recv: " + (exc.strerror or str(exc)))
            return None

    def on_failure(self, reason):
        was_busy = self.busy
        self.busy = False
        self.state = self.DEAD
        self.owner.publisher_lost(self, reason, was_busy)

    def on_read(self):
        data = self._recv()
        if data is None:
            return
        if not data:
            if self.busy and self.head_done and self.body_left < 0 \
                    and self.chunks is None:
                self._finish()  # close-delimited response
            self.lose("eof")
            return
        if not self.busy:
            return  # unsolicited bytes: ignore
        if not self.head_done:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self.buf = b""
            try:
                status, headers = parse_head(data[:end])
            except ValueError as exc:
                self.lose(str(exc))
                return
            self.head_done = True
            self.status = status
            self.close_after = headers.get(b"connection", b"").lower() == b"close"
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self.chunks = Dechunker()
            elif b"content-length" in headers:
                self.body_left = int(headers[b"content-length"])
            elif status in (204, 304) or 100 <= status < 200:
                self.body_left = 0
            data = data[end + 4:]
        if self.chunks is not None:
            try:
                self.chunks.feed(data)
            except ValueError as exc:
                self.lose(f"bad chunking: {exc}")
                return
            if self.chunks.done:
                self._finish()
        elif self.body_left >= 0:
            self.body_left -= len(data)
            if self.body_left <= 0:
                self._finish()

    def _finish(self):
        self.busy = False
        status = self.status
        close = self.close_after
        self._reset_response()
        self.owner.publish_done(self, status)
        if close:
            self.close()
            self.state = self.IDLE


class RedisPublisher(Publisher):
    """Publishes with XADD over RESP (one command in flight) instead of HTTP POST:
    a bulk-string or simple-string reply counts as accepted (202), an error as 500."""

    __slots__ = ()

    def on_read(self):
        data = self._recv()
        if data is None:
            return
        if not data:
            self.lose("eof")
            return
        if not self.busy:
            return
        data = self.buf + data
        end = data.find(b"\r\n")
        if end < 0:
            self.buf = data
            return
        kind = data[:1]
        if kind == b"$" and len(data) < end + 2 + int(data[1:end]) + 2:
            self.buf = data
            return
        self.status = 500 if kind == b"-" else 202
        self._finish()


def resp_command(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            part = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def ws_frame(opcode, payload):
    """A masked client frame (small payloads only: pongs)."""
    mask = os.urandom(4)
    ln = len(payload)
    if ln < 126:
        head = bytes((0x80 | opcode, 0x80 | ln))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + ln.to_bytes(2, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_cpu_ticks(pid):
    """utime + stime of a process and its descendants (the workers of a
    ``WORKERS=N`` supervisor), in clock ticks (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    ticks = int(fields[11]) + int(fields[12])
    for child in proc_children(pid):
        ticks += proc_cpu_ticks(child) or 0
    return ticks


def proc_children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def self_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_times():
    """Per-CPU (busy, total) jiffies from /proc/stat, {} if unreadable."""
    out = {}
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    vals = [int(v) for v in vals]
                    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
                    total = sum(vals[:8])
                    out[name.decode()] = (total - idle, total)
    except OSError:
        pass
    return out


def cpu_busy_pct(before, after):
    """Busy % of each CPU between two cpu_times() readings."""
    res = {}
    for name, (busy1, total1) in after.items():
        if name in before:
            busy0, total0 = before[name]
            if total1 > total0:
                res[name] = round((busy1 - busy0) / (total1 - total0) * 100, 1)
    return res


def pinned_cpu(pid):
    """"cpuN" if the process may run on exactly one CPU, else None."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Cpus_allowed_list:"):
                    value = line.split(b":", 1)[1].strip().decode()
                    return "cpu" + value if value.isdigit() else None
    except OSError:
        return None
    return None


def proc_rss_kb(pid):
    """Resident KB of a process and its descendants (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            own = next((int(line.split()[1]) for line in f if line.startswith(b"VmRSS:")), None)
    except OSError:
        return None
    if own is None:
        return None
    return own + sum(proc_rss_kb(child) or 0 for child in proc_children(pid))


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = round(q * (len(sorted_values) - 1))
    return sorted_values[k]


def subscription_query(subs):
    return urllib.parse.quote(json.dumps(subs, separators=(",", ":")), safe="")


def extra_subscriptions(i, event_type, per_conn=10):
    """10 subscriptions that must match none of the published events:
    the same event type with other constraint values, and other types."""
    subs = []
    for k in range(per_conn):
        if k % 2 == 0:
            subs.append({"eventType": event_type,
                         "oneOf": [{"room": f"other-{i}-{k}"}]})
        else:
            subs.append({"eventType": f"other-{k}"})
    return subs


def ws_request(host_header, path):
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def sse_request(host_header, path):
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        url = urllib.parse.urlsplit(args.url)
        if url.scheme != "http":
            raise SystemExit("--url must be http://HOST:PORT (no TLS)")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.addr = (socket.gethostbyname(self.host), self.port)
        self.host_header = f"{self.host}:{self.port}"
        self.prefix = url.path.rstrip("/")
        self.etype = args.event_type
        self.sel = Poller()
        self.lat = Latency()
        self.groups = {n: Group(n) for n in ("ws", "sse", "extra")}
        self.subs = []
        self.inflight_handshakes = 0
        self.accepted = 0        # POSTs answered 2xx
        self.rejected = {}       # other statuses
        self.post_errors = {}    # lost publisher connections
        self.sent = 0            # POSTs sent
        self.publishers = []
        self.seq = 0
        self._post_head = (
            f"POST {self.prefix}/_rig/v1/events HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._body_fmt = (
            f'{{"specversion":"1.0","type":{json.dumps(self.etype)},"source":"bench","id":"%d",'
            f'"data":{{"seq":%d,"room":{json.dumps(args.room)},"t":%d}}}}'
        ).encode()

    # ---- subscribers ---------------------------------------------------
    def build_subscribers(self):
        a = self.args
        sample = self.sample
        et = self.etype.encode()
        base = self.prefix + "/_rig/v1/connection/"
        main_q = subscription_query([{"eventType": self.etype}])
        ws_path = base + "ws?subscriptions=" + main_q
        sse_path = base + "sse?subscriptions=" + main_q
        targets = [(self.addr, self.host_header)]
        if a.subscribe_url:
            targets = []
            for text in a.subscribe_url.split(","):
                url = urllib.parse.urlsplit(text.strip())
                host, port = url.hostname or "127.0.0.1", url.port or 80
                targets.append(((socket.gethostbyname(host), port), f"{host}:{port}"))
        idx = 0
        for _ in range(a.ws):
            addr, host_header = targets[idx % len(targets)]
            sub = WSSubscriber(
                self.sel, self.groups["ws"], self.lat,
                ws_request(host_header, ws_path), sample, idx % sample,
                self.sub_state)
            sub.target_addr = addr
            self.subs.append(sub)
            idx += 1
        for _ in range(a.sse):
            addr, host_header = targets[idx % len(targets)]
            sub = SSESubscriber(
                self.sel, self.groups["sse"], self.lat,
                sse_request(host_header, sse_path), sample, idx % sample,
                self.sub_state, et)
            sub.target_addr = addr
            self.subs.append(sub)
            idx += 1
        for i in range(a.extra):
            q = subscription_query(extra_subscriptions(i, self.etype))
            self.subs.append(WSSubscriber(
                self.sel, self.groups["extra"], self.lat,
                ws_request(self.host_header, base + "ws?subscriptions=" + q),
                1, 0, self.sub_state))

    def sub_state(self, sub, event):
        # "ready": got both rig.* events; "dead": failed or lost
        if event == "ready" or sub.ctl < 2:
            self.inflight_handshakes -= 1

    def connect_all(self):
        """Open every subscriber, at most --connect-concurrency handshakes at
        a time, and wait until each has its two rig.* events."""
        a = self.args
        pending = list(reversed(self.subs))
        deadline = time.monotonic() + a.connect_timeout
        sel = self.sel
        total = len(self.subs)
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            while pending and self.inflight_handshakes < a.connect_concurrency:
                s = pending.pop()
                self.inflight_handshakes += 1
                s.start_connect(getattr(s, "target_addr", self.addr))
            if not pending and self.inflight_handshakes <= 0:
                return True
            sel.dispatch(0.05)
            now = time.monotonic()
            if a.verbose and now - last_report > 2:
                last_report = now
                self.log(f"connecting: {total - len(pending)}/{total} started, "
                         f"{self.ready_count()} ready, {self.failed_count()} failed")
        return False

    def ready_count(self):
        return sum(g.ready for g in self.groups.values())

    def failed_count(self):
        return sum(g.failed for g in self.groups.values())

    # ---- publishing ----------------------------------------------------
    def _new_publisher(self):
        if self.args.publish_redis:
            host, _, port = self.args.publish_redis.rpartition(":")
            return RedisPublisher(self.sel, self, (socket.gethostbyname(host), int(port)))
        return Publisher(self.sel, self, self.addr)

    def make_post(self):
        self.seq += 1
        seq = self.seq
        body = self._body_fmt % (seq, seq, time.time_ns())
        if self.args.publish_redis:
            return resp_command("XADD", self.args.redis_stream, "*", "event", body)
        return self._post_head + str(len(body)).encode() + b"\r\n\r\n" + body

    def publish_done(self, pub, status):
        if 200 <= status < 300:
            self.accepted += 1
        else:
            self.rejected[status] = self.rejected.get(status, 0) + 1

    def publisher_lost(self, pub, reason, was_busy):
        key = reason + (" (request in flight)" if was_busy else "")
        self.post_errors[key] = self.post_errors.get(key, 0) + 1
        pub.reconnects += 1

    def free_publisher(self):
        """An idle publisher for the next paced POST.  If every one is busy
        (the gateway answers slower than the tick), open one more, up to
        MAX_PUBLISHERS, so the schedule does not depend on answer times."""
        connecting = False
        for p in self.publishers:
            if p.ready():
                return p
            if p.state in (Publisher.IDLE, Publisher.DEAD) \
                    and p.reconnects < 100:
                p.ensure()
            if p.state == Publisher.CONNECTING:
                connecting = True
        if not connecting and len(self.publishers) < MAX_PUBLISHERS:
            p = self._new_publisher()
            self.publishers.append(p)
            p.ensure()
        return None

    def publishing_inflight(self):
        return sum(1 for p in self.publishers if p.busy)

    # ---- main ------------------------------------------------------------
    def run(self):  # noqa: PLR0915 - the phases read best in order
        a = self.args
        pid = a.gateway_pid
        nofile = raise_nofile()
        n_subs = a.ws + a.sse
        n_conns = n_subs + a.extra
        if n_conns + a.concurrency + 16 > nofile:
            self.log(f"warning: {n_conns} connections but RLIMIT_NOFILE is {nofile}")
        if a.sample:
            self.sample = a.sample
        elif a.max:
            self.sample = 64
        else:
            # about LATENCY_SAMPLES_PER_S samples a second: parsing every
            # delivery of 1000 subscribers at 50 ev/s would cost the
            # generator more than counting them, and delay what it measures
            self.sample = max(1, -(-int(a.rate * n_subs) // LATENCY_SAMPLES_PER_S))
        result = {
            "label": a.label, "url": a.url,
            "mode": "idle" if a.idle else ("max" if a.max else "rate"),
            "ws": a.ws, "sse": a.sse, "extra": a.extra,
            "rate": None if (a.max or a.idle) else a.rate,
            "concurrency": a.concurrency if a.max else None,
            "duration_s": a.duration, "warmup_s": a.warmup,
            "latency_sample_every": self.sample,
        }
        rss_before = proc_rss_kb(pid) if pid else None

        self.build_subscribers()
        t0 = time.monotonic()
        all_up = self.connect_all()
        connect_s = time.monotonic() - t0
        ready = {n: g.ready for n, g in self.groups.items()}
        n_ready_subs = ready["ws"] + ready["sse"]
        n_ready = n_ready_subs + ready["extra"]
        late_conns = n_conns - n_ready - self.failed_count()
        self.log(f"{n_ready}/{n_conns} connections ready in {connect_s:.1f} s"
                 + ("" if all_up else f" (timed out: {late_conns} still connecting)"))
        # let the gateway settle, then weigh it
        self.pump(time.monotonic() + a.settle)
        rss_after = proc_rss_kb(pid) if pid else None

        result.update({
            "connections": n_conns,
            "connections_ready": n_ready,
            "connect_failed": self.failed_count(),
            "connect_s": round(connect_s, 3),
            "gateway_rss_kb_before": rss_before,
            "gateway_rss_kb_after": rss_after,
            "rss_kb_per_connection": (
                round((rss_after - rss_before) / n_ready, 2)
                if rss_before is not None and rss_after is not None and n_ready
                else None),
        })

        if not a.idle:
            for _ in range(a.concurrency):
                p = self._new_publisher()
                self.publishers.append(p)
                p.ensure()
            self.pump(time.monotonic() + 0.2)

        # ---- warmup + measured window --------------------------------
        d0 = self.total_deliveries()
        t_start = time.monotonic()
        warm_end = t_start + a.warmup
        end = warm_end + a.duration
        win = None
        next_tick = t_start
        period = 1.0 / a.rate if a.rate else 0.0
        late = 0
        loops = 0
        sel = self.sel
        paced = not a.idle and not a.max
        while True:
            now = time.monotonic()
            if win is None and now >= warm_end:
                self.lat.from_ns = time.time_ns()
                win = {
                    "t": now, "deliv": self.total_deliveries(),
                    "extra": self.groups["extra"].deliveries,
                    "sent": self.sent, "accepted": self.accepted,
                    "cpu": proc_cpu_ticks(pid) if pid else None,
                    "self_cpu": self_cpu_s(), "loops": loops,
                    "cpus": cpu_times(),
                }
            if now >= end:
                break
            timeout = 0.05
            if a.max:
                for p in self.publishers:
                    if p.ready():
                        p.post(self.make_post())
                        self.sent += 1
                    elif p.state in (Publisher.IDLE, Publisher.DEAD) \
                            and p.reconnects < 100:
                        p.ensure()
                timeout = 0.01
            elif paced:
                if now >= next_tick:
                    p = self.free_publisher()
                    if p is not None:
                        p.post(self.make_post())
                        self.sent += 1
                        next_tick += period
                        if now - next_tick > 1.0:  # hopelessly behind: skip
                            skipped = int((now - next_tick) / period)
                            late += skipped
                            next_tick += skipped * period
                        timeout = 0 if now >= next_tick else next_tick - now
                    else:  # every publisher busy: wait for an answer
                        timeout = 0.001
                else:
                    timeout = next_tick - now
                timeout = min(timeout, end - now, 0.05)
            loops += 1
            sel.dispatch(timeout)
        t_end = time.monotonic()
        loops_end = loops
        cpu_end = proc_cpu_ticks(pid) if pid else None
        self_cpu_end = self_cpu_s()
        cpus_end = cpu_times()
        deliv_end = self.total_deliveries()
        window_s = t_end - win["t"]

        # ---- drain -----------------------------------------------------
        last = (self.total_deliveries(), self.publishing_inflight())
        last_progress = time.monotonic()
        hard = last_progress + a.drain_max
        while True:
            now = time.monotonic()
            expected = self.accepted * n_ready_subs
            got = self.total_deliveries()
            inflight = self.publishing_inflight()
            if got >= expected and inflight == 0:
                # complete: linger a moment for stray extra deliveries
                if now - last_progress >= min(0.2, a.drain):
                    break
            if now - last_progress >= a.drain or now >= hard:
                break
            sel.dispatch(0.05)
            cur = (self.total_deliveries(), self.publishing_inflight())
            if cur != last:
                last = cur
                last_progress = time.monotonic()
        drain_s = time.monotonic() - t_end

        # ---- results ---------------------------------------------------
        g = self.groups
        published = self.accepted
        expected = published * n_ready_subs
        received = self.total_deliveries()
        lat = sorted(self.lat.samples)

        def ms(v):
            return None if v is None else round(v / 1e6, 3)

        tck = os.sysconf("SC_CLK_TCK")
        busy = cpu_busy_pct(win["cpus"], cpus_end)
        gen_pct = round((self_cpu_end - win["self_cpu"]) / window_s * 100, 1) \
            if window_s > 0 else None

        def others(p, own):
            cpu = pinned_cpu(p) if p else None
            if cpu is None or own is None or cpu not in busy:
                return None
            return round(max(0.0, busy[cpu] - own), 1)

        cpu_pct = None
        if win["cpu"] is not None and cpu_end is not None and window_s > 0:
            cpu_pct = round((cpu_end - win["cpu"]) / tck / window_s * 100, 1)
        reasons = {}
        for grp in g.values():
            for k, v in grp.reasons.items():
                key = f"{grp.name}: {k}"
                reasons[key] = reasons.get(key, 0) + v
        result.update({
            "subscribers": n_ready_subs,
            "events_sent": self.sent,
            "events_published": published,
            "events_rejected": self.rejected,
            "publish_errors": self.post_errors,
            "publish_rate": round(
                (self.accepted - win["accepted"]) / window_s, 1)
            if window_s > 0 else None,
            "late_ticks_skipped": late,
            "publisher_connections": len(self.publishers),
            "expected_deliveries": expected,
            "deliveries_received": received,
            "received_ws": g["ws"].deliveries,
            "received_sse": g["sse"].deliveries,
            "lost": expected - received,
            "extra_unexpected": g["extra"].deliveries,
            "window_s": round(window_s, 3),
            "drain_s": round(drain_s, 3),
            "deliveries_per_s": round((deliv_end - win["deliv"]) / window_s, 1)
            if window_s > 0 else None,
            "latency_samples": len(lat),
            "latency_ms": {
                "p50": ms(percentile(lat, 0.50)),
                "p90": ms(percentile(lat, 0.90)),
                "p99": ms(percentile(lat, 0.99)),
                "max": ms(lat[-1] if lat else None),
            },
            "gateway_cpu_pct": cpu_pct,
            # the generator's own CPU over the window: near 100 means the
            # figures above are the generator's limit, not the gateway's
            "generator_cpu_pct": gen_pct,
            "loop_iterations": loops_end - win["loops"],
            # whole-machine view: a CPU busier than the process pinned to it
            # means something else was running there too
            "cpu_busy_pct": busy,
            # busy time of the pinned CPU not spent by the process itself:
            # other processes and interrupts (high values: figures skewed)
            "gateway_cpu_others_pct": others(pid, cpu_pct),
            "generator_cpu_others_pct": others(os.getpid(), gen_pct),
            "disconnects": sum(x.disconnects for x in g.values()),
            "failure_reasons": reasons,
        })
        if a.idle:
            result["deliveries_received_before"] = d0
        self.close_all()
        return result

    def pump(self, until):
        sel = self.sel
        while True:
            now = time.monotonic()
            if now >= until:
                return
            sel.dispatch(min(0.05, until - now))

    def total_deliveries(self):
        g = self.groups
        return g["ws"].deliveries + g["sse"].deliveries

    def close_all(self):
        for s in self.subs:
            s.close(abort=self.args.abort_close)
        for p in self.publishers:
            p.close()
        self.sel.close()

    def log(self, msg):
        if not self.args.quiet:
            print("fanout: " + msg, file=sys.stderr, flush=True)


def summary(r):
    lines = []
    lbl = (r.get("label") + ": ") if r.get("label") else ""
    mode = r["mode"]
    if mode == "rate":
        mode = f"paced {r['rate']:g} ev/s"
    elif mode == "max":
        mode = f"saturation ({r['concurrency']} POSTs in flight)"
    lines.append(f"{lbl}{mode}, {r['ws']} WS + {r['sse']} SSE subscribers, "
                 f"{r['extra']} extra WS")
    lines.append(f"  connections      {r['connections_ready']} ready of "
                 f"{r['connections']} ({r['connect_failed']} failed, "
                 f"connect {r['connect_s']:.1f} s)")
    if r["mode"] != "idle":
        lines.append(f"  published        {r['events_published']} events "
                     f"({r['publish_rate']} ev/s in window)")
        lines.append(f"  deliveries       {r['deliveries_received']} received of "
                     f"{r['expected_deliveries']} expected, lost {r['lost']}")
        lines.append(f"  throughput       {r['deliveries_per_s']:.0f} deliveries/s "
                     f"over {r['window_s']:.1f} s")
        lt = r["latency_ms"]
        if r["latency_samples"]:
            lines.append(f"  latency ms       p50 {lt['p50']:.2f}  p90 {lt['p90']:.2f}  "
                         f"p99 {lt['p99']:.2f}  max {lt['max']:.2f}  "
                         f"({r['latency_samples']} samples)")
        else:
            lines.append("  latency ms       no samples")
        if r["extra"]:
            bug = "" if r["extra_unexpected"] == 0 else "  <-- MATCHING BUG"
            lines.append(f"  extra conns      {r['extra_unexpected']} unexpected "
                         f"deliveries{bug}")
    if r["gateway_cpu_pct"] is not None or r["mode"] != "idle":
        lines.append(f"  CPU              gateway {r['gateway_cpu_pct']} %, "
                     f"generator {r['generator_cpu_pct']} % of one core")
        go, no = r.get("gateway_cpu_others_pct"), r.get("generator_cpu_others_pct")
        if go is not None or no is not None:
            lines.append(f"  other load       {go} % on the gateway's CPU, "
                         f"{no} % on the generator's")
        else:
            busy = ", ".join(f"{k} {v:.0f} %" for k, v in r.get("cpu_busy_pct", {}).items())
            if busy:
                lines.append(f"  machine          {busy} busy")
    if r["rss_kb_per_connection"] is not None:
        lines.append(f"  gateway RSS      {r['gateway_rss_kb_before']} -> "
                     f"{r['gateway_rss_kb_after']} KB, "
                     f"{r['rss_kb_per_connection']:.1f} KB/connection")
    if r["disconnects"] or r["failure_reasons"]:
        lines.append(f"  disconnects      {r['disconnects']}  "
                     f"{json.dumps(r['failure_reasons'])}")
    if r["publish_errors"] or r["events_rejected"]:
        rejected = {str(k): v for k, v in r["events_rejected"].items()}
        lines.append(f"  publish errors   {json.dumps(r['publish_errors'])} "
                     f"rejected {json.dumps(rejected)}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Fan-out load generator for the Reactive Interaction Gateway")
    p.add_argument("--url", default="http://127.0.0.1:4000",
                   help="gateway inbound base URL (default %(default)s)")
    p.add_argument("--subscribe-url", default="",
                   help="comma-separated gateway URLs the subscribers are spread over "
                        "(round robin; default: --url) -- e.g. the nodes of a cluster")
    p.add_argument("--publish-redis", default="", metavar="HOST:PORT",
                   help="publish with XADD to this Redis (the gateway consumes the stream) "
                        "instead of POSTing to the gateway")
    p.add_argument("--redis-stream", default="rig", help="stream for --publish-redis")
    p.add_argument("--ws", type=int, default=0, help="WebSocket subscribers")
    p.add_argument("--sse", type=int, default=0, help="SSE subscribers")
    p.add_argument("--extra", type=int, default=0,
                   help="extra WS connections with 10 non-matching "
                        "subscriptions each (must receive nothing)")
    p.add_argument("--event-type", default="bench")
    p.add_argument("--room", default="main",
                   help="data.room of published events (default %(default)s)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, default=0.0,
                      help="publish R events/s on a steady schedule")
    mode.add_argument("--max", action="store_true",
                      help="saturation: keep --concurrency POSTs in flight")
    mode.add_argument("--idle", action="store_true",
                      help="connect, weigh the gateway, publish nothing")
    p.add_argument("--concurrency", type=int, default=8,
                   help="keep-alive publisher connections: POSTs in flight "
                        "under --max; the initial pool under --rate, which "
                        "grows when every one is waiting (default %(default)s)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured window, s (default %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="publishing before the window, s (default %(default)s)")
    p.add_argument("--drain", type=float, default=2.0,
                   help="stop waiting for deliveries after this long without "
                        "progress, s (default %(default)s)")
    p.add_argument("--drain-max", type=float, default=30.0,
                   help="hard limit of the drain, s (default %(default)s)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="pause after connecting, before weighing, s")
    p.add_argument("--sample", type=int, default=0,
                   help="parse latency from every Nth delivery per connection "
                        "(default: about 5000 samples/s under --rate, so all "
                        "of them up to 5000 deliveries/s; 1/64 under --max)")
    p.add_argument("--connect-concurrency", type=int, default=50,
                   help="handshakes in flight while connecting")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--gateway-pid", type=int, default=0,
                   help="sample CPU and RSS of this process from /proc")
    p.add_argument("--abort-close", action="store_true",
                   help="close subscribers with RST (no TIME_WAIT)")
    p.add_argument("--label", default="", help="scenario name in the output")
    p.add_argument("--json-only", action="store_true",
                   help="print only the JSON line")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    if not (a.max or a.idle or a.rate > 0):
        p.error("choose one of --rate R, --max or --idle")
    if a.ws < 0 or a.sse < 0 or a.extra < 0 or a.ws + a.sse + a.extra == 0:
        p.error("open some connections: --ws N and/or --sse N")
    if a.idle:
        a.warmup = 0.0
    return a


def main(argv=None):
    args = parse_args(argv)
    result = Bench(args).run()
    print(json.dumps(result, sort_keys=False), flush=True)
    if not args.json_only:
        print(summary(result), flush=True)
    bad = result["connections_ready"] < result["connections"] \
        or (result["mode"] != "idle" and result["lost"] != 0) \
        or result["extra_unexpected"] or result["disconnects"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
