"""Listening sockets: Twisted endpoint strings, plus sockets handed over by a supervisor.

With ``WORKERS=N`` the supervisor creates the listening sockets and each
worker adopts its own, named ``fd:fileno=N:family=INET``. For the frontend
and internal ports every worker gets its own socket bound with
``SO_REUSEPORT`` to the same port, so the kernel spreads new connections
evenly across the workers (a shared socket would let whichever worker wakes
first take a whole burst) and stops sending any to a worker that died.
"""
import re
import socket

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString

FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6}
TWISTED_BACKLOG = 50  # what Twisted's tcp: endpoints use unless told otherwise
BACKLOG_KINDS = ("tcp", "tcp6", "ssl", "unix")  # endpoint kinds that take ``backlog=``
_SEPARATOR = re.compile(r"(?<!\\):")


def parse_description(description):
    """``(kind, positional, keywords)`` of a Twisted endpoint string (``\\:`` escapes a colon)."""
    kind, *rest = (part.replace("\\:", ":") for part in _SEPARATOR.split(description))
    positional, keywords = [], {}
    for part in rest:
        name, equals, value = part.partition("=")
        if equals:
            keywords[name] = value
        else:
            positional.append(part)
    return kind.lower(), positional, keywords


def server_endpoint(reactor, description):
    """The server endpoint of *description*; ``fd:`` adopts an inherited listening socket."""
    kind, _positional, keywords = parse_description(description)
    if kind == "fd":
        return AdoptedStreamServerEndpoint(reactor, int(keywords["fileno"]),
                                           FAMILIES[keywords.get("family", "INET")])
    return serverFromString(reactor, description)


def with_backlog(description, backlog):
    """*description* with a listen backlog of *backlog*, unless it names its own.

    Twisted listens with a backlog of 50: a reconnect storm (every client of a
    node that restarted, at once) overflows it, and each dropped SYN costs its
    client a retransmission a second or more later (LISTEN_BACKLOG).
    """
    kind, _positional, keywords = parse_description(description)
    if kind not in BACKLOG_KINDS or "backlog" in keywords:
        return description
    return f"{description}:backlog={backlog}"


def fd_description(fileno, family):
    name = "INET6" if family == socket.AF_INET6 else "INET"
    return f"fd:fileno={fileno}:family={name}"


def tcp_address(description):
    """``(family, host, port, backlog)`` of a ``tcp:``/``tcp6:`` description, else None."""
    kind, positional, keywords = parse_description(description)
    if kind not in ("tcp", "tcp6") or not positional:
        return None
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    host = keywords.get("interface", "::" if kind == "tcp6" else "")
    return family, host, int(positional[0]), int(keywords.get("backlog", TWISTED_BACKLOG))


def with_port(description, port):
    """*description* (``tcp:``, ``tcp6:`` or ``ssl:``) listening on *port* instead."""
    kind, positional, _keywords = parse_description(description)
    if kind not in ("tcp", "tcp6", "ssl") or not positional:
        raise ValueError(f"not a tcp, tcp6 or ssl endpoint with a port: {description!r}")
    head, _, tail = description.partition(":")
    rest = _SEPARATOR.split(tail, maxsplit=1)
    return f"{head}:{port}" + (f":{rest[1]}" if len(rest) > 1 else "")


def shared_port_socket(family, host, port, backlog, *, listen=True):
    """A non-blocking TCP socket bound with ``SO_REUSEPORT`` (listening unless told not to).

    Bound but not listening, it only reserves the port: connections go to
    listening sockets alone.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
