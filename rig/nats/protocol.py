"""The NATS client protocol: what the server sends, parsed; what a client sends, framed.

NATS speaks a small text protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol):
control lines ending in CRLF, and for ``MSG``/``HMSG`` a payload of a stated
length after the line. This module knows the wire and nothing else; the
:class:`~rig.nats.client.NatsClient` decides what to do with what arrives.

Subjects and queue names go into control lines, so anything with white space
or a control character is refused before it is framed: an API definition
posted at runtime must not be able to write a second command.
"""
import json
import re

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from rig.hub.outbox import no_delay

# a subject: dot-separated tokens of printable characters other than space
_SUBJECT = re.compile(r"[!-~\u0080-\U0010ffff]+")
_QUEUE = re.compile(r"[!-~\u0080-\U0010ffff]+")
MAX_CONTROL_LINE = 64 * 1024  # INFO lines of big clusters list many URLs
MAX_MESSAGE = 64 * 1024 * 1024  # far above any server's max_payload (1 MB by default)


class ProtocolError(ValueError):
    """The server sent something that is not the NATS protocol."""


def check_subject(subject, *, wildcards=False):
    """*subject* if it is a valid NATS subject (wildcards ``*``/``>`` only if allowed);
    ValueError saying why if not."""
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise ValueError(f"{subject!r} is not a NATS subject (no spaces or control characters)")
    tokens = subject.split(".")
    if any(not token for token in tokens):
        raise ValueError(f"{subject!r} is not a NATS subject (an empty token)")
    for position, token in enumerate(tokens):
        if "*" in token or ">" in token:
            if not wildcards:
                raise ValueError(f"{subject!r}: wildcards are not allowed here")
            if token not in ("*", ">") or (token == ">" and position != len(tokens) - 1):
                raise ValueError(f"{subject!r}: misplaced wildcard")
    return subject


def check_queue(queue):
    if not isinstance(queue, str) or not _QUEUE.fullmatch(queue):
        raise ValueError(f"{queue!r} is not a NATS queue group name")
    return queue


def parse_headers(block):
    """``(status, {lower-case name: value})`` of an ``HMSG`` header block
    (``NATS/1.0 [status [description]]`` then ``Name: value`` lines)."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if version != "NATS/1.0":
        raise ProtocolError(f"unknown header version {lines[0][:40]!r}")
    status = rest.split(" ", 1)[0] if rest.strip() else None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def frame_headers(headers):
    """The ``HPUB`` header block of ``{name: value}``; ValueError for a name or value
    that would break the block (CR, LF, or ``:`` in a name)."""
    lines = [b"NATS/1.0"]
    for name, value in headers.items():
        if not name or any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
            raise ValueError(f"{name!r} cannot be a NATS header")
        lines.append(f"{name}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class NatsProtocol(Protocol):
    """One connection to a NATS server.

    The *client* is told: ``nats_info(info)``, ``nats_message(sid, subject, reply,
    payload, headers)``, ``nats_pong()``, ``nats_error(text)``, ``nats_lost(protocol, reason)``.
    ``PING`` from the server is answered here.
    """

    log = Logger()

    def __init__(self, client):
        self._client = client
        self._buffer = bytearray()
        self._message = None  # (sid, subject, reply, header size, total size) awaiting its payload

    def connectionMade(self):
        no_delay(self.transport)  # a lone PUB must not wait for the server's delayed ACK

    def connectionLost(self, reason):
        self._client.nats_lost(self, reason)

    # -- sending

    def send_connect(self, options):
        self.transport.write(b"CONNECT " + json.dumps(options).encode("utf-8") + b"\r\nPING\r\n")

    def send_ping(self):
        self.transport.write(b"PING\r\n")

    def subscribe(self, sid, subject, queue=None):
        check_subject(subject, wildcards=True)
        parts = [b"SUB", subject.encode("utf-8")]
        if queue:
            parts.append(check_queue(queue).encode("utf-8"))
        parts.append(b"%d" % sid)
        self.transport.write(b" ".join(parts) + b"\r\n")

    def unsubscribe(self, sid):
        self.transport.write(b"UNSUB %d\r\n" % sid)

    def publish(self, subject, payload, reply=None, headers=None):
        """``PUB`` (``HPUB`` with *headers*, ``{name: value}``); *subject* and *reply*
        must have been checked (:func:`check_subject`)."""
        if headers:
            block = frame_headers(headers)
            head = b"HPUB " + subject.encode("utf-8")
            if reply:
                head += b" " + reply.encode("utf-8")
            sizes = b" %d %d\r\n" % (len(block), len(block) + len(payload))
            self.transport.writeSequence((head, sizes, block, payload, b"\r\n"))
            return
        head = b"PUB " + subject.encode("utf-8")
        if reply:
            head += b" " + reply.encode("utf-8")
        self.transport.writeSequence((head, b" %d\r\n" % len(payload), payload, b"\r\n"))

    # -- receiving

    def dataReceived(self, data):
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while True:
                if self._message is not None:
                    sid, subject, reply, header_size, total = self._message
                    end = start + total
                    if len(buffer) < end + 2:
                        break
                    if buffer[end:end + 2] != b"\r\n":
                        raise ProtocolError("a message payload is not followed by CRLF")
                    headers = None
                    if header_size is not None:
                        headers = parse_headers(bytes(buffer[start:start + header_size]))
                    payload = bytes(buffer[start + (header_size or 0):end])
                    start = end + 2
                    self._message = None
                    self._client.nats_message(sid, subject, reply, payload, headers)
                    continue
                newline = buffer.find(b"\r\n", start)
                if newline < 0:
                    if len(buffer) - start > MAX_CONTROL_LINE:
                        raise ProtocolError("a control line longer than 64 KB")
                    break
                line = bytes(buffer[start:newline])
                start = newline + 2
                self._control(line)
        except ProtocolError as error:
            self.log.warn("NATS protocol error: {error}; closing the connection",
                          error=str(error))
            del buffer[:]
            self._message = None
            self.transport.loseConnection()
            return
        del buffer[:start]

    def _control(self, line):
        op, _, args = line.partition(b" ")
        op = op.upper()
        if op == b"MSG":
            self._message = self._message_line(args.split(), with_headers=False)
        elif op == b"HMSG":
            self._message = self._message_line(args.split(), with_headers=True)
        elif op == b"PING":
            self.transport.write(b"PONG\r\n")
        elif op == b"PONG":
            self._client.nats_pong()
        elif op == b"+OK":
            pass
        elif op == b"-ERR":
            self._client.nats_error(args.decode("utf-8", "replace").strip().strip("'"))
        elif op == b"INFO":
            try:
                info = json.loads(args)
            except ValueError:
                raise ProtocolError("INFO is not JSON") from None
            if not isinstance(info, dict):
                raise ProtocolError("INFO is not a JSON object")
            self._client.nats_info(info)
        elif op:
            raise ProtocolError(f"unknown operation {op[:20]!r}")

    @staticmethod
    def _message_line(args, *, with_headers):
        sizes = 2 if with_headers else 1
        if len(args) not in (2 + sizes, 3 + sizes):
            raise ProtocolError("a message line with a wrong number of arguments")
        try:
            numbers = [int(arg) for arg in args[-sizes:]]
            sid = int(args[1])
        except ValueError:
            raise ProtocolError("a message line with a non-numeric size or sid") from None
        if any(not 0 <= number <= MAX_MESSAGE for number in numbers) or (
                with_headers and numbers[0] > numbers[1]):
            raise ProtocolError("a message line with a bad size")
        subject = args[0].decode("utf-8", "replace")
        reply = args[2].decode("utf-8", "replace") if len(args) == 3 + sizes else None
        header_size = numbers[0] if with_headers else None
        return sid, subject, reply, header_size, numbers[-1]
