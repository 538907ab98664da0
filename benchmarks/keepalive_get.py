#!/usr/bin/env python3
"""N GET requests, one after the other, on one keep-alive connection (for
instructions.sh: the client's own cost is not counted, so simple is fine).

    keepalive_get.py PORT PATH N ["Header: value"]
"""
import socket
import sys


def main(port, path, count, header=""):
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    request += (header + "\r\n" if header else "") + "\r\n"
    pending = b""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        for _ in range(count):
            connection.sendall(request.encode())
            while True:
                head, separator, rest = pending.partition(b"\r\n\r\n")
                if separator:
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    if len(rest) >= length:
                        pending = rest[length:]
                        break
                data = connection.recv(65536)
                if not data:
                    raise SystemExit("the gateway closed the connection")
                pending += data


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
