"""Ports for servers a test starts later (etcd members, a forwarder's listener).

A port found by binding port 0 and closing is in the kernel's ephemeral range, so any
outgoing connection of the same test run may take it as its source port before the
server binds it ("address already in use", seen in the etcd fleet test). These ports are
drawn below that range, where the kernel never hands one out by itself, and none is
given twice in one process.
"""

from __future__ import annotations

import random
import socket

_given: set[int] = set()
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW, _HIGH = 10000, _ephemeral_low()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port no one listens on now, outside the ephemeral range."""
    for _ in range(1000):
        port = _rng.randrange(_LOW, _HIGH)
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOW}..{_HIGH - 1}")
