"""Tries every kind of socket to the host: UDP, TCP, a pathname unix socket, netlink."""
import os
import socket

from evolve.harness import session

UNIX_PATH = "/nonexistent.sock"

run = session()
attempts = {
    "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9)),
    "tcp": lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    "unix": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(UNIX_PATH),
    "netlink": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW),
}
blocked = 0
for name, attempt in attempts.items():
    try:
        attempt()
        print("LEAK" + "ED", name, flush=True)
    except OSError as exc:
        print(f"blocked {name}: {type(exc).__name__} errno {exc.errno}", flush=True)
        blocked += exc.errno == 1  # EPERM: refused before reaching anything
a, b = socket.socketpair()
a.send(b"ping")
print("socketpair", b.recv(4).decode(), os.getpid() > 0, flush=True)
raise SystemExit(f"{blocked} of {len(attempts)} sockets refused")
