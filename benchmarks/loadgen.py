"""The load generator's client side: raw non-blocking WebSocket, SSE and HTTP
publishing connections on one ``selectors`` loop, and /proc readers.

Used by ``fanout.py`` (the command line) and ``soak.py``. Speed is the point:
one core has to count well over 200,000 deliveries per second, so nothing here
uses Twisted, autobahn or a real HTTP/WebSocket/SSE parser on the receiving
side (see fanout.py's docstring for how frames are counted).

Standard library only; Linux only for the /proc readers.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import re
import resource
import select
import selectors
import socket
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

    def _received(self):
        """Bytes read, or None when there were none or the server closed (then lost)."""
        data = self._recv()
        if data is not None and not data:
            self.lose("eof")
            return None
        return data

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
        data = self._received()
        if data is None or not self.busy:
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


class NatsPublisher(Publisher):
    """Publishes with NATS ``PUB`` followed by ``PING`` (one in flight): the server's
    ``PONG`` says it has taken the message (202), ``-ERR`` counts as 500."""

    __slots__ = ()

    def on_connected(self):
        self.state = self.OPEN
        self.send(b'CONNECT {"verbose":false,"pedantic":false,"name":"fanout"}\r\n')

    def on_read(self):
        data = self._received()
        if data is None:
            return
        data = self.buf + data
        if b"PING\r\n" in data:
            self.send(b"PONG\r\n")
        if not self.busy:
            self.buf = b""
            return
        if b"-ERR" in data or b"PONG\r\n" in data:
            self.status = 500 if b"-ERR" in data else 202
            self._finish()
            return
        self.buf = data[-5:]


def nats_publish(subject, body):
    return b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(body), body)


def resp_command(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
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
