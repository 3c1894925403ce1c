"""The TCP relay: a client connection, its upstream connection, and the bytes between;
the pure-Python twin of ``lbcore/_fast/relay.pyx``.

Per connection (DESIGN.md "Forwarder"): admit under the service's limit → pick and
start connecting (`Relay._connect`, `stream.dial`: no task; the outcome arrives as a call
on the upstream side) → on a failed connect, the next pick, with every byte the client
sent meanwhile → copy both ways with backpressure both ways → pass half-closes through
→ `release()` the endpoint exactly once when both sides are gone.  Both sides are
asyncio protocols over `stream.Stream` transports (lbcore/_pure/stream.py says why not
asyncio's).

Backpressure: when one side's transport buffers more than its high-water mark, it
calls that side's ``pause_writing`` and the relay stops reading the *other* side, whose
bytes were filling it; ``resume_writing`` undoes it.  So each direction holds at most
one high-water mark plus one read of bytes in Python.  That holds while connecting too:
the client's bytes wait in the dialing transport.

Unanswered connections: an endpoint that closes or resets a connection before sending a
single byte back, while the client has not finished sending (no FIN) and everything it
sent is still held (`REPLAY_LIMIT`), failed just like a refused connect: it is marked
failed and the connection moves to the next pick, the client's bytes replayed.  This is
what keeps a crashed backend invisible to clients whose requests were in flight on it
(the check HAProxy's ``retry-on empty-response`` makes for HTTP).  The price, which L4
cannot avoid: a request the dead endpoint processed without answering runs twice.
Turn it off with ``retry_unanswered=False``.

Steady state: once the endpoint has answered and the client sends again, the
connection is persistent, and both directions move to a `Copier` (``_pure.copier``, or
its compiled twin) that copies between the raw sockets, woken through the transports'
own poller entries (they lend it their readability: no duplicate descriptor, no second
watch), with no bytes object or protocol call per read.  It hands the connection back to the
transports for anything but a complete copy: backpressure, end of stream, an error, a
bulk read (see `Relay.copier_left`).  A one-request connection never pays for it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from ..errors import NoEndpointsError
from .copier import Copier
from .stream import dial

__all__ = ["Relay", "Side", "ClientSide", "UpstreamSide", "REPLAY_LIMIT", "wire"]

log = logging.getLogger("lbcore.forwarder")

#: Client bytes held for a replay until the endpoint's first byte arrives.
REPLAY_LIMIT = 64 * 1024

#: socket() errors that say this process is short of something: no endpoint is to blame.
_NO_SOCKET = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# The relay's collaborators above this layer, handed down once by lbcore.forwarder.tcp
# (`wire`): the twins import nothing above them.
_endpoint_failed: Any = None
_Pump: Any = None
_bulk_read = 64 * 1024


def wire(failed: Any, pump: Any, bulk_read: int) -> None:
    """Hand the relay the forwarder's passive-health verdict (``failed``: count an
    endpoint's failure and cool it down), the splice pump class (None where splice is
    unavailable) and the read size that means bulk."""
    global _endpoint_failed, _Pump, _bulk_read
    _endpoint_failed, _Pump, _bulk_read = failed, pump, bulk_read


class Side(asyncio.Protocol):
    """One socket of a relay; what it reads goes to ``peer``'s transport."""

    __slots__ = ("relay", "transport", "peer", "bytes", "eof", "done", "pump")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: Any = None
        self.peer: Any = None
        self.bytes = 0
        self.eof = False  # this side has sent its FIN
        self.done = False  # this side's connection is lost
        self.pump: Any = None

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)
        n = len(data)
        self.bytes += n
        relay = self.relay
        if relay.replay is not None:
            relay.remember(self, data)
        if n >= _bulk_read and relay.splice:
            relay.start_splice(self)

    def eof_received(self) -> bool:
        self.relay.eof_from(self)
        return True  # keep the transport: the other direction may still be flowing

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.relay.seen = -1  # a slow reader that drains is not idle
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self, exc)


class ClientSide(Side):
    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        upstream = relay.upstream
        # The endpoint has answered and the client speaks again: a persistent connection.
        if upstream is not None and upstream.bytes and relay.copy and relay.start_copier(data):
            return
        Side.data_received(self, data)

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.transport = transport
        self.relay.admit()


class UpstreamSide(Side):
    __slots__ = ()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        # Wired both ways at once: the connect is under way, and the transport holds
        # (or sends) what the client writes meanwhile.
        relay = self.relay
        self.transport = transport
        self.peer = relay.client
        relay.upstream = self
        relay.client.peer = self

    def connected(self) -> None:
        self.relay.opened()

    def connect_failed(self, exc: OSError) -> None:
        self.relay.connect_failed(self, exc)


class Relay:
    """One proxied TCP connection of one service."""

    __slots__ = (
        "runtime", "client", "upstream", "balancer", "endpoint", "endpoint_stats", "key",
        "tries", "tried", "idle", "seen", "splice", "replay", "replay_size", "finished",
        "copy", "copier",
    )

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.client = ClientSide(self)
        self.upstream: Side | None = None
        self.balancer: Any = None
        self.endpoint: Any = None
        self.endpoint_stats: Any = None
        self.key: Any = None
        self.tries = 0  # the try (0-based) that placed the current connection
        self.tried: list[Any] = []  # the endpoints that failed this connection
        self.idle = 0  # idle sweeps without progress (Forwarder._sweep)
        self.seen = 0  # bytes moved at the last sweep
        self.splice = runtime.options.splice and _Pump is not None
        # The client's bytes, kept until the endpoint answers (None: not kept).
        self.replay: list[bytes] | None = [] if runtime.options.retry_unanswered else None
        self.replay_size = 0
        self.finished = False
        self.copy = runtime.options.copier  # may hand the steady state to a Copier
        self.copier: Copier | None = None

    @property
    def bytes_in(self) -> int:
        """Bytes from the client to the endpoint so far."""
        copier = self.copier
        return self.client.bytes + (copier.client_bytes if copier is not None else 0)

    @property
    def bytes_out(self) -> int:
        """Bytes from the endpoint to the client so far."""
        if self.upstream is None:
            return 0
        copier = self.copier
        return self.upstream.bytes + (copier.upstream_bytes if copier is not None else 0)

    def admit(self) -> None:
        runtime = self.runtime
        stats = runtime.stats
        # Over the limit: accept and reset at once rather than leave the connection in
        # the kernel's backlog.  The client learns at once (and can go elsewhere)
        # instead of hanging in SYN retransmits once the backlog overflows; the refusal
        # is counted; and it costs an accept and a close, no buffer.
        if len(stats.live) >= runtime.max_connections:
            stats.refused += 1
            self.client.transport.reset()  # a RST, as iptables' REJECT --reject-with tcp-reset
            return
        stats.admitted(self)
        if runtime.wants_key:
            self.key = runtime.key_of(self.client.transport.get_extra_info("peername"))
        self._place()

    def _place(self, unsent: bytes = b"", eof: bool = False) -> None:
        """Pick and start connecting; write ``unsent`` (and ``eof``) for the endpoint."""
        runtime = self.runtime
        try:
            transport = self._connect(UpstreamSide(self))
        except NoEndpointsError as exc:
            runtime.stats.unavailable += 1
            log.warning("%s: connection from %s refused: %s", runtime.name,
                        self.client.transport.get_extra_info("peername"), exc)
            self.client.transport.reset()  # turned away: a FIN would read as a finished reply
            return
        if unsent:
            transport.write(unsent)
        if eof:
            transport.write_eof()

    def _connect(self, protocol: UpstreamSide) -> Any:
        """Pick and start connecting, on the next pick while a connect fails at once.

        Tries from ``tries`` (those this connection used) up to the service's limit,
        never an endpoint in ``tried`` (those that failed it; added to here).
        ``protocol`` hears the connect that gets under way (one that fails at once never
        calls it, so one serves every try).  Sets ``balancer``, ``endpoint``,
        ``endpoint_stats`` and ``tries`` and returns the transport: the connect is under
        way, its deadline set, and the relay owns one `release` of the endpoint.  Raises
        NoEndpointsError when no endpoint is usable, every try is used, or the process
        has no socket to connect with (that marks no endpoint failed).  Every other pick
        is released here.
        """
        runtime = self.runtime
        options = runtime.options
        health = runtime.health
        tried = self.tried
        for attempt in range(self.tries, options.tries):
            balancer = runtime.balancer
            endpoint = health.pick(balancer, self.key, attempt == 0)
            while endpoint in tried:
                # Back from a cool-down shorter than this connection's tries: it failed
                # this connection moments ago, so cool it down again and pick past it.
                # Each turn takes one tried endpoint out, so the loop ends.
                balancer.release(endpoint)
                health.failed(balancer, endpoint, runtime.stats.endpoint(endpoint))
                endpoint = health.pick(balancer, self.key, False)
            endpoint_stats = runtime.stats.endpoint(endpoint)
            try:
                transport = dial(runtime.loop, runtime.poller, endpoint, protocol)
            except OSError as exc:
                balancer.release(endpoint)
                if exc.errno in _NO_SOCKET:  # our shortage, not the endpoint's fault
                    raise NoEndpointsError(f"{runtime.name}: no socket to connect with: {exc}")
                _endpoint_failed(runtime, balancer, endpoint, endpoint_stats, exc)  # unreachable
                tried.append(endpoint)
                continue
            except BaseException:
                balancer.release(endpoint)
                raise
            transport.deadline = runtime.deadlines.add(transport, options.try_timeout(attempt))
            self.balancer, self.endpoint, self.endpoint_stats, self.tries = (
                balancer, endpoint, endpoint_stats, attempt)
            return transport
        raise NoEndpointsError(f"{runtime.name}: {options.tries} tries failed")

    def opened(self) -> None:
        """The endpoint took the connection."""
        self.runtime.stats.opened(self, self.endpoint_stats)

    def connect_failed(self, side: UpstreamSide, exc: OSError) -> None:
        """``side``'s connect failed (refused, reset, timed out): on to the next pick.

        Nothing reached that endpoint, so everything the client wrote goes to the next
        one, whatever ``retry_unanswered`` says.
        """
        side.done = True
        self.upstream = None
        self._failed(exc)
        client = self.client
        if client.transport.is_closing():
            # The client left meanwhile (its connection_lost may still be on its way,
            # which finishes the relay): nothing to connect for.
            return
        if side.transport.protocol_paused:  # its full buffer paused the client: undo that
            client.transport.resume_reading()
        self._place(*side.transport.unsent())

    def _failed(self, why: object) -> None:
        """The current endpoint failed this connection: release it and cool it down."""
        endpoint = self.endpoint
        self.balancer.release(endpoint)
        _endpoint_failed(self.runtime, self.balancer, endpoint, self.endpoint_stats, why)
        self.tried.append(endpoint)
        self.endpoint = self.endpoint_stats = None
        self.tries += 1

    def remember(self, side: Side, data: bytes) -> None:
        """Keep the client's bytes for a replay until the endpoint answers."""
        if side is not self.client:
            self.replay = None  # answered: nothing will be replayed
            return
        self.replay_size += len(data)
        if self.replay_size > REPLAY_LIMIT:
            self.replay = None
        else:
            self.replay.append(data)  # type: ignore[union-attr]

    def _unanswered(self, side: Side, why: object) -> bool:
        """The endpoint left without a byte: move the connection to the next pick."""
        client = self.client
        if (
            self.replay is None or side is not self.upstream or client.eof
            or client.transport.is_closing()  # leaving: nothing to move (see connect_failed)
            or self.tries + 1 >= self.runtime.options.tries
        ):
            return False
        self.upstream = None  # its connection_lost is ignored from now on
        side.transport.abort()
        self.endpoint_stats.live.discard(self)
        self._failed(why)
        self._place(b"".join(self.replay))
        return True

    def start_copier(self, data: bytes) -> bool:
        """Hand both directions to a `Copier`, sending ``data`` (the client's) first.

        False, and nothing done, unless the connection is quiet in Python: endpoint
        placed and answered, nothing queued either way, no end of stream, no splice.
        """
        client = self.client
        upstream: Side = self.upstream  # type: ignore[assignment]
        if (
            self.replay is not None or len(data) >= _bulk_read
            or client.eof or upstream.eof or client.done or upstream.done
            or client.pump is not None or upstream.pump is not None
            or client.transport.get_write_buffer_size()
            or upstream.transport.get_write_buffer_size()
        ):
            return False
        copier = Copier(self, client.transport, upstream.transport, self.splice)
        try:
            sent = copier.send(data)
        except OSError:
            return False  # the transport's write meets the same error and reports it
        client.bytes += len(data)
        if sent < len(data):  # the endpoint is slow to read: stay with the transports
            upstream.transport.write(data[sent:])
            return True
        # The transports keep reading-interest and registration; the copier borrows
        # them (no system call: the events watched stay READ on both sockets).
        self.copier = copier
        copier.start()
        return True

    def copier_left(self, side: Side, rest: bytes | None, exc: OSError | None) -> None:
        """The copier has given the sockets back and hands the connection back: ``rest``
        is ``side``'s unsent bytes, ``exc`` an error of either socket."""
        self._stop_copier()
        if exc is not None:
            self.abort(exc)
            return
        if rest:
            side.peer.transport.write(rest)  # queued, so the transport's flow control applies

    def _stop_copier(self) -> None:
        # Before any transport closes: one owner per descriptor, and the transport is
        # it; the copier must have given the sockets back first (a transport closing
        # while still lending would make it, `Stream.lend_reads`).  While a copier runs
        # the transports are quiet, so only its own hand-back (`copier_left`) or `abort`
        # (errors, idle, stop) ends a connection.
        copier = self.copier
        if copier is not None:
            self.copier = None
            copier.close()
            self.client.bytes += copier.client_bytes
            self.upstream.bytes += copier.upstream_bytes  # type: ignore[union-attr]

    def start_splice(self, side: Side) -> None:
        """Move ``side``'s direction into the kernel if nothing is queued ahead of it."""
        if self.replay is not None or side.peer.transport.get_write_buffer_size():
            return  # keep order (and the replay): try again on the next bulk read
        side.transport.pause_reading()
        try:
            side.pump = _Pump(self, side)
        except OSError as exc:  # out of descriptors, say: keep copying
            log.warning("%s: splice unavailable, copying instead: %s", self.runtime.name, exc)
            self.splice = False
            side.transport.resume_reading()

    def eof_from(self, side: Side) -> None:
        """``side`` sent FIN: pass it on; when both have, the relay is done."""
        if self._unanswered(side, "closed without answering"):
            return
        side.eof = True
        peer = side.peer
        if peer.done:
            return
        if peer.eof:
            self.close()  # the close sends this FIN after the queued bytes: no shutdown()
        else:
            peer.transport.write_eof()

    def lost(self, side: Side, exc: Exception | None) -> None:
        if side is not self.client and side is not self.upstream:
            return  # abandoned by `_unanswered` (a failed connect is never "lost")
        if exc is not None and self._unanswered(side, exc):
            return
        side.done = True
        peer = side.peer
        if peer is not None and not peer.done:
            if exc is None:
                peer.transport.close()  # flush what the lost side sent before it left
            else:
                peer.transport.abort()
        self._maybe_finish()

    def close(self) -> None:
        """Close both sides after their queued bytes are written."""
        for side in (self.client, self.upstream):
            if side is not None and not side.done:
                side.transport.close()

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop both sides now (an error, the idle timeout, the drain deadline)."""
        if exc is not None:
            log.debug("%s: relay aborted: %s", self.runtime.name, exc)
        self._stop_copier()
        for side in (self.client, self.upstream):
            if side is not None and not side.done:
                side.transport.abort()

    close_idle = abort

    def _maybe_finish(self) -> None:
        if self.finished or not self.client.done:
            return
        if self.upstream is not None and not self.upstream.done:
            return
        self.finished = True
        self._stop_copier()  # ended by copier_left or abort before now; this makes sure
        for side in (self.client, self.upstream):
            if side is not None and side.pump is not None:
                side.pump.close()
        if self.endpoint is not None:
            self.balancer.release(self.endpoint)  # the one release of this connection's pick
        self.runtime.stats.closed(self, self.endpoint_stats)
        self.runtime.ended()
        # Nothing calls a side once both are lost: undo the references between the
        # relay's objects, so that reference counting frees them now and the cycle
        # collector never has to (it cost about 2 us per connection: bench/README.md).
        for side in (self.client, self.upstream):
            if side is not None:
                side.relay = side.peer = side.pump = None
