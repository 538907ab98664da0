"""A reconnect storm at the TCP level: N connects at once, counted as the gateway accepts them.

    taskset -c 1 python benchmarks/storm.py --port 4000 --count 10000 \\
        --gateway-pid "$(pgrep -f 'twistd.*rig' | head -1)"

The connects are non-blocking and never send a byte, as clients whose SYN
went through but whose request is not written yet. Accepted connections are
counted from the gateway's open file descriptors. The kernel's counters
(``nstat``) say what the listen queue did meanwhile: ``ListenOverflows`` and
``ListenDrops`` are SYNs or handshakes dropped because the accept queue was
full; each dropped SYN costs its client a retransmission a second later (and
a second, three, seven... after that). ``SyncookiesSent`` matters most: a
client answered with a SYN cookie whose final ACK then finds the accept queue
full believes it is connected while the server knows nothing of it, and
nothing retransmits until the client sends data; a silent client (this one)
hangs for good. Run it against a gateway with ``LISTEN_BACKLOG=50`` (Twisted's
default) to see that, and with the default of 4096.

Only the standard library; Linux only (``/proc`` and ``nstat`` from iproute2).
"""
import argparse
import os
import resource
import socket
import subprocess
import time

COUNTERS = ("TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtSyncookiesSent",
            "TcpExtTCPTimeouts", "TcpRetransSegs")


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def kernel_counters():
    """The counters' change since the last call (``nstat`` keeps its own history)."""
    output = subprocess.run(["nstat", "-z", *COUNTERS], capture_output=True, text=True,
                            check=True).stdout
    return {line.split()[0]: int(line.split()[1])
            for line in output.splitlines() if line and not line.startswith("#")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=30.0, help="give up after")
    parser.add_argument("--gateway-pid", type=int, required=True)
    options = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = open_files(options.gateway_pid)
    kernel_counters()  # start nstat's history here
    sockets = []
    started = time.monotonic()
    for _ in range(options.count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((options.host, options.port))
        sockets.append(sock)
    print(f"{options.count} connects issued in {time.monotonic() - started:.2f} s")
    accepted = last = 0
    while time.monotonic() - started < options.seconds:
        accepted = open_files(options.gateway_pid) - before
        if accepted != last:
            print(f"{time.monotonic() - started:6.2f} s  accepted {accepted}", flush=True)
            last = accepted
        if accepted >= options.count:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    counters = kernel_counters()
    print(f"accepted {accepted} of {options.count} after {elapsed:.1f} s; kernel: "
          + ", ".join(f"{name.removeprefix('TcpExt')} {value}"
                      for name, value in counters.items()))
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()
