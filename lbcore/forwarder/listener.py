"""Listening sockets: bound synchronously (so an update can prove them before it
switches), then served by the event loop; each routes to the service it serves now.

A listener outlives the service that opened it when another service takes its address
over in an update: the socket is never closed and reopened, so no connection attempt
meets a closed port during a reload.

A TCP listener accepts by itself (the loop says when the socket is readable) and hands
each connection to a relay through a `stream.Stream`: asyncio's server would wrap each
one in its own transport, which costs more than the relay (`stream` says why).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from ..errors import ConfigError
from ..models import join_host_port
from .clock import Clock
from .stream import accept, accepted
from .tcp import Relay
from .udp import ListenerProtocol

__all__ = ["Listener", "bind"]

log = logging.getLogger("lbcore.forwarder")

#: The kernel caps this at net.core.somaxconn.
BACKLOG = 4096
#: Connections taken per wake-up at most, so that a flood of new connections cannot
#: starve the ones already open (HAProxy's ``tune.maxaccept`` default).
MAX_ACCEPT = 64
#: Seconds without accepting after accept(2) fails for want of descriptors or memory
#: (asyncio's servers wait one second too): the listening socket stays readable, so
#: retrying at once would spin.
ACCEPT_RETRY_DELAY = 1.0
#: Errors accept(2) passes on from the new connection itself (man 2 accept, NOTES: "treat
#: them like EAGAIN"): that connection is gone, the listener is fine.
_CONNECTION_GONE = frozenset({
    errno.ECONNABORTED, errno.ENETDOWN, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN,
    errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
})


def bind(protocol: str, host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), listening if TCP; OSError if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Rebinding after a restart must not wait out TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::]:80 and 0.0.0.0:80 may be two services, as two IPVS virtual services.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """One bound socket (``protocol``, ``configured`` address) and its current service.

    ``runtime`` is None once no service uses the address: a TCP listener then closes; a
    UDP listener keeps relaying replies of its existing flows and closes after them.
    """

    __slots__ = ("protocol", "configured", "sock", "family", "address", "runtime", "loop",
                 "clock", "flows", "closed", "starting", "udp", "retry")

    def __init__(self, protocol: str, configured: tuple[str, int], field: str) -> None:
        try:
            self.sock = bind(protocol, *configured)
        except OSError as exc:
            raise ConfigError(
                field, join_host_port(*configured),
                f"cannot be bound for {protocol}: {exc.strerror or exc}",
            ) from None
        self.protocol = protocol
        self.configured = configured
        # Read once: ``sock.family`` builds an AddressFamily enum on every access.
        self.family = int(self.sock.family)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.runtime: Any = None
        self.loop: Any = None  # serving TCP on this loop
        self.clock: Any = None  # ... and timing the accept retry on this clock
        self.retry: Any = None  # the timer that resumes accepting after a failure
        self.udp: ListenerProtocol | None = None
        self.flows: dict[tuple, Any] = {}
        self.closed = False
        self.starting = False

    @property
    def name(self) -> str:
        return self.runtime.name if self.runtime is not None else str(self.configured)

    async def serve(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        """Start taking connections or datagrams on the bound socket."""
        self.starting = True
        try:
            if self.protocol == "tcp":
                loop.add_reader(self.sock.fileno(), self._accept)
                self.loop = loop
                self.clock = clock
            else:
                self.udp = ListenerProtocol(self)
                await loop.create_datagram_endpoint(lambda: self.udp, sock=self.sock)
        finally:
            self.starting = False
        if self.closed:  # closed by an update or stop() while it was starting
            self.closed = False
            self.close()

    def _accept(self) -> None:
        sock, family = self.sock, self.family
        for _ in range(MAX_ACCEPT):
            try:
                fd, address = accept(sock)  # the descriptor: `stream.accepted` wraps it
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _CONNECTION_GONE:  # reset while in the queue, say
                    continue
                # Out of descriptors or memory: pause, or it spins.
                log.warning("%s: accept failed, retrying in %g s: %s",
                            self.name, ACCEPT_RETRY_DELAY, exc)
                self.loop.remove_reader(sock.fileno())
                self.retry = self.clock.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            runtime = self.runtime
            try:
                accepted(runtime.loop, runtime.poller, fd, family, address, Relay(runtime).client)
            except OSError as exc:  # reset before we could set it up: it is closed
                log.debug("%s: accepted connection lost at once: %s", self.name, exc)

    def _resume(self) -> None:
        self.retry = None
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def release(self) -> None:
        """No service uses this address any more: stop taking new connections."""
        self.runtime = None
        if self.protocol == "tcp" or not self.flows:
            self.close()

    def flow_ended(self) -> None:
        if self.runtime is None and not self.flows:
            self.close()

    def close(self) -> None:
        """Close the socket (established TCP connections are not affected)."""
        if self.closed:
            return
        self.closed = True
        if self.loop is not None:
            if self.retry is not None:
                self.retry.cancel()
            else:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        elif self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        elif not self.starting:
            self.sock.close()  # never served
