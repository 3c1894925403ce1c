"""UDP: per-client flows, each pinned to one endpoint, ended by an idle timeout.

A datagram from a new client address opens a flow: a pick (key = client address, as
for TCP) and a connected UDP socket to the endpoint, so replies come back on the flow's
own socket and go out through the listener to that client (kube-proxy userspace's
``clientCache``, reference kube-proxy.md §3.3).  ICMP port unreachable on a flow's socket
is UDP's "connection refused": the endpoint is marked failed for a cool-down and the
flow ends, so the client's next datagram opens a flow elsewhere.

Nothing queues without bound: a flow holds at most `MAX_QUEUED` datagrams while its
socket opens, and a datagram is dropped (UDP's contract) when the socket it should go
out on has `MAX_BUFFERED` bytes waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import NoEndpointsError
from .retry import failed

__all__ = ["ListenerProtocol", "Flow"]

log = logging.getLogger("lbcore.forwarder")

MAX_QUEUED = 32
MAX_BUFFERED = 256 * 1024


class ListenerProtocol(asyncio.DatagramProtocol):
    """The service's UDP socket: datagrams from clients in, replies out."""

    __slots__ = ("listener", "transport")

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        listener = self.listener
        flow = listener.flows.get(addr)
        if flow is None:
            runtime = listener.runtime
            if runtime is None:  # the service was removed: old flows only
                return
            flow = Flow.open(runtime, listener, addr)
            if flow is None:
                return
        flow.send(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: UDP listener error: %s", self.listener.name, exc)


class Flow(asyncio.DatagramProtocol):
    """One client's datagrams to one endpoint."""

    __slots__ = (
        "runtime", "listener", "client", "balancer", "endpoint", "endpoint_stats",
        "transport", "queue", "bytes_in", "bytes_out", "idle", "seen", "finished",
    )

    @classmethod
    def open(cls, runtime: Any, listener: Any, client: tuple) -> Flow | None:
        """A new flow for ``client``, or None if it is refused (limit, no endpoint)."""
        stats = runtime.stats
        if len(stats.live) >= runtime.max_connections:
            stats.refused += 1
            return None
        key = runtime.key_of(client) if runtime.wants_key else None
        try:
            endpoint = runtime.health.pick(runtime.balancer, key, True)
        except NoEndpointsError as exc:
            stats.unavailable += 1
            log.warning("%s: datagram from %s dropped: %s", runtime.name, client, exc)
            return None
        flow = cls(runtime, listener, client, endpoint)
        listener.flows[client] = flow
        stats.admitted(flow)
        stats.opened(flow, flow.endpoint_stats)
        runtime.loop.create_task(flow._connect())
        return flow

    def __init__(self, runtime: Any, listener: Any, client: tuple, endpoint: Any) -> None:
        self.runtime = runtime
        self.listener = listener
        self.client = client
        self.balancer = runtime.balancer
        self.endpoint = endpoint
        self.endpoint_stats = runtime.stats.endpoint(endpoint)
        self.transport: Any = None
        self.queue: list[bytes] | None = []  # datagrams held while the socket opens
        self.bytes_in = self.bytes_out = 0
        self.idle = self.seen = 0  # see Forwarder._sweep
        self.finished = False

    async def _connect(self) -> None:
        try:
            await self.runtime.loop.create_datagram_endpoint(
                lambda: self, remote_addr=(self.endpoint.ip, self.endpoint.port)
            )
        except (OSError, asyncio.CancelledError) as exc:
            log.warning(
                "%s: UDP flow to %s failed: %s", self.runtime.name, self.endpoint.address, exc
            )
            self._finish()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        queue, self.queue = self.queue, None
        if self.finished:  # closed while the socket opened
            transport.close()
            return
        for data in queue or ():
            transport.sendto(data)

    def send(self, data: bytes) -> None:
        """Forward a client datagram to the endpoint."""
        self.bytes_in += len(data)
        if self.queue is not None:
            if len(self.queue) < MAX_QUEUED:
                self.queue.append(data)
        elif self.transport.get_write_buffer_size() < MAX_BUFFERED:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.bytes_out += len(data)
        out = self.listener.udp.transport
        if out is not None and out.get_write_buffer_size() < MAX_BUFFERED:
            out.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):  # ICMP port unreachable
            failed(self.runtime, self.balancer, self.endpoint, self.endpoint_stats, "refused UDP")
            self.close()

    def close(self) -> None:
        """End the flow (idle, refused, or the forwarder stops)."""
        if self.transport is not None:
            self.transport.close()  # connection_lost finishes the flow
        else:
            self._finish()

    close_idle = close

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        listener = self.listener
        if listener.flows.get(self.client) is self:
            del listener.flows[self.client]
        self.balancer.release(self.endpoint)
        self.runtime.stats.closed(self, self.endpoint_stats)
        self.runtime.ended()
        listener.flow_ended()
