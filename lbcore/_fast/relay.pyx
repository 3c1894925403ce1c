# cython: nonecheck=True
# (A finished relay lets go of its sides: a call that reached one anyway raises, never
# dereferences None.)
# Compiled twin of lbcore/_pure/relay.py (read its docstring for the rules).
"""The TCP relay: a client connection, its upstream connection, and the bytes between.

The same relay as the pure twin, rule for rule; compiled so that a connection's set-up
and end (admit, pick, dial, the first bytes each way, the FINs, the one release) cost
C calls instead of interpreted ones.
"""

import errno
import logging

from ..errors import NoEndpointsError
from .copier import Copier
from .stream import dial

__all__ = ["Relay", "Side", "ClientSide", "UpstreamSide", "REPLAY_LIMIT", "wire"]

log = logging.getLogger("lbcore.forwarder")

#: Client bytes held for a replay until the endpoint's first byte arrives.
REPLAY_LIMIT = 64 * 1024
cdef Py_ssize_t _REPLAY_LIMIT = REPLAY_LIMIT

#: socket() errors that say this process is short of something: no endpoint is to blame.
_NO_SOCKET = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# The relay's collaborators above this layer, handed down once by lbcore.forwarder.tcp
# (`wire`): compiled code imports nothing above it.
cdef object _endpoint_failed = None
cdef object _Pump = None
cdef Py_ssize_t _bulk_read = 64 * 1024


def wire(failed, pump, Py_ssize_t bulk_read):
    """Hand the relay the forwarder's passive-health verdict (``failed``: count an
    endpoint's failure and cool it down), the splice pump class (None where splice is
    unavailable) and the read size that means bulk."""
    global _endpoint_failed, _Pump, _bulk_read
    _endpoint_failed, _Pump, _bulk_read = failed, pump, bulk_read


cdef class Relay


cdef class Side:
    """One socket of a relay; what it reads goes to ``peer``'s transport."""

    cdef readonly Relay relay
    cdef public object transport
    cdef public Side peer
    cdef public unsigned long long bytes
    cdef public bint eof  # this side has sent its FIN
    cdef public bint done  # this side's connection is lost
    cdef public object pump

    def __init__(self, Relay relay):
        self.relay = relay

    def data_received(self, bytes data):
        self._forward(data)

    cdef _forward(self, bytes data):
        self.peer.transport.write(data)
        cdef Py_ssize_t n = len(data)
        self.bytes += n
        cdef Relay relay = self.relay
        if relay.replay is not None:
            relay.remember(self, data)
        if n >= _bulk_read and relay.splice:
            relay.start_splice(self)

    def eof_received(self):
        self.relay.eof_from(self)
        return True  # keep the transport: the other direction may still be flowing

    def pause_writing(self):
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.relay.seen = -1  # a slow reader that drains is not idle
        self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        self.relay.lost(self, exc)


cdef class ClientSide(Side):

    def data_received(self, bytes data):
        cdef Relay relay = self.relay
        cdef Side upstream = relay.upstream
        # The endpoint has answered and the client speaks again: a persistent connection.
        if upstream is not None and upstream.bytes and relay.copy and relay.start_copier(data):
            return
        self._forward(data)

    def connection_made(self, transport):
        self.transport = transport
        self.relay.admit()


cdef class UpstreamSide(Side):

    def connection_made(self, transport):
        # Wired both ways at once: the connect is under way, and the transport holds
        # (or sends) what the client writes meanwhile.
        cdef Relay relay = self.relay
        self.transport = transport
        self.peer = relay.client
        relay.upstream = self
        relay.client.peer = self

    def connected(self):
        self.relay.opened()

    def connect_failed(self, exc):
        self.relay.connect_failed(self, exc)


cdef class Relay:
    """One proxied TCP connection of one service."""

    cdef readonly object runtime
    cdef readonly ClientSide client
    cdef readonly Side upstream
    cdef readonly object balancer, endpoint, endpoint_stats, key
    cdef readonly int tries  # the try (0-based) that placed the current connection
    cdef list tried  # the endpoints that failed this connection
    cdef public long long idle  # idle sweeps without progress (Forwarder._sweep)
    cdef public long long seen  # bytes moved at the last sweep
    cdef bint splice
    cdef list replay  # the client's bytes, kept until the endpoint answers (None: not kept)
    cdef Py_ssize_t replay_size
    cdef readonly bint finished
    cdef bint copy  # may hand the steady state to a Copier
    cdef readonly object copier

    def __init__(self, runtime):
        self.runtime = runtime
        self.client = ClientSide(self)
        self.tried = []
        options = runtime.options
        self.splice = options.splice and _Pump is not None
        self.replay = [] if options.retry_unanswered else None
        self.copy = options.copier

    @property
    def bytes_in(self):
        """Bytes from the client to the endpoint so far."""
        copier = self.copier
        return self.client.bytes + (copier.client_bytes if copier is not None else 0)

    @property
    def bytes_out(self):
        """Bytes from the endpoint to the client so far."""
        if self.upstream is None:
            return 0
        copier = self.copier
        return self.upstream.bytes + (copier.upstream_bytes if copier is not None else 0)

    cdef admit(self):
        runtime = self.runtime
        stats = runtime.stats
        # Over the limit: accept and reset at once (the pure twin says why).
        if len(stats.live) >= runtime.max_connections:
            stats.refused += 1
            self.client.transport.reset()
            return
        stats.admitted(self)
        if runtime.wants_key:
            self.key = runtime.key_of(self.client.transport.get_extra_info("peername"))
        self._place(b"", False)

    cdef _place(self, bytes unsent, bint eof):
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

    cdef object _connect(self, UpstreamSide protocol):
        """The pure twin's `_connect`; sets ``balancer``, ``endpoint``,
        ``endpoint_stats`` and ``tries`` itself and returns the transport."""
        cdef int attempt
        runtime = self.runtime
        options = runtime.options
        health = runtime.health
        stats = runtime.stats
        tried = self.tried
        for attempt in range(self.tries, options.tries):
            balancer = runtime.balancer
            endpoint = health.pick(balancer, self.key, attempt == 0)
            while endpoint in tried:
                # Back from a cool-down shorter than this connection's tries: cool it
                # down again and pick past it (the pure twin says why this ends).
                balancer.release(endpoint)
                health.failed(balancer, endpoint, stats.endpoint(endpoint))
                endpoint = health.pick(balancer, self.key, False)
            endpoint_stats = stats.endpoint(endpoint)
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

    cdef opened(self):
        """The endpoint took the connection."""
        self.runtime.stats.opened(self, self.endpoint_stats)

    cdef connect_failed(self, Side side, exc):
        """``side``'s connect failed (refused, reset, timed out): on to the next pick,
        with everything the client wrote."""
        side.done = True
        self.upstream = None
        self._failed(exc)
        client = self.client
        if client.transport.is_closing():
            return  # the client left meanwhile: nothing to connect for
        if side.transport.protocol_paused:  # its full buffer paused the client: undo that
            client.transport.resume_reading()
        unsent, eof = side.transport.unsent()
        self._place(unsent, eof)

    cdef _failed(self, why):
        """The current endpoint failed this connection: release it and cool it down."""
        endpoint = self.endpoint
        self.balancer.release(endpoint)
        _endpoint_failed(self.runtime, self.balancer, endpoint, self.endpoint_stats, why)
        self.tried.append(endpoint)
        self.endpoint = self.endpoint_stats = None
        self.tries += 1

    cdef remember(self, Side side, bytes data):
        """Keep the client's bytes for a replay until the endpoint answers."""
        if side is not self.client:
            self.replay = None  # answered: nothing will be replayed
            return
        self.replay_size += len(data)
        if self.replay_size > _REPLAY_LIMIT:
            self.replay = None
        else:
            self.replay.append(data)

    cdef bint _unanswered(self, Side side, why) except -1:
        """The endpoint left without a byte: move the connection to the next pick."""
        client = self.client
        if (
            self.replay is None or side is not self.upstream or client.eof
            or client.transport.is_closing()  # leaving: nothing to move
            or self.tries + 1 >= self.runtime.options.tries
        ):
            return False
        self.upstream = None  # its connection_lost is ignored from now on
        side.transport.abort()
        self.endpoint_stats.live.discard(self)
        self._failed(why)
        self._place(b"".join(self.replay), False)
        return True

    cdef bint start_copier(self, bytes data) except -1:
        """Hand both directions to a `Copier`, sending ``data`` (the client's) first;
        False, and nothing done, unless the connection is quiet in Python."""
        client = self.client
        upstream = self.upstream
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
        self.copier = copier
        copier.start()
        return True

    def copier_left(self, Side side, rest, exc):
        """The copier has given the sockets back and hands the connection back: ``rest``
        is ``side``'s unsent bytes, ``exc`` an error of either socket."""
        self._stop_copier()
        if exc is not None:
            self.abort(exc)
            return
        if rest:
            side.peer.transport.write(rest)  # queued, so the transport's flow control applies

    cdef _stop_copier(self):
        # Before any transport closes: one owner per descriptor (the pure twin says more).
        copier = self.copier
        if copier is not None:
            self.copier = None
            copier.close()
            self.client.bytes += copier.client_bytes
            self.upstream.bytes += copier.upstream_bytes

    cdef start_splice(self, Side side):
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

    cpdef eof_from(self, Side side):
        """``side`` sent FIN: pass it on; when both have, the relay is done."""
        if self._unanswered(side, "closed without answering"):
            return
        side.eof = True
        cdef Side peer = side.peer
        if peer.done:
            return
        if peer.eof:
            self.close()  # the close sends this FIN after the queued bytes: no shutdown()
        else:
            peer.transport.write_eof()

    cdef lost(self, Side side, exc):
        if side is not self.client and side is not self.upstream:
            return  # abandoned by `_unanswered` (a failed connect is never "lost")
        if exc is not None and self._unanswered(side, exc):
            return
        side.done = True
        cdef Side peer = side.peer
        if peer is not None and not peer.done:
            if exc is None:
                peer.transport.close()  # flush what the lost side sent before it left
            else:
                peer.transport.abort()
        self._maybe_finish()

    cpdef close(self):
        """Close both sides after their queued bytes are written."""
        for side in (self.client, self.upstream):
            if side is not None and not (<Side>side).done:
                (<Side>side).transport.close()

    cpdef abort(self, exc=None):
        """Drop both sides now (an error, the idle timeout, the drain deadline)."""
        if exc is not None:
            log.debug("%s: relay aborted: %s", self.runtime.name, exc)
        self._stop_copier()
        for side in (self.client, self.upstream):
            if side is not None and not (<Side>side).done:
                (<Side>side).transport.abort()

    def close_idle(self):
        self.abort()

    cdef _maybe_finish(self):
        cdef Side side
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
